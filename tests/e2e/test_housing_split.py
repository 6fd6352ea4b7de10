"""Care locally, housing by the national platform, end to end: a referral from Rennes needing a
responsibility course and eviction housing — no site within reach offers eviction housing — is
offered to the local centre for the care and to the national housing platform for the housing,
each answered on centres.responses with its own key; the platform receives the identity (its
webhook, and intake's API) for that referral, another centre does not.

Intake, routing and notifications run as real processes on the real Kafka and PostgreSQL; the
webhook receiver and the SMTP sink are the real local peers of ``aiguillage_demo.peers``.
"""

from __future__ import annotations

import json

from aiguillage_demo.peers import SmtpSink, WebhookReceiver
from aiguillage_demo.samples import make_referral
from aiguillage_schemas import topics
from aiguillage_schemas.vocabulary import ServiceCode
from tests.conftest import Isolated
from tests.e2e.test_identity_release import (
    ask,
    start_notifications_asking,
    start_with_identity_api,
)
from tests.e2e.test_timeline import aiguillage
from tests.support.routing_events import answer, path_report
from tests.support.waiting import eventually

PLATFORM = "PN-HEBERGEMENT-NATIONAL"
PLATFORM_CENTRE = "PN-HEBERGEMENT"
RENNES_CASE = 4  # tribunal-rennes, a resident of Rennes (35238)


async def test_care_goes_to_the_local_centre_and_housing_to_the_platform_each_answered(
    isolated: Isolated, hooks: WebhookReceiver, smtp: SmtpSink
) -> None:
    *_, port = await start_with_identity_api(isolated)  # both stopped by the fixture
    url = f"http://127.0.0.1:{port}/internal/v1/identity-releases"
    await start_notifications_asking(isolated, hooks, smtp, port)

    referral = make_referral(RENNES_CASE, referral_id=f"ref-split{isolated.suffix}")
    needs = [ServiceCode.RESPONSIBILITY_COURSE, ServiceCode.EVICTION_HOUSING]
    referral = referral.model_copy(
        update={"data": referral.data.model_copy(update={"needed_services": needs})}
    )
    await isolated.kafka.send_event(isolated.topic(topics.INTAKE), referral)

    routing_schema = isolated.schema("routing")

    async def state() -> dict[str, object] | None:
        row = await isolated.db.fetchrow(
            f"SELECT status, site_id, housing_status, housing_site_id FROM {routing_schema}"
            ".referrals WHERE referral_id = $1",
            referral.subject,
        )
        return dict(row) if row is not None else None

    offered = await eventually(
        state, lambda s: s is not None and s["status"] == "offered", 90, what="the split offers"
    )
    assert offered is not None
    care_site = str(offered["site_id"])
    assert care_site.endswith("-35")  # the care in the home département
    assert (offered["housing_status"], offered["housing_site_id"]) == ("offered", PLATFORM)
    care_centre = care_site.rsplit("-", 1)[0]

    # Each is offered its leg over its webhook, with the person: the platform for the housing.
    def offers_to(calls: list[object]) -> set[str]:
        return {
            c.json()["recipient"]["id"]  # type: ignore[attr-defined]
            for c in calls
            if c.json()["topic"] == "referral_offered"  # type: ignore[attr-defined]
            and "person" in c.json()  # type: ignore[attr-defined]
        }

    await eventually(
        lambda: hooks.accepted(),
        lambda calls: offers_to(list(calls)) == {care_centre, PLATFORM_CENTRE},
        120,
        what="both offers delivered with the identity",
    )
    housing_offer = next(
        c.json()
        for c in hooks.accepted()
        if c.json()["recipient"]["id"] == PLATFORM_CENTRE
        and c.json()["topic"] == "referral_offered"
    )
    assert housing_offer["facts"]["services"] == "hébergement (éviction du domicile)"
    assert housing_offer["person"]["last_name"] == referral.data.identity.last_name

    # Intake releases the identity to both holders, and to nobody else.
    assert (await ask(url, referral.subject, PLATFORM_CENTRE)).status_code == 200
    assert (await ask(url, referral.subject, care_centre)).status_code == 200
    assert (await ask(url, referral.subject, "HDF-ARRAS")).status_code == 403

    # Another centre cannot answer for the platform's housing offer.
    responses = isolated.topic(topics.CENTRE_RESPONSES)
    await isolated.kafka.send_event(
        responses, answer(referral.subject, PLATFORM, "accepted", centre="HDF-ARRAS")
    )
    # Each leg answered by its own centre, signed with its own key.
    await isolated.kafka.send_event(responses, answer(referral.subject, PLATFORM, "accepted"))
    await isolated.kafka.send_event(responses, answer(referral.subject, care_site, "accepted"))
    final = await eventually(
        state,
        lambda s: s is not None and (s["status"], s["housing_status"]) == ("placed", "placed"),
        90,
        what="care and housing both placed",
    )
    assert final is not None
    dead = await isolated.kafka.read_all(isolated.topic(topics.ROUTING_DEAD_LETTER))
    assert [d.json()["data"]["reason"] for d in dead] == ["not_this_centre"]

    events = [r.json() for r in await isolated.kafka.read_all(isolated.topic(topics.ROUTED))]
    kinds = [(e["event_type"], e["data"]["site"]["site_id"]) for e in events]
    assert ("referral.routed", care_site) in kinds
    assert ("referral.housing_offered", PLATFORM) in kinds
    assert ("referral.placed", care_site) in kinds
    assert ("referral.housing_updated", PLATFORM) in kinds
    # one decision, one place held at each leg's site, nothing else
    holds = await isolated.db.fetch(
        f"SELECT site_id, service FROM {routing_schema}.holds WHERE referral_id = $1 ORDER BY 1",
        referral.subject,
    )
    assert sorted((h["site_id"], h["service"]) for h in holds) == sorted(
        [(care_site, "responsibility_course"), (PLATFORM, "eviction_housing")]
    )

    # The platform reports the housing over: its place is given back, it may no longer fetch the
    # identity; the care goes on and its centre still may.
    await isolated.kafka.send_event(
        responses, path_report(referral.subject, PLATFORM, "path_completed")
    )
    await eventually(
        state,
        lambda s: s is not None and (s["status"], s["housing_status"]) == ("placed", "ended"),
        90,
        what="the housing leg ended, the care still placed",
    )
    await eventually(
        lambda: ask(url, referral.subject, PLATFORM_CENTRE),
        lambda reply: reply.status_code == 403,
        60,
        what="the platform no longer a holder",
    )
    assert (await ask(url, referral.subject, care_centre)).status_code == 200

    # The operators' timeline tells both legs, the platform named as the housing's actor.
    done = await aiguillage(isolated, "timeline", referral.subject, "--json")
    assert done.returncode == 0, done.stderr
    steps = [json.loads(line) for line in done.stdout.splitlines()]
    said = {(step["kind"], step["what"]) for step in steps}
    assert (
        "referral.housing_offered",
        f"housing offered to {PLATFORM}, care at {care_site} (split)",
    ) in said, done.stdout
    assert ("referral.housing_updated", f"housing at {PLATFORM}: ended") in said, done.stdout
