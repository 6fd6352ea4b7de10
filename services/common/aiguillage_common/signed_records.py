"""Is a signed Kafka record authentic and fresh? Pure: every time is a value.

One check for every topic whose records are signed with ``aiguillage_schemas.signing`` —
prescribers on ``referrals.intake`` (intake), centres and the portal on ``centres.responses`` and
``directory.updates`` (routing). Each service names the outcome with its own published reason
codes and decides who the key may speak for; the cryptography and the clock rules live here once.

Fresh means signed close to when the record *reached the broker* (those topics stamp records with
LogAppendTime), not to when the service reads it: a backlog that waited while the service was
down is as fresh as when it was sent, and a record captured and re-published later is stamped
anew by the broker, so it is still refused. An operator's replay (``replay_headers``) is measured
from the original record's arrival when the operations secret vouches for it.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping

from aiguillage_common.replay_headers import REPLAY_HEADERS, original_timestamp_ms
from aiguillage_schemas.signing import (
    KEY_ID_HEADER,
    SIGNATURE_HEADER,
    SIGNING_HEADERS,
    TIMESTAMP_HEADER,
    signature_matches,
)


class SignatureFault(enum.StrEnum):
    """Why a signed record is not accepted, before anything about its sender is known."""

    UNSIGNED = "unsigned"  # a signing header is missing or empty
    UNKNOWN_KEY = "unknown_key"  # the key id is not registered, or has no secret here
    BAD_SIGNATURE = "bad_signature"  # the signature does not match the timestamp and value
    STALE = "stale"  # authentic, but signed too far from when it reached the broker


@dataclasses.dataclass(frozen=True, slots=True)
class Refusal:
    """A fault, a message that never echoes input, and the header it is about."""

    fault: SignatureFault
    message: str
    field_path: str


def missing_signing_header(headers: Mapping[str, str]) -> Refusal | None:
    """The first signing header missing (or empty), if any."""
    for header in SIGNING_HEADERS:
        if not headers.get(header):
            return Refusal(
                SignatureFault.UNSIGNED,
                f"the record is not signed (missing header {header})",
                f"headers.{header}",
            )
    return None


def verify(
    headers: Mapping[str, str],
    value: bytes,
    registered: bool,
    secret: bytes | None,
    reference_s: float,
    window_s: int,
) -> Refusal | None:
    """None when ``value`` is signed, under a registered key whose ``secret`` is known, within
    ``window_s`` of ``reference_s`` (``window_reference``). Checked in that order, so a stale
    timestamp is only reported once the signature proves it was really signed then."""
    missing = missing_signing_header(headers)
    if missing is not None:
        return missing
    if not registered:
        return Refusal(
            SignatureFault.UNKNOWN_KEY,
            "the signing key id belongs to no registered, active sender",
            f"headers.{KEY_ID_HEADER}",
        )
    if secret is None:
        return Refusal(
            SignatureFault.UNKNOWN_KEY,
            "no secret is provisioned for this signing key id; contact the operators",
            f"headers.{KEY_ID_HEADER}",
        )
    if not signature_matches(secret, headers, value):
        return Refusal(
            SignatureFault.BAD_SIGNATURE,
            "the signature does not match the value and timestamp",
            f"headers.{SIGNATURE_HEADER}",
        )
    # Authentic from here on, so the timestamp can be trusted to say when it was signed.
    if abs(reference_s - int(headers[TIMESTAMP_HEADER])) > window_s:
        return Refusal(
            SignatureFault.STALE,
            f"the signed timestamp is more than {window_s} s away from when the record reached "
            "the broker",
            f"headers.{TIMESTAMP_HEADER}",
        )
    return None


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
    # reason: a replay that waited in the topic while its consumer was down is still the
    # operators'.
    original_ms = original_timestamp_ms(headers, value, operations_secret, arrived.at_s)
    if original_ms is not None:
        return WindowReference(original_ms / 1000, ReferenceSource.OPERATOR_REPLAY)
    if any(header in headers for header in REPLAY_HEADERS):
        return dataclasses.replace(arrived, unverified_replay=True)
    return arrived
