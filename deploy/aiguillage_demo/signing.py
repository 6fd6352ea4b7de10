"""Demo and test signing: every prescriber of the demo registry gets a made-up secret.

The algorithm is the published one (``aiguillage_schemas.signing``); only the secrets are fake.
Production secrets are generated per prescriber and handed over out of band, never derived.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from aiguillage_common.geography import default_data_dir
from aiguillage_schemas.envelope import Envelope
from aiguillage_schemas.events.referral_requests import (
    ReferralAmended,
    ReferralCancellationRequested,
)
from aiguillage_schemas.events.referral_submitted import ReferralSubmitted, ReferralSubmittedV1
from aiguillage_schemas.signing import sign

SECRETS_ENV = "AIGUILLAGE_INTAKE_SIGNING_SECRETS"


@cache
def demo_key_ids(registry: Path | None = None) -> dict[str, str]:
    """Prescriber id -> signing key id, from the demo registry file."""
    path = registry or default_data_dir() / "prescribers.json"
    entries = json.loads(path.read_text("utf-8"))["prescribers"]
    return {entry["prescriber_id"]: entry["signing_key_id"] for entry in entries}


def demo_secret(key_id: str) -> str:
    return f"demo-only-secret-{key_id}"


def demo_secrets_json() -> str:
    """The value of ``AIGUILLAGE_INTAKE_SIGNING_SECRETS`` for the demo and the tests."""
    return json.dumps({key: demo_secret(key) for key in demo_key_ids().values()})


def sign_as(prescriber_id: str, value: bytes, timestamp: int | None = None) -> dict[str, str]:
    """Headers that authenticate ``value`` as sent by ``prescriber_id`` (a demo prescriber)."""
    key_id = demo_key_ids()[prescriber_id]
    return sign(value, key_id, demo_secret(key_id).encode("utf-8"), timestamp)


def sender_of(event: Envelope) -> str | None:
    """The prescriber a prescriber's event (submission, amendment, cancellation) comes from;
    None for every other event, which is not signed."""
    if isinstance(event, ReferralSubmitted | ReferralSubmittedV1):
        return event.data.prescriber.prescriber_id
    if isinstance(event, ReferralAmended | ReferralCancellationRequested):
        return event.data.prescriber_id
    return None
