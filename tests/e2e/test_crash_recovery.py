"""SIGKILL each service while a batch flows: every referral is routed once and notified once."""

from __future__ import annotations

from collections import Counter

from aiguillage_demo.samples import DEMO_CASES, make_referral
from aiguillage_schemas import topics
from aiguillage_schemas.vocabulary import ServiceCode
from tests.conftest import Isolated, wait_started
from tests.support.waiting import eventually

BATCH = 30  # per wave; three waves, one per killed service


async def test_each_service_killed_mid_batch_loses_nothing_and_duplicates_nothing(
    isolated: Isolated,
) -> None:
    intake, routing, notifications = await isolated.start_all()
    # Cases that are placed at once, so that every referral ends with exactly three notifications
    # (received and routed to the prescriber, offered to the centre). Eviction housing is left
    # out: Toulouse has 6 places, so the batch's 8 would partly be waitlisted.
    routable = [
        i
        for i, case in enumerate(DEMO_CASES)
        if case.commune_insee != "21231" and ServiceCode.EVICTION_HOUSING not in case.needs
    ]
    referrals = [
        make_referral(
            routable[i % len(routable)], referral_id=f"ref-crash{isolated.suffix}-{i:03d}"
        )
        for i in range(3 * BATCH)
    ]
    intake_topic = isolated.topic(topics.INTAKE)

    async def publish(wave: int) -> None:
        for referral in referrals[wave * BATCH : (wave + 1) * BATCH]:
            await isolated.kafka.send_event(intake_topic, referral)

    async def progress() -> int:
        return await isolated.count(
            f"SELECT count(*) FROM {isolated.schema('notifications')}.notifications"
        )

    # Each wave is published, then one service is killed as soon as it has handled part of it.
    own_rows = {
        "referral-intake": f"SELECT count(*) FROM {isolated.schema('referral-intake')}.referrals",
        "routing": f"SELECT count(*) FROM {isolated.schema('routing')}.decisions",
        "notifications": (
            f"SELECT count(*) / 3 FROM {isolated.schema('notifications')}.notifications"
        ),
    }
    handled_at_kill = []
    for wave, victim in enumerate((intake, routing, notifications)):
        await publish(wave)
        handled = await eventually(
            lambda sql=own_rows[victim.name]: isolated.count(sql),
            lambda n, w=wave: n > w * BATCH,
            timeout_s=60,
            interval_s=0.01,
            what=f"{victim.name} to start on wave {wave}",
        )
        victim.kill()
        handled_at_kill.append(handled - wave * BATCH)
        victim.start()
        await wait_started(victim)

    expected_notifications = 3 * len(referrals)
    await eventually(
        progress,
        lambda n: n >= expected_notifications,
        timeout_s=120,
        what="every referral notified",
    )

    routing_schema, notif_schema = isolated.schema("routing"), isolated.schema("notifications")
    decisions = await isolated.db.fetch(f"SELECT referral_id FROM {routing_schema}.decisions")
    assert sorted(r["referral_id"] for r in decisions) == sorted(r.subject for r in referrals)
    rows = await isolated.db.fetch(f"SELECT referral_id, topic FROM {notif_schema}.notifications")
    per_referral = Counter((r["referral_id"], r["topic"]) for r in rows)
    assert len(rows) == expected_notifications
    assert set(per_referral.values()) == {1}

    # On the wire: a relay killed between publish and mark-sent may re-send, but with the same
    # event id, so consumers see each notification exactly once after deduplication.
    outbound = await eventually(
        lambda: isolated.kafka.read_all(isolated.topic(topics.NOTIFICATIONS_OUTBOUND)),
        lambda records: len({r.headers["event_id"] for r in records}) >= expected_notifications,
        timeout_s=60,
        what="every notification on the outbound topic",
    )
    ids_by_notification: dict[str, set[str]] = {}
    for record in outbound:
        data = record.json()["data"]
        ids_by_notification.setdefault(data["notification_id"], set()).add(
            record.headers["event_id"]
        )
    assert len(ids_by_notification) == expected_notifications
    assert all(len(ids) == 1 for ids in ids_by_notification.values())
    assert intake.starts == routing.starts == notifications.starts == 2
    print(f"handled by each victim of its wave when killed: {handled_at_kill} of {BATCH}")
