"""Intake's replay window, measured from when a record reached the broker (LogAppendTime), and
operators' replays that carry the original broker time under the operations secret. Pure: every
time is a value."""

from __future__ import annotations

import hashlib
import hmac
from datetime import date

import pytest
from structlog.testing import capture_logs

from aiguillage_common.codec import InvalidMessage, Problem
from aiguillage_common.consumer import InboundRecord
from aiguillage_common.geography import Geography
from aiguillage_common.provisioning import config_drift
from aiguillage_common.replay_headers import (
    REPLAY_OF_HEADER,
    REPLAY_SIGNATURE_HEADER,
    REPLAY_SIGNATURE_WINDOW_S,
    REPLAY_TIMESTAMP_HEADER,
    original_timestamp_ms,
    replay_headers,
)
from aiguillage_schemas import topics
from aiguillage_schemas.events.prescribers import PrescriberEntry
from aiguillage_schemas.signing import sign
from referral_intake.adapters.kafka import IntakeHandler, IntakeUnitOfWorkAll
from referral_intake.adapters.registry_file import load_registry_file
from referral_intake.domain.authentication import (
    ReferenceSource,
    WindowReference,
    authenticate,
    window_reference,
)
from referral_intake.use_cases.submit_referral import Topics

LILLE = load_registry_file()["parquet-tj-lille"]
SECRET = b"prescriber-secret"
OPS = b"operations-secret"
WINDOW = 300
VALUE = b'{"any": "bytes"}'
SIGNED = 1_800_000_000  # T: when the prescriber signed
HOUR = 3600
REPLAYED_AT = SIGNED + 24 * HOUR  # when the operators put a record back on the topic
ORIGIN = "referrals.intake:3:1234"


def _signed(value: bytes = VALUE, at: int = SIGNED) -> dict[str, str]:
    return sign(value, LILLE.signing_key_id, SECRET, at)


def _replayed(
    original_ms: int, replayed_at: int, value: bytes = VALUE, secret: bytes = OPS
) -> dict[str, str]:
    """A record as the operators' tool puts it back: prescriber's headers plus the replay's."""
    return {**_signed(value), **replay_headers(secret, ORIGIN, original_ms, value, replayed_at)}


def _reference(
    headers: dict[str, str], broker_ms: int | None, now_s: float, secret: bytes = OPS
) -> WindowReference:
    return window_reference(headers, VALUE, broker_ms, secret, now_s)


def _check(
    headers: dict[str, str], broker_ms: int | None, now_s: float, secret: bytes = OPS
) -> object:
    reference = _reference(headers, broker_ms, now_s, secret)
    return authenticate(headers, VALUE, LILLE, SECRET, reference.at_s, WINDOW)


def _refused_as_replayed(outcome: object) -> bool:
    return (
        isinstance(outcome, Problem)
        and outcome.reason == "replayed_message"
        and outcome.field_path == "headers.x-aiguillage-timestamp"
        and outcome.prescriber_id == LILLE.prescriber_id
    )


def test_a_backlog_is_admitted_an_hour_after_it_reached_the_broker() -> None:
    # Signed at T, reached the broker at T+5 s, read at T+1 h because intake was down.
    headers = _signed()
    reference = _reference(headers, (SIGNED + 5) * 1000, SIGNED + HOUR)
    assert reference == WindowReference(SIGNED + 5, ReferenceSource.BROKER)
    assert _check(headers, (SIGNED + 5) * 1000, SIGNED + HOUR) == LILLE
    # The rule it replaces would have refused it: the processing time is an hour away.
    assert _refused_as_replayed(authenticate(headers, VALUE, LILLE, SECRET, SIGNED + HOUR, WINDOW))


@pytest.mark.parametrize("delay_s", [WINDOW + 1, -(WINDOW + 1), HOUR])
def test_a_record_signed_far_from_its_arrival_is_refused(delay_s: int) -> None:
    # Captured and re-published later, or signed with a clock far off: the broker stamps the
    # arrival, whatever time intake reads it (even at once).
    arrival = SIGNED + delay_s
    assert _refused_as_replayed(_check(_signed(), arrival * 1000, arrival))


def test_the_window_edge_is_inclusive() -> None:
    assert _check(_signed(), (SIGNED + WINDOW) * 1000, SIGNED + HOUR) == LILLE


@pytest.mark.parametrize("broker_ms", [None, -1])
def test_without_a_broker_time_the_clock_is_the_reference(broker_ms: int | None) -> None:
    reference = _reference(_signed(), broker_ms, SIGNED + 10)
    assert reference == WindowReference(SIGNED + 10, ReferenceSource.CLOCK)
    assert _check(_signed(), broker_ms, SIGNED + 10) == LILLE
    assert _refused_as_replayed(_check(_signed(), broker_ms, SIGNED + WINDOW + 1))


def test_an_operators_replay_is_measured_against_the_original_arrival() -> None:
    # First reached the broker at T+2 s; the operators replay it a day later, and intake reads
    # the replay an hour after that (it was down): the original arrival counts.
    headers = _replayed((SIGNED + 2) * 1000, REPLAYED_AT)
    reference = _reference(headers, (REPLAYED_AT + 1) * 1000, REPLAYED_AT + HOUR)
    assert reference == WindowReference(SIGNED + 2, ReferenceSource.OPERATOR_REPLAY)
    assert _check(headers, (REPLAYED_AT + 1) * 1000, REPLAYED_AT + HOUR) == LILLE


def test_a_replay_is_still_refused_when_the_original_itself_was_stale() -> None:
    headers = _replayed((SIGNED + WINDOW + 1) * 1000, REPLAYED_AT)
    assert _refused_as_replayed(_check(headers, REPLAYED_AT * 1000, REPLAYED_AT))


def _forged() -> dict[str, str]:
    return _replayed(SIGNED * 1000, REPLAYED_AT, secret=b"not-the-operations-secret")


def _for_another_value() -> dict[str, str]:
    # Genuine replay headers, taken from another record and put on this value.
    other = b'{"other": "record"}'
    return {**_signed(), **replay_headers(OPS, ORIGIN, SIGNED * 1000, other, REPLAYED_AT)}


def _moved_time() -> dict[str, str]:
    headers = _replayed(SIGNED * 1000, REPLAYED_AT)
    return {**headers, REPLAY_TIMESTAMP_HEADER: str((REPLAYED_AT - 10) * 1000)}


def _moved_origin() -> dict[str, str]:
    return {**_replayed(SIGNED * 1000, REPLAYED_AT), REPLAY_OF_HEADER: "referrals.intake:0:1"}


def _without_signature() -> dict[str, str]:
    headers = _replayed(SIGNED * 1000, REPLAYED_AT)
    del headers[REPLAY_SIGNATURE_HEADER]
    return headers


def _signed_too_long_before() -> dict[str, str]:
    # Replay headers signed long before the replay reached the broker: captured and reused.
    return _replayed(SIGNED * 1000, REPLAYED_AT - int(REPLAY_SIGNATURE_WINDOW_S) - 1)


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param(_signed(), id="absent"),
        pytest.param(_forged(), id="forged"),
        pytest.param(_for_another_value(), id="wrong-value"),
        pytest.param(_moved_time(), id="original-time-altered"),
        pytest.param(_moved_origin(), id="coordinates-altered"),
        pytest.param(_without_signature(), id="unsigned"),
        pytest.param(_signed_too_long_before(), id="replay-signature-stale"),
    ],
)
def test_replay_headers_that_do_not_verify_leave_a_stale_record_refused(
    headers: dict[str, str],
) -> None:
    reference = _reference(headers, REPLAYED_AT * 1000, REPLAYED_AT)
    assert reference.source is ReferenceSource.BROKER
    assert reference.unverified_replay == (REPLAY_OF_HEADER in headers)
    assert _refused_as_replayed(_check(headers, REPLAYED_AT * 1000, REPLAYED_AT))


def test_without_an_operations_secret_a_replay_is_checked_like_any_record() -> None:
    headers = _replayed(SIGNED * 1000, REPLAYED_AT)
    assert _check(headers, REPLAYED_AT * 1000, REPLAYED_AT) == LILLE  # with the secret
    assert _refused_as_replayed(_check(headers, REPLAYED_AT * 1000, REPLAYED_AT, secret=b""))


# replay_headers itself


def test_replay_headers_round_trip() -> None:
    headers = replay_headers(OPS, ORIGIN, 1_700_000_000_123, VALUE, 1_800_000_000)
    assert headers[REPLAY_OF_HEADER] == ORIGIN
    assert headers[REPLAY_TIMESTAMP_HEADER] == "1700000000123"
    assert headers[REPLAY_SIGNATURE_HEADER].startswith("t=1800000000,v1=")
    assert original_timestamp_ms(headers, VALUE, OPS, 1_800_000_000.0) == 1_700_000_000_123
    # The signed text is the documented one, so another implementation can produce it.
    text = f"{ORIGIN}|1700000000123|{hashlib.sha256(VALUE).hexdigest()}".encode()
    digest = hmac.new(OPS, b"1800000000." + text, hashlib.sha256).hexdigest()
    assert headers[REPLAY_SIGNATURE_HEADER] == f"t=1800000000,v1={digest}"


@pytest.mark.parametrize(
    "spelling", ["+1700000000123", " 1700000000123", "1_700_000_000_123", "١٧٠٠٠٠٠٠٠٠١٢٣"]
)
def test_only_the_canonical_spelling_of_the_original_time_is_read(spelling: str) -> None:
    headers = replay_headers(OPS, ORIGIN, 1_700_000_000_123, VALUE, 1_800_000_000)
    assert int(spelling) == 1_700_000_000_123  # what int() alone would have accepted
    headers[REPLAY_TIMESTAMP_HEADER] = spelling
    assert original_timestamp_ms(headers, VALUE, OPS, 1_800_000_000.0) is None


def test_a_negative_original_time_is_not_read() -> None:
    headers = replay_headers(OPS, ORIGIN, -1, VALUE, 1_800_000_000)
    assert original_timestamp_ms(headers, VALUE, OPS, 1_800_000_000.0) is None


def test_a_non_ascii_replay_signature_is_no_match_not_a_crash() -> None:
    headers = replay_headers(OPS, ORIGIN, 1_700_000_000_123, VALUE, 1_800_000_000)
    headers[REPLAY_SIGNATURE_HEADER] = "t=1800000000,v1=é"
    assert original_timestamp_ms(headers, VALUE, OPS, 1_800_000_000.0) is None


# The handler passes the record's broker time, the clock and the operations secret through


class _Registry:
    async def by_key_id(self, key_id: str) -> PrescriberEntry | None:
        return LILLE if key_id == LILLE.signing_key_id else None


def _never() -> IntakeUnitOfWorkAll:
    raise AssertionError("authentication must refuse or the body must fail before any storage")


def _handler(geography: Geography, now_s: float, operations_secret: bytes) -> IntakeHandler:
    return IntakeHandler(
        uow_factory=_never,
        geography=geography,
        topics=Topics(accepted="accepted", rejected="rejected"),
        max_bytes=65536,
        today=lambda: date(2027, 1, 15),
        registry=_Registry(),
        secrets={LILLE.signing_key_id: SECRET},
        replay_window_s=WINDOW,
        flag_outside_jurisdiction=False,
        clock=lambda: now_s,
        operations_secret=operations_secret,
    )


async def _outcome(handler: IntakeHandler, headers: dict[str, str], broker_ms: int | None) -> str:
    """The reason the record is refused; authenticated records (this value is no event) stop at
    the body with ``missing_field``, naming the prescriber."""
    record = InboundRecord("referrals.intake", 0, 7, b"k", VALUE, headers, broker_ms)
    with pytest.raises(InvalidMessage) as refused:
        await handler(record)
    assert refused.value.problem.prescriber_id == LILLE.prescriber_id
    return str(refused.value.problem.reason)


async def test_the_handler_measures_from_the_broker_time(geography: Geography) -> None:
    handler = _handler(geography, SIGNED + HOUR, OPS)
    assert await _outcome(handler, _signed(), (SIGNED + 5) * 1000) == "missing_field"
    assert await _outcome(handler, _signed(), (SIGNED + WINDOW + 1) * 1000) == "replayed_message"
    assert await _outcome(handler, _signed(), None) == "replayed_message"  # the clock: T+1 h


async def test_the_handler_honours_a_verified_replay_and_logs_no_signature(
    geography: Geography,
) -> None:
    headers = _replayed(SIGNED * 1000, REPLAYED_AT)
    arrival_ms = REPLAYED_AT * 1000
    with capture_logs() as logs:
        verified = await _outcome(_handler(geography, REPLAYED_AT, OPS), headers, arrival_ms)
        ignored = await _outcome(_handler(geography, REPLAYED_AT, b""), headers, arrival_ms)
    assert (verified, ignored) == ("missing_field", "replayed_message")
    events = {entry["event"]: entry for entry in logs}
    assert events["referral.operator_replay"]["replay_of"] == ORIGIN
    assert events["referral.replay_headers_unverified"]["operations_secret_set"] is False
    logged = repr(logs)
    for secret_text in (headers[REPLAY_SIGNATURE_HEADER], headers["x-aiguillage-signature"]):
        assert secret_text.split("v1=")[-1] not in logged
    assert OPS.decode() not in logged


# The topic stamps arrival times itself, and provisioning brings existing topics to that


def test_the_intake_topic_is_stamped_by_the_broker() -> None:
    assert dict(topics.INTAKE.configs) == {"message.timestamp.type": "LogAppendTime"}


def test_config_drift_names_only_what_differs() -> None:
    wanted = {"a.intake": {"message.timestamp.type": "LogAppendTime"}, "a.other": {}}
    assert config_drift(wanted, {"a.intake": {"message.timestamp.type": "LogAppendTime"}}) == {}
    assert config_drift(wanted, {"a.intake": {"message.timestamp.type": "CreateTime"}}) == {
        "a.intake": {"message.timestamp.type": "LogAppendTime"}
    }
    assert config_drift(wanted, {}) == {"a.intake": {"message.timestamp.type": "LogAppendTime"}}
