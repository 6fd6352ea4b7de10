"""The server accepts nothing the published JSON Schema refuses.

Every record the fuzz test sends (tests/integration/test_intake_fuzz.py, same generator, no
broker) that intake's decoder accepts must validate against the JSON Schema of its event: the
schema an integrator reads is the contract the server applies, not a looser one. A second
property feeds values pydantic would coerce in lax mode ("yes", 1, "on" for a boolean, a number
for a date...) into every field.
"""

from __future__ import annotations

import json
import os
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aiguillage_common.codec import InvalidMessage, decode_event
from aiguillage_demo.samples import DEMO_CASES, make_referral
from referral_intake.adapters.kafka import ACCEPTED_VERSIONS
from tests.integration.test_intake_fuzz import _parent, _paths, generate
from tests.support.contracts import schema_errors

COUNT = int(os.environ.get("AIGUILLAGE_FUZZ_COUNT", "1500"))


def _accepted_schema(value: bytes | None) -> str | None:
    """The schema name of the event the decoder accepts ``value`` as, or None if refused."""
    try:
        return decode_event(value, ACCEPTED_VERSIONS).schema_name()
    except InvalidMessage:
        return None


def test_every_fuzzed_record_the_decoder_accepts_is_valid_for_its_json_schema() -> None:
    accepted = 0
    disagreements = []
    for fuzz in generate(COUNT):
        name = _accepted_schema(fuzz.value)
        if name is None:
            continue
        accepted += 1
        assert fuzz.value is not None
        errors = schema_errors(name, fuzz.value)
        if errors:
            disagreements.append((fuzz.referral_id, fuzz.mutation, errors[:3]))
    assert disagreements == [], disagreements[:10]
    assert accepted > COUNT // 10  # the generator keeps many records valid


# What lax validation would coerce, and the schema refuses (or must match exactly).
COERCIBLE = st.sampled_from(
    [
        "yes",
        "no",
        "on",
        "off",
        "true",
        "1",
        1,
        0,
        1.0,
        86400,
        "86400",
        "0",
        "2026-11-30T00:00:00",
        "2026-11-30 09:15Z",
        "20261130",
        "5f28260521af40cca0be6556f418b35e",
        "urn:uuid:5f282605-21af-40cc-a0be-6556f418b35e",
        "٥٩٣٥٠",
        ["fr"],
        {"value": True},
    ]
)


@settings(
    max_examples=int(os.environ.get("AIGUILLAGE_COERCION_COUNT", "1000")),
    database=None,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
@given(st.data())
def test_values_a_lax_parser_would_coerce_are_refused_wherever_the_schema_refuses_them(
    data: st.DataObject,
) -> None:
    case = data.draw(st.integers(0, len(DEMO_CASES) - 1))
    document: dict[str, Any] = make_referral(case, referral_id="wire-000001").model_dump(
        mode="json"
    )
    path = data.draw(st.sampled_from(_paths(document)))
    _parent(document, path)[path[-1]] = data.draw(COERCIBLE)
    value = json.dumps(document).encode()
    name = _accepted_schema(value)
    if name is not None:
        assert schema_errors(name, value) == [], path
