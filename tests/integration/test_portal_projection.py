"""The portal's projection on the real broker and database: each event counts once however often
it is delivered, the order across topics does not matter, and what cannot be read is
dead-lettered with its reason while the rest goes on."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from aiguillage_schemas import topics
from aiguillage_schemas.events.routing_decisions import ReferralRouted, ReferralRoutedData, SiteRef
from aiguillage_schemas.vocabulary import PrescriberKind, ServiceCode
from tests.conftest import Isolated, wait_started
from tests.support.routing_events import lille_referral
from tests.support.waiting import eventually

SITE = SiteRef(
    centre_id="HDF-ARRAS",
    centre_name="CPCA Hauts-de-France (Arras)",
    site_id="HDF-ARRAS-59",
    site_commune_insee="59350",
    site_departement="59",
    address_confidential=False,
)


def offer(referral_id: str, correlation_id: uuid.UUID) -> ReferralRouted:
    return ReferralRouted(
        source="routing",
        correlation_id=correlation_id,
        subject=referral_id,
        data=ReferralRoutedData(
            decision_id=uuid.uuid4(),
            prescriber_id="parquet-tj-lille",
            prescriber_kind=PrescriberKind.PARQUET,
            site=SITE,
            services=[ServiceCode.RESPONSIBILITY_COURSE],
            distance_km=1.5,
            explanation="test",
            answer_by=datetime.now(UTC) + timedelta(days=5),
        ),
    )


async def test_projection_counts_each_event_once_in_any_order_and_dead_letters_the_unreadable(
    isolated: Isolated,
) -> None:
    portal = isolated.service("portal")
    portal.start()
    await wait_started(portal)
    referral_id = f"ref-proj{isolated.suffix}"
    accepted = lille_referral(referral_id)
    routed = offer(referral_id, accepted.correlation_id)
    routed_topic = isolated.topic(topics.ROUTED)
    # The decision first, twice (a relay that crashed after publishing), then the admission.
    await isolated.kafka.send_event(routed_topic, routed)
    await isolated.kafka.send_event(routed_topic, routed)
    await isolated.kafka.send_raw(routed_topic, b"{not json", key=referral_id.encode())
    await isolated.kafka.send_event(isolated.topic(topics.ACCEPTED), accepted)

    schema = isolated.schema("portal")
    row = await eventually(
        lambda: isolated.db.fetchrow(
            f"SELECT * FROM {schema}.referrals WHERE referral_id = $1", referral_id
        ),
        # Both read: they come through two consumer groups, in either order.
        lambda r: r is not None and r["judicial_frame"] is not None and r["status"] == "offered",
        60,
        0.2,
        "the referral projected",
    )
    assert row["status"] == "offered"  # the admission, read later, does not undo the offer
    assert row["centre_id"] == "HDF-ARRAS"
    assert row["needed_services"] == ["responsibility_course"]
    assert row["answer_by"] == routed.data.answer_by
    dead = await eventually(
        lambda: isolated.kafka.read_all(isolated.topic(topics.PORTAL_DEAD_LETTER)),
        lambda found: len(found) == 1,
        60,
        0.2,
        "the unreadable record dead-lettered",
    )
    assert dead[0].json()["data"]["reason"] == "not_json"
    history = await isolated.db.fetch(
        f"SELECT kind FROM {schema}.referral_history WHERE referral_id = $1", referral_id
    )
    assert sorted(r["kind"] for r in history) == ["referral.accepted", "referral.routed"]
