"""A centre is reminded to confirm a count before it goes stale: routing and notifications as real
processes on the real broker and database, the centre's webhook receiver and SMTP server run by
the test. One reminder per confirmation, across a routing crash; a newer confirmation that ages
is reminded again. Time is driven by the counts' as_of (an old confirmation, or one that enters
the reminder window a few seconds later), never by sleeping."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from aiguillage_demo.peers import SmtpSink, WebhookReceiver
from aiguillage_schemas import topics
from aiguillage_schemas.envelope import Envelope
from aiguillage_schemas.events.centres import (
    CapacityUpdated,
    CapacityUpdatedData,
    ServiceOpened,
    ServiceOpenedData,
)
from tests.conftest import Isolated, wait_started
from tests.integration.test_notification_delivery import notifications_env, start_notifications
from tests.integration.test_routing_directory import _cli
from tests.support.routing_events import COURSE, TEST_OPERATOR, site_added
from tests.support.waiting import eventually

HOOK = "/hooks/centre/HDF-ARRAS"
MAIL = "coordination@hdf-arras.cpca.demo.invalid"
FRESHNESS = timedelta(days=30)  # routing's defaults: reminded 7 days before going stale
WINDOW = timedelta(days=7)


def _envelope(site_id: str) -> dict[str, Any]:
    return {"source": "portal", "correlation_id": uuid.uuid4(), "subject": site_id}


async def _open_site(isolated: Isolated, site_id: str, as_of: datetime) -> None:
    """An operator adds an Arras site through the portal (signed), with the course counted at
    ``as_of``."""
    now = datetime.now(UTC)
    events: list[Envelope] = [
        site_added(site_id, "HDF-ARRAS", now, "62041", ("62",), TEST_OPERATOR, source="portal"),
        ServiceOpened(
            **_envelope(site_id),
            data=ServiceOpenedData(
                site_id=site_id, service=COURSE, places_total=3, as_of=as_of, actor=TEST_OPERATOR
            ),
        ),
    ]
    for event in events:
        await isolated.kafka.send_event(isolated.topic(topics.DIRECTORY_UPDATES), event)


def _reminders(hooks: WebhookReceiver, site_id: str) -> dict[str, dict[str, Any]]:
    """The reminders the centre's system accepted for ``site_id``, by notification id (a
    retried call has the same one)."""
    found: dict[str, dict[str, Any]] = {}
    for call in hooks.accepted(HOOK):
        body = call.json()
        if body["topic"] == "capacity_confirmation_due" and body["site_id"] == site_id:
            found[body["notification_id"]] = body
    return found


def _mails(smtp: SmtpSink, site_id: str) -> list[str]:
    return [m.subject for m in smtp.to(MAIL) if site_id in m.subject]


async def _wait_reminders(
    hooks: WebhookReceiver, smtp: SmtpSink, site_id: str, count: int
) -> dict[str, dict[str, Any]]:
    async def both() -> tuple[int, int]:
        return len(_reminders(hooks, site_id)), len(_mails(smtp, site_id))

    await eventually(
        both, lambda n: n >= (count, count), 90, 0.2, f"{count} reminder(s) for {site_id}"
    )
    return _reminders(hooks, site_id)


async def test_the_centre_is_reminded_once_per_confirmation_across_a_routing_crash(
    isolated: Isolated, hooks: WebhookReceiver, smtp: SmtpSink
) -> None:
    routing = isolated.service("routing", AIGUILLAGE_ROUTING_CAPACITY_REMINDER_INTERVAL_S="0.3")
    routing.start()
    notifications = await start_notifications(
        isolated, notifications_env(hooks, smtp, digest_window_s="1")
    )
    await wait_started(routing, notifications)
    site, probe = f"HDF-ARRAS-RMD{isolated.suffix}", f"HDF-ARRAS-PRB{isolated.suffix}"
    now = datetime.now(UTC)

    # Counted 25 days ago: stale in 5 days, within the 7-day window, so the centre is told.
    first_as_of = now - timedelta(days=25)
    await _open_site(isolated, site, first_as_of)
    [first] = (await _wait_reminders(hooks, smtp, site, 1)).values()
    facts = first["facts"]
    assert first["reference"].startswith("capacite-")
    assert first["recipient"] == {"kind": "centre", "id": "HDF-ARRAS"}
    assert facts["places_total"] == "3"
    assert facts["service"] == "stage de responsabilisation"
    assert "à partir du" in facts["stale_when"]
    assert "portail Aiguillage" in first["text"]
    assert "person" not in first  # about no person: never an identity
    [mail] = [m for m in smtp.to(MAIL) if site in m.subject]
    assert "portail Aiguillage" in mail.text()
    assert first["reference"] in mail.text()
    schema = isolated.schema("routing")
    stale = _cli(isolated, "aiguillage-routing-directory", "stale", "62")
    assert stale.returncode == 0, stale.stderr
    [line] = [line for line in stale.stdout.splitlines() if site in line]
    assert f"centre reminded {datetime.now(UTC):%Y-%m-%d}" in line
    assert first["reference"] in line

    # Routing crashes and comes back. Its first pass after the restart reminds the probe site,
    # so it has seen the first count again, still unconfirmed: not reminded a second time.
    routing.kill()
    routing.start()
    await wait_started(routing)
    await _open_site(isolated, probe, now - timedelta(days=40))  # already stale
    await _wait_reminders(hooks, smtp, probe, 1)
    assert list(_reminders(hooks, site)) == [first["notification_id"]]
    assert len(_mails(smtp, site)) == 1
    assert (
        await isolated.count(
            f"SELECT count(*) FROM {schema}.outbox WHERE topic = $1 AND key = $2",
            isolated.topic(topics.DIRECTORY_NOTICES),
            site,
        )
        == 1
    )
    [probe_notice] = _reminders(hooks, probe).values()
    assert "depuis le" in probe_notice["facts"]["stale_when"]

    # The centre confirms its count (signed capacity update); the new confirmation enters the
    # reminder window a few seconds later and is reminded in its turn.
    second_as_of = now - (FRESHNESS - WINDOW) + timedelta(seconds=10)
    await isolated.kafka.send_event(
        isolated.topic(topics.DIRECTORY_UPDATES),
        CapacityUpdated(
            **_envelope(site),
            data=CapacityUpdatedData(
                site_id=site,
                service=COURSE,
                places_total=5,
                as_of=second_as_of,
                actor=TEST_OPERATOR,
            ),
        ),
    )
    reminders = await _wait_reminders(hooks, smtp, site, 2)
    [second] = [r for r in reminders.values() if r["notification_id"] != first["notification_id"]]
    assert second["reference"] != first["reference"]
    assert second["facts"]["places_total"] == "5"
    assert len(_mails(smtp, site)) == 2
    rows = await isolated.db.fetch(
        f"SELECT as_of, reference FROM {schema}.capacity_reminders WHERE site_id = $1"
        " ORDER BY as_of",
        site,
    )
    assert [(r["as_of"], r["reference"]) for r in rows] == [
        (first_as_of, first["reference"]),
        (second_as_of, second["reference"]),
    ]


async def test_counts_due_together_reach_the_centre_as_one_e_mail_and_one_call_each(
    isolated: Isolated, hooks: WebhookReceiver, smtp: SmtpSink
) -> None:
    routing = isolated.service("routing", AIGUILLAGE_ROUTING_CAPACITY_REMINDER_INTERVAL_S="0.3")
    routing.start()
    notifications = await start_notifications(
        isolated, notifications_env(hooks, smtp, digest_window_s="3")
    )
    await wait_started(routing, notifications)
    sites = [f"HDF-ARRAS-GR{i}{isolated.suffix}" for i in range(3)]
    counted = datetime.now(UTC) - timedelta(days=26)
    for site in sites:
        await _open_site(isolated, site, counted)

    async def listing_all() -> list[str]:
        return [m.text() for m in smtp.to(MAIL) if all(site in m.text() for site in sites)]

    [text] = await eventually(listing_all, bool, 90, 0.2, "one e-mail listing the three sites")
    for site in sites:
        [reminder] = (await _wait_call(hooks, site)).values()
        assert reminder["reference"] in text  # each count quotable from the one e-mail
    # No other e-mail about them: one e-mail for the three, not three.
    about = [m for m in smtp.to(MAIL) if any(site in m.text() for site in sites)]
    assert len(about) == 1
    assert about[0].subject.endswith(
        "nombres de places à confirmer (CPCA Hauts-de-France (Arras / Home des Rosati))"
    )


async def _wait_call(hooks: WebhookReceiver, site_id: str) -> dict[str, dict[str, Any]]:
    async def calls() -> dict[str, dict[str, Any]]:
        return _reminders(hooks, site_id)

    return await eventually(calls, bool, 90, 0.2, f"the call about {site_id}")
