"""Is a record really from the prescriber it names, and fresh? Pure: every time is a value.

Checked before the body is parsed, so unauthenticated input is answered with nothing but an
authentication reason, and only an authenticated sender is named (and notified) in a rejection.

Fresh means signed close to when the record *reached the broker* (``referrals.intake`` stamps
records with LogAppendTime), not to when intake reads it: a backlog that waited while intake was
down is as fresh as when it was sent, and a record captured and re-published later is stamped
anew by the broker, so it is still refused.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping

from aiguillage_common.codec import Problem
from aiguillage_common.replay_headers import REPLAY_HEADERS, original_timestamp_ms
from aiguillage_schemas.events.prescribers import PrescriberEntry
from aiguillage_schemas.signing import (
    KEY_ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    signature_matches,
)
from aiguillage_schemas.vocabulary import RejectionReason


def signing_key_id(headers: Mapping[str, str]) -> str | Problem:
    missing = [h for h in (KEY_ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER) if not headers.get(h)]
    if missing:
        return Problem(
            RejectionReason.BAD_SIGNATURE,
            f"the record is not signed (missing header {missing[0]})",
            f"headers.{missing[0]}",
        )
    return headers[KEY_ID_HEADER]


class ReferenceSource(enum.StrEnum):
    BROKER = "broker"  # the record's own LogAppendTime
    OPERATOR_REPLAY = "operator_replay"  # the original record's, vouched for by the operators
    CLOCK = "clock"  # no broker time known (records built by hand)


@dataclasses.dataclass(frozen=True, slots=True)
class WindowReference:
    """The time a signed timestamp is measured against, and where it comes from."""

    at_s: float
    source: ReferenceSource
    # Replay headers came with the record but did not verify (no secret here, forged, altered).
    unverified_replay: bool = False


def window_reference(
    headers: Mapping[str, str],
    value: bytes,
    broker_timestamp_ms: int | None,
    operations_secret: bytes,
    now_s: float,
) -> WindowReference:
    """When the record first reached the broker: its own broker time, or for an operator's
    replay the original record's, or the clock when the broker time is unknown (None, or
    Kafka's -1 for "no timestamp")."""
    if broker_timestamp_ms is not None and broker_timestamp_ms >= 0:
        arrived = WindowReference(broker_timestamp_ms / 1000, ReferenceSource.BROKER)
    else:
        arrived = WindowReference(now_s, ReferenceSource.CLOCK)
    # The replay's own signature is checked against when the replay arrived, for the same
    # reason: a replay that waited in the topic while intake was down is still the operators'.
    original_ms = original_timestamp_ms(headers, value, operations_secret, arrived.at_s)
    if original_ms is not None:
        return WindowReference(original_ms / 1000, ReferenceSource.OPERATOR_REPLAY)
    if any(header in headers for header in REPLAY_HEADERS):
        return dataclasses.replace(arrived, unverified_replay=True)
    return arrived


def authenticate(
    headers: Mapping[str, str],
    value: bytes,
    entry: PrescriberEntry | None,
    secret: bytes | None,
    reference_s: float,
    window_s: int,
) -> PrescriberEntry | Problem:
    """The registry entry of the sender, or why it is refused. ``reference_s``: when the record
    reached the broker (``window_reference``), the time its signed timestamp must be close to."""
    if entry is None:
        return Problem(
            RejectionReason.UNKNOWN_PRESCRIBER,
            "the signing key id belongs to no active prescriber",
            f"headers.{KEY_ID_HEADER}",
        )
    if secret is None:
        return Problem(
            RejectionReason.UNKNOWN_PRESCRIBER,
            "no secret is provisioned for this signing key id; contact the operators",
            f"headers.{KEY_ID_HEADER}",
        )
    # The key id is real, so its owner is told: either it signs wrongly, or someone tries.
    if not signature_matches(secret, headers, value):
        return Problem(
            RejectionReason.BAD_SIGNATURE,
            "the signature does not match the value and timestamp",
            f"headers.{SIGNATURE_HEADER}",
            entry.prescriber_id,
        )
    # Authentic from here on, so the timestamp can be trusted to say when it was signed.
    if abs(reference_s - int(headers[TIMESTAMP_HEADER])) > window_s:
        return Problem(
            RejectionReason.REPLAYED_MESSAGE,
            f"the signed timestamp is more than {window_s} s away from when the record reached "
            "the broker",
            f"headers.{TIMESTAMP_HEADER}",
            entry.prescriber_id,
        )
    return entry
