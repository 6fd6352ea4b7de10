"""Reminding centres of the counts to confirm before they go stale: the rule (property-tested),
the use case on a fake store (once per confirmation, whoever runs it), and the French notice."""

from __future__ import annotations

import dataclasses
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Self, get_args

from hypothesis import given
from hypothesis import strategies as st

from aiguillage_schemas.envelope import Envelope
from aiguillage_schemas.events.directory_notices import CapacityConfirmationDue
from aiguillage_schemas.events.notifications import NotificationIssued, NotificationTopic
from aiguillage_schemas.vocabulary import ServiceCode
from notifications.adapters.directory import load_templates
from notifications.domain.messages import Planner
from notifications.use_cases.notify import issued, notify
from routing.domain.directory import Capacity, Centre, Directory, Site
from routing.domain.reminders import ReminderDue, ReminderKey, reminders_due
from routing.use_cases.capacity_reminders import (
    ReminderContext,
    remind_due_confirmations,
    reminder_event,
)
from tests.unit.fakes import FakeStore
from tests.unit.routing_fakes import Clock
from tests.unit.test_notifications import FakeDeliveryUow, notifications_planner

T0 = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
FRESHNESS = timedelta(days=30)
WINDOW = timedelta(days=7)
COURSE = ServiceCode.RESPONSIBILITY_COURSE
GROUP = ServiceCode.DISCUSSION_GROUP
SITES = ("HDF-ARRAS-59", "HDF-ARRAS-62", "IDF-PARIS-75")


def directory(counts: dict[tuple[str, ServiceCode], datetime], places: int = 4) -> Directory:
    centres = {
        "HDF-ARRAS": Centre("HDF-ARRAS", "CPCA Arras", "32", frozenset({"59", "62"})),
        "IDF-PARIS": Centre("IDF-PARIS", "CPCA Paris", "11", frozenset({"75"})),
    }
    sites = tuple(
        Site(
            site_id=site_id,
            centre_id=site_id.rsplit("-", 1)[0],
            commune_insee="62041",
            departement=site_id.rsplit("-", 1)[1],
            lat=50.0,
            lon=2.0,
            services=frozenset(s for (sid, s) in counts if sid == site_id),
            serves=frozenset({site_id.rsplit("-", 1)[1]}),
        )
        for site_id in SITES
    )
    capacity = {key: Capacity(places, 0, as_of) for key, as_of in counts.items()}
    return Directory(centres=centres, sites=sites, capacity=capacity)


# A count's age in hours, from fresh (0) to long stale (60 days).
ages = st.integers(min_value=0, max_value=60 * 24)
keys = st.tuples(st.sampled_from(SITES), st.sampled_from([COURSE, GROUP]))


@given(
    counts=st.dictionaries(keys, ages, max_size=6),
    reminded_mask=st.lists(st.booleans(), min_size=6, max_size=6),
    stale_reminded=st.booleans(),
)
def test_exactly_the_unreminded_confirmations_within_the_window_are_due(
    counts: dict[tuple[str, ServiceCode], int], reminded_mask: list[bool], stale_reminded: bool
) -> None:
    as_of = {key: T0 - timedelta(hours=age) for key, age in counts.items()}
    reminded: set[ReminderKey] = {
        (site, service, stamp)
        for ((site, service), stamp), done in zip(as_of.items(), reminded_mask, strict=False)
        if done
    }
    if stale_reminded:
        # A reminder about an older confirmation of the same count never silences the new one.
        reminded |= {(s, v, stamp - timedelta(days=90)) for (s, v), stamp in as_of.items()}
    due = reminders_due(directory(as_of), reminded, T0, FRESHNESS, WINDOW)

    expected = {
        (site, service, stamp)
        for (site, service), stamp in as_of.items()
        if stamp + FRESHNESS - WINDOW <= T0 and (site, service, stamp) not in reminded
    }
    assert {d.key for d in due} == expected
    assert [d.stale_at for d in due] == sorted(d.stale_at for d in due)
    for item in due:
        assert item.stale_at == item.as_of + FRESHNESS
        assert item.centre_id == item.site_id.rsplit("-", 1)[0]
        assert re.fullmatch(r"capacite-[0-9a-f]{16}", item.reference)


def test_a_new_confirmation_can_be_reminded_again_and_ids_follow_the_confirmation() -> None:
    first = T0 - timedelta(days=25)
    [due] = reminders_due(
        directory({("HDF-ARRAS-59", COURSE): first}), set(), T0, FRESHNESS, WINDOW
    )
    assert due.stale_at == T0 + timedelta(days=5)
    assert (
        reminders_due(
            directory({("HDF-ARRAS-59", COURSE): first}), {due.key}, T0, FRESHNESS, WINDOW
        )
        == []
    )
    # Confirmed again on day 24 after the first: fresh, so nothing is due...
    later = first + timedelta(days=24)
    assert (
        reminders_due(
            directory({("HDF-ARRAS-59", COURSE): later}), {due.key}, T0, FRESHNESS, WINDOW
        )
        == []
    )
    # ...until it ages into the window: then it is a new reminder, with its own ids.
    aged = later + FRESHNESS - WINDOW
    [again] = reminders_due(
        directory({("HDF-ARRAS-59", COURSE): later}), {due.key}, aged, FRESHNESS, WINDOW
    )
    assert again.as_of == later
    assert (again.event_id, again.reference) != (due.event_id, due.reference)


# -- the use case, on a fake store shared by "instances" ------------------------------------------


@dataclass
class ReminderStore:
    counts: dict[tuple[str, ServiceCode], datetime]
    rows: dict[ReminderKey, uuid.UUID] = field(default_factory=dict)
    outbox: list[tuple[str, Envelope]] = field(default_factory=list)


class FakeReminderUow:
    """One transaction on the store: what it writes is kept only when it commits."""

    def __init__(self, store: ReminderStore) -> None:
        self._store = store
        self._rows: dict[ReminderKey, uuid.UUID] = {}
        self._outbox: list[tuple[str, Envelope]] = []

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self._store.rows.update(self._rows)
            self._store.outbox.extend(self._outbox)

    async def claim(self, consumer: str, event_id: uuid.UUID) -> bool:
        raise AssertionError("reminders consume nothing")

    async def emit(self, topic: str, event: Envelope) -> None:
        self._outbox.append((topic, event))

    async def open_counts(self) -> Directory:
        return directory(self._store.counts)

    async def reminded(self) -> set[ReminderKey]:
        return {(s, v, a) for (s, v, a) in self._store.rows if self._store.counts.get((s, v)) == a}

    async def claim_reminder(self, due: ReminderDue) -> bool:
        if (
            due.key in self._store.rows
            or self._store.counts.get((due.site_id, due.service)) != due.as_of
        ):
            return False
        self._rows[due.key] = due.event_id
        return True


def _context(store: ReminderStore, clock: Clock) -> ReminderContext:
    return ReminderContext(
        uow_factory=lambda: FakeReminderUow(store),
        notices_topic="directory.notices",
        freshness=FRESHNESS,
        window=WINDOW,
        policy="rank",
        clock=clock,
    )


async def test_each_confirmation_is_reminded_once_whoever_runs_and_however_often() -> None:
    clock = Clock(T0)
    store = ReminderStore(
        {("HDF-ARRAS-59", COURSE): T0 - timedelta(days=25), ("IDF-PARIS-75", GROUP): T0}
    )
    first, second = _context(store, clock), _context(store, clock)  # two routing instances
    assert [d.site_id for d in await remind_due_confirmations(first)] == ["HDF-ARRAS-59"]
    assert await remind_due_confirmations(second) == []
    clock.advance(hours=1)
    assert await remind_due_confirmations(first) == []
    [(topic, event)] = store.outbox
    assert topic == "directory.notices"
    assert isinstance(event, CapacityConfirmationDue)
    assert event.subject == "HDF-ARRAS-59"  # the key: one site's notices stay ordered
    assert (event.data.centre_id, event.data.places_total, event.data.policy) == (
        "HDF-ARRAS",
        4,
        "ranked_lower",
    )
    assert event.data.as_of == T0 - timedelta(days=25)
    assert event.data.stale_at == T0 + timedelta(days=5)

    # The centre confirms (a newer as_of): nothing until that count ages into the window.
    store.counts[("HDF-ARRAS-59", COURSE)] = clock.now
    assert await remind_due_confirmations(first) == []
    clock.advance(days=23)
    reminded = await remind_due_confirmations(second)
    assert {(d.site_id, d.as_of) for d in reminded} == {
        ("HDF-ARRAS-59", T0 + timedelta(hours=1)),
        ("IDF-PARIS-75", T0),
    }
    assert len({event.event_id for _, event in store.outbox}) == len(store.outbox) == 3


async def test_a_snapshot_overtaken_by_a_confirmation_reminds_nobody() -> None:
    """The count was confirmed between the snapshot and the claim: no reminder about it."""
    clock = Clock(T0)
    store = ReminderStore({("HDF-ARRAS-59", COURSE): T0 - timedelta(days=25)})
    ctx = _context(store, clock)

    class Overtaken(FakeReminderUow):
        async def open_counts(self) -> Directory:
            snapshot = await super().open_counts()
            store.counts[("HDF-ARRAS-59", COURSE)] = T0  # a capacity update commits meanwhile
            return snapshot

    ctx = dataclasses.replace(ctx, uow_factory=lambda: Overtaken(store))
    assert await remind_due_confirmations(ctx) == []
    assert store.outbox == []


# -- what the centre reads ---------------------------------------------------------------------


def _notice(stale_at: datetime, policy: str = "ranked_lower") -> CapacityConfirmationDue:
    due = ReminderDue(
        site_id="HDF-ARRAS-62",
        centre_id="HDF-ARRAS",
        centre_name="CPCA Arras",
        service=COURSE,
        places_total=7,
        as_of=stale_at - FRESHNESS,
        stale_at=stale_at,
    )
    return reminder_event(due, "rank" if policy == "ranked_lower" else "drop", T0)


def test_the_centre_is_told_which_count_until_when_what_then_and_where_to_confirm() -> None:
    planner: Planner = notifications_planner()
    event = _notice(datetime(2026, 11, 27, 15, 30, tzinfo=UTC))
    plan = planner.plan(event, T0)
    [notice] = plan.notifications
    assert (notice.recipient_kind, notice.recipient_id, notice.topic, notice.site_id) == (
        "centre",
        "HDF-ARRAS",
        "capacity_confirmation_due",
        "HDF-ARRAS-62",
    )
    # The centre's system gets it alone; its e-mail goes into the centre's reminder digest.
    assert [d.channel for d in notice.deliveries] == ["webhook"]
    [entry] = plan.digest
    assert (entry.topic, entry.address) == (
        "capacity_confirmation_due",
        "coordination@hdf-arras.cpca.demo.invalid",
    )
    # Its own reference, not the site id taken for a referral id; the outbound contract holds.
    assert notice.referral_id == event.data.reference
    assert re.fullmatch(r"capacite-[0-9a-f]{16}", notice.referral_id)
    out = issued(notice, event.event_id, event.correlation_id)
    NotificationIssued.model_validate_json(out.model_dump_json())
    for text in (notice.body, notice.email_text):
        assert "HDF-ARRAS-62" in text
        assert "stage de responsabilisation" in text
        assert "est de 7" in text
        assert (
            "sera considéré comme non confirmé à partir du 27/11/2026 à 16:30 (heure de Paris)"
            in text
        )
        assert "passe après les sites dont les places sont confirmées" in text
        assert "espace sécurisé (portail Aiguillage)" in text
        assert f"Référence de ce rappel : {event.data.reference}" in text
        assert "orientation" not in text.split("\n\n")[-1]  # the footer names no referral
        assert "$" not in text
    assert "Places à confirmer pour le site HDF-ARRAS-62" in notice.title
    # Redelivered: the same notification id, recognised by the database.
    assert planner.plan(event, T0).notifications[0].notification_id == notice.notification_id


async def test_counts_falling_due_together_make_one_e_mail_per_centre_listing_each() -> None:
    store, planner = FakeStore(), notifications_planner()

    def uow() -> FakeDeliveryUow:
        return FakeDeliveryUow(store, [], [])

    stale_at = datetime(2026, 11, 27, 15, 30, tzinfo=UTC)
    notices = [
        reminder_event(
            ReminderDue(
                site, "HDF-ARRAS", "CPCA Arras", service, 4, stale_at - FRESHNESS, stale_at
            ),
            "rank",
            T0,
        )
        for site in ("HDF-ARRAS-59", "HDF-ARRAS-62")
        for service in (COURSE, GROUP)
    ]
    for event in notices:
        assert await notify(event, uow, "outbound", planner, T0) is not None
    [(_, email)] = store.rows("digest_emails")[0].items()
    assert email.subject == "4 nombres de places à confirmer (CPCA Arras)"
    for i, event in enumerate(notices, 1):
        assert f"{i}. Site {event.data.site_id}, service « " in email.email_text
        assert f"(référence {event.data.reference})" in email.email_text
    assert "passe après les sites dont les places sont confirmées" in email.email_text
    assert "$" not in email.email_text + email.email_html
    # Each count still reaches the centre's system on its own, to be confirmed one by one.
    webhooks = [d for n in store.rows("notifications") for d in n.deliveries]
    assert len(webhooks) == 4
    assert {d.channel for d in webhooks} == {"webhook"}


def test_an_already_stale_count_says_since_when_and_the_drop_policy_is_told() -> None:
    [notice] = (
        notifications_planner()
        .plan(_notice(T0 - timedelta(days=2), policy="not_offered"), T0)
        .notifications
    )
    assert "est considéré comme non confirmé depuis le 20/11/2026" in notice.email_text
    assert "plus aucune orientation ne sera proposée à votre site" in notice.email_text


def test_every_notification_topic_of_the_contract_has_a_french_template() -> None:
    templates = load_templates()
    assert set(get_args(NotificationTopic)) <= set(templates.topics)
