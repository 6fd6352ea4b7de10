"""Who may speak on centres.responses and directory.updates (routing.domain.senders): the signature
checks and the rules a centre key and the portal key follow, with made-up keys and times."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aiguillage_common.codec import Problem, encode_event
from aiguillage_common.replay_headers import replay_headers
from aiguillage_schemas.envelope import Envelope
from aiguillage_schemas.events.centres import (
    Actor,
    CapacityUpdated,
    CapacityUpdatedData,
    OfferAnswered,
    OfferAnsweredData,
    PathReport,
    PathReportData,
    SiteAdded,
    SiteClosed,
    SiteClosedData,
)
from aiguillage_schemas.signing import KEY_ID_HEADER, SIGNING_HEADERS, sign
from aiguillage_schemas.vocabulary import RejectionReason, ServiceCode
from routing.adapters.senders_file import load_senders
from routing.domain.senders import Claim, Sender, authenticate, authorise, claim_of
from tests.support import routing_events

ARRAS = Sender("hdf-arras-2026", "centre", "HDF-ARRAS")
CREIL = Sender("hdf-creil-2026", "centre", "HDF-CREIL")
PORTAL = Sender("portal-2026", "portal")
SENDERS = {s.key_id: s for s in (ARRAS, CREIL, PORTAL)}
SECRETS = {key: f"secret-of-{key}".encode() for key in SENDERS}
SITES = {"HDF-ARRAS-59": "HDF-ARRAS", "HDF-ARRAS-62": "HDF-ARRAS", "HDF-CREIL-80": "HDF-CREIL"}
NOW = 1_800_000_000
WINDOW = 300
USER = Actor(kind="centre_user", id="u-1234")
OPERATOR = Actor(kind="operator", id="op-42")
SYSTEM = Actor(kind="centre_system", id="arras-dossiers")
AT = datetime(2026, 11, 20, tzinfo=UTC)


def answer(centre: str, site: str, actor: Actor | None = None) -> OfferAnswered:
    return OfferAnswered(
        source="test",
        correlation_id=uuid.uuid4(),
        subject="ref-000001",
        data=OfferAnsweredData(centre_id=centre, site_id=site, answer="accepted", actor=actor),
    )


def capacity(site: str, actor: Actor | None = None) -> CapacityUpdated:
    return CapacityUpdated(
        source="test",
        correlation_id=uuid.uuid4(),
        subject=site,
        data=CapacityUpdatedData(
            site_id=site,
            service=ServiceCode.RESPONSIBILITY_COURSE,
            places_total=3,
            as_of=AT,
            actor=actor,
        ),
    )


def site_added(site: str, centre: str, actor: Actor | None = None) -> SiteAdded:
    return routing_events.site_added(site, centre, AT, "62041", ("62",), actor, source="test")


def signed(value: bytes, key_id: str, at: int = NOW) -> dict[str, str]:
    return sign(value, key_id, SECRETS.get(key_id, b"unregistered secret"), at)


def check(headers: dict[str, str], value: bytes, broker_s: float = NOW) -> Sender | Problem:
    return authenticate(headers, value, int(broker_s * 1000), SENDERS, SECRETS, WINDOW, now_s=0.0)


def reason(outcome: Sender | Problem | None) -> str | None:
    return str(outcome.reason) if isinstance(outcome, Problem) else None


# -- authentication -----------------------------------------------------------------------------


def test_a_correctly_signed_record_names_its_registered_sender() -> None:
    value = encode_event(answer("HDF-ARRAS", "HDF-ARRAS-59"))
    assert check(signed(value, ARRAS.key_id), value) == ARRAS


@pytest.mark.parametrize("missing", SIGNING_HEADERS)
def test_a_record_without_any_one_signing_header_is_unsigned(missing: str) -> None:
    value = encode_event(answer("HDF-ARRAS", "HDF-ARRAS-59"))
    headers = signed(value, ARRAS.key_id)
    del headers[missing]
    outcome = check(headers, value)
    assert reason(outcome) == "unsigned"
    assert isinstance(outcome, Problem)
    assert outcome.field_path == f"headers.{missing}"


def test_an_unregistered_key_and_a_registered_key_without_secret_are_unknown() -> None:
    value = encode_event(answer("HDF-ARRAS", "HDF-ARRAS-59"))
    assert reason(check(signed(value, "someone-2026"), value)) == "unknown_signing_key"
    no_secret = authenticate(
        signed(value, ARRAS.key_id), value, NOW * 1000, SENDERS, {}, WINDOW, now_s=0.0
    )
    assert reason(no_secret) == "unknown_signing_key"


def test_a_signature_made_with_another_secret_or_over_other_bytes_is_bad() -> None:
    value = encode_event(answer("HDF-ARRAS", "HDF-ARRAS-59"))
    forged = sign(value, ARRAS.key_id, b"guessed", NOW)
    assert reason(check(forged, value)) == "bad_signature"
    other = encode_event(answer("HDF-ARRAS", "HDF-ARRAS-62"))
    assert reason(check(signed(value, ARRAS.key_id), other)) == "bad_signature"
    # Another centre's valid headers moved onto this record: still bad.
    moved = {**signed(value, CREIL.key_id), KEY_ID_HEADER: ARRAS.key_id}
    assert reason(check(moved, value)) == "bad_signature"


@given(offset=st.integers(min_value=-10 * WINDOW, max_value=10 * WINDOW))
def test_freshness_is_measured_against_the_brokers_time_not_the_readers(offset: int) -> None:
    value = encode_event(capacity("HDF-ARRAS-59", USER))
    headers = signed(value, PORTAL.key_id, NOW + offset)
    # The reader's clock (now_s=0) never matters when the broker stamped the record.
    outcome = check(headers, value, broker_s=NOW)
    if abs(offset) <= WINDOW:
        assert outcome == PORTAL
    else:
        assert reason(outcome) == "stale_signature"


def test_a_stale_record_with_a_bad_signature_is_a_bad_signature() -> None:
    """Staleness is only reported for an authentic record (a forger picks any timestamp)."""
    value = encode_event(answer("HDF-ARRAS", "HDF-ARRAS-59"))
    forged = sign(value, ARRAS.key_id, b"guessed", NOW - 10 * WINDOW)
    assert reason(check(forged, value)) == "bad_signature"


def test_an_operators_verified_replay_counts_from_the_original_arrival() -> None:
    value = encode_event(answer("HDF-ARRAS", "HDF-ARRAS-59"))
    original_ms = NOW * 1000
    later_s = NOW + 3 * 86_400  # replayed three days later
    headers = {
        **signed(value, ARRAS.key_id),
        **replay_headers(b"ops", "centres.responses:2:17", original_ms, value, later_s),
    }
    replayed = authenticate(
        headers, value, later_s * 1000, SENDERS, SECRETS, WINDOW, 0.0, operations_secret=b"ops"
    )
    assert replayed == ARRAS
    unverified = authenticate(
        headers, value, later_s * 1000, SENDERS, SECRETS, WINDOW, 0.0, operations_secret=b"x"
    )
    assert reason(unverified) == "stale_signature"


# -- authorisation --------------------------------------------------------------------------------


def allowed(sender: Sender, event: Envelope) -> str | None:
    return reason(authorise(sender, claim_of(event), SITES))


def test_a_centre_key_answers_and_reports_for_its_own_sites() -> None:
    assert allowed(ARRAS, answer("HDF-ARRAS", "HDF-ARRAS-59")) is None
    assert allowed(ARRAS, answer("HDF-ARRAS", "HDF-ARRAS-62", SYSTEM)) is None
    report = PathReport(
        source="test",
        correlation_id=uuid.uuid4(),
        subject="ref-000001",
        data=PathReportData(
            centre_id="HDF-ARRAS",
            site_id="HDF-ARRAS-59",
            report="attended",
            occurred_on=date.today(),
        ),
    )
    assert allowed(ARRAS, report) is None
    assert allowed(CREIL, report) == "not_this_centre"


def test_a_centre_key_cannot_answer_for_another_centre_named_or_not() -> None:
    # Naming the other centre, or its own centre with the other's site: both refused.
    assert allowed(CREIL, answer("HDF-ARRAS", "HDF-ARRAS-59")) == "not_this_centre"
    assert allowed(CREIL, answer("HDF-CREIL", "HDF-ARRAS-59")) == "not_this_centre"
    assert allowed(ARRAS, answer("HDF-ARRAS", "HDF-UNKNOWN-99")) == "not_this_centre"


def test_a_centre_key_updates_only_its_own_sites_and_adds_sites_only_for_itself() -> None:
    assert allowed(ARRAS, capacity("HDF-ARRAS-59")) is None
    assert allowed(CREIL, capacity("HDF-ARRAS-59")) == "not_this_centre"
    closed = SiteClosed(
        source="t",
        correlation_id=uuid.uuid4(),
        subject="HDF-ARRAS-59",
        data=SiteClosedData(site_id="HDF-ARRAS-59", as_of=AT),
    )
    assert allowed(CREIL, closed) == "not_this_centre"
    assert allowed(ARRAS, site_added("HDF-ARRAS-NEW", "HDF-ARRAS")) is None
    assert allowed(CREIL, site_added("HDF-ARRAS-NEW", "HDF-ARRAS")) == "not_this_centre"
    # Re-adding another centre's site under its own name would reopen or move that site.
    assert allowed(CREIL, site_added("HDF-ARRAS-59", "HDF-CREIL")) == "not_this_centre"
    assert allowed(ARRAS, site_added("HDF-ARRAS-59", "HDF-ARRAS")) is None


def test_the_portal_speaks_for_any_centre_naming_a_user_or_an_operator() -> None:
    assert allowed(PORTAL, answer("HDF-ARRAS", "HDF-ARRAS-59", USER)) is None
    assert allowed(PORTAL, capacity("HDF-CREIL-80", OPERATOR)) is None
    assert allowed(PORTAL, answer("HDF-ARRAS", "HDF-ARRAS-59")) == "actor_required"
    assert allowed(PORTAL, capacity("HDF-CREIL-80")) == "actor_required"
    # A centre's system speaks with its own key, never through the portal's.
    assert allowed(PORTAL, answer("HDF-ARRAS", "HDF-ARRAS-59", SYSTEM)) == "actor_required"


CENTRES = ["HDF-ARRAS", "HDF-CREIL", "ARA-LYON"]


@given(
    key_centre=st.sampled_from(CENTRES),
    named=st.sampled_from(CENTRES),
    site_owner=st.sampled_from([*CENTRES, None]),
    actor=st.sampled_from([None, USER, OPERATOR, SYSTEM]),
)
def test_a_centre_key_is_accepted_exactly_when_centre_and_site_are_its_own(
    key_centre: str, named: str, site_owner: str | None, actor: Actor | None
) -> None:
    sender = Sender(f"{key_centre.lower()}-2026", "centre", key_centre)
    sites = {"SITE-1": site_owner} if site_owner is not None else {}
    outcome = authorise(sender, Claim("SITE-1", named, actor, adds_site=False), sites)
    ok = named == key_centre and site_owner == key_centre
    assert (outcome is None) == ok
    if not ok:
        assert reason(outcome) == "not_this_centre"


@given(
    centre=st.sampled_from([*CENTRES, None]),
    site_owner=st.sampled_from([*CENTRES, None]),
    adds_site=st.booleans(),
    actor=st.sampled_from([None, USER, OPERATOR, SYSTEM]),
)
def test_the_portal_is_accepted_exactly_when_it_names_a_user_or_operator(
    centre: str | None, site_owner: str | None, adds_site: bool, actor: Actor | None
) -> None:
    sites = {"SITE-1": site_owner} if site_owner is not None else {}
    outcome = authorise(PORTAL, Claim("SITE-1", centre, actor, adds_site), sites)
    assert (outcome is None) == (actor is not None and actor.kind != "centre_system")
    if outcome is not None:
        assert outcome.reason == RejectionReason.ACTOR_REQUIRED


def test_the_shipped_registry_has_one_key_per_centre_and_the_portals() -> None:
    senders = load_senders()
    centres = {s.centre_id for s in senders.values() if s.kind == "centre"}
    assert senders["portal-2026"] == PORTAL
    assert senders["hdf-arras-2026"] == ARRAS
    # the 29 CPCA and the national housing platform (which answers its housing offers)
    assert len(centres) == 30
    assert "PN-HEBERGEMENT" in centres
    assert all(key == f"{s.centre_id.lower()}-2026" for key, s in senders.items() if s.centre_id)
