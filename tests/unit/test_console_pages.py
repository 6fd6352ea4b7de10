"""The operator console's own small decisions: which ids it looks up, which steps link to a dead
letter's page. The rest is the ``aiguillage`` command's use cases (tested with it) and the
browser test (tests/browser/test_console_operations.py)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from aiguillage_operations.adapters.timeline.dead_letters import dead_letter_part
from aiguillage_operations.domain import Action, Coordinates, DeadLetter, Kind
from portal.adapters.console.referrals import dead_letter_link, valid_referral_id

AT = datetime(2026, 11, 30, 12, tzinfo=UTC)


@pytest.mark.parametrize("given", ["ref-2026-000123", "  tl_t1234.5  ", "A" * 64])
def test_ids_the_contracts_accept_are_looked_up(given: str) -> None:
    assert valid_referral_id(given) == given.strip()


@pytest.mark.parametrize(
    "given", ["", "abc", "-ref-2026", "ref 2026 0001", "ref/../../etc", "é" * 8, "A" * 65]
)
def test_ids_the_contracts_refuse_are_said_malformed(given: str) -> None:
    assert valid_referral_id(given) is None


def test_a_dead_letter_step_links_to_its_page_and_the_operators_action_does_not() -> None:
    uid = uuid.uuid4()
    dead_letter = DeadLetter(
        uid=uid,
        topic="referrals.rejected",
        location=Coordinates("referrals.rejected", 0, 3),
        kind=Kind.REJECTION,
        reason="unknown_prescriber",
        field_path="headers.x-aiguillage-key-id",
        at=AT,
        subject="ref-2026-000123",
        source=Coordinates("referrals.intake", 0, 7),
        sha256="0" * 64,
        consumer="referral-intake",
    )
    replayed = Action(uid, "replayed", "portal:u:x", AT, replayed_to="referrals.intake:0:9")
    entries = dead_letter_part([dead_letter], {uid: [replayed]}).entries
    assert [dead_letter_link(e) for e in entries] == [
        f"/operateur/lettres-mortes/{uid.hex[:10]}",
        None,
    ]
