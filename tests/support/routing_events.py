"""Events routing tests feed it (accepted referrals, centres' answers, directory updates), and
helpers to watch its consumer groups."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient

from aiguillage_schemas.events.centres import (
    Actor,
    CapacityUpdated,
    CapacityUpdatedData,
    OfferAnswered,
    PathReport,
    SiteAdded,
    SiteAddedData,
)
from aiguillage_schemas.events.referral_lifecycle import (
    ReferralAccepted,
    ReferralAcceptedData,
    ReferralCancelled,
    ReferralCancelledData,
)
from aiguillage_schemas.vocabulary import JudicialFrame, PrescriberKind, ServiceCode, Urgency
from tests.support.waiting import eventually

COURSE = ServiceCode.RESPONSIBILITY_COURSE
# Who changes capacity in the tests: an operator through the portal (signed with its key).
TEST_OPERATOR = Actor(kind="operator", id="op-tests")


def lille_referral(
    referral_id: str,
    urgency: Urgency = Urgency.STANDARD,
    needs: Sequence[ServiceCode] = (COURSE,),
    **envelope: Any,
) -> ReferralAccepted:
    """An accepted referral from the Lille prosecutor for someone living in Lille."""
    return ReferralAccepted(
        source="referral-intake",
        correlation_id=envelope.pop("correlation_id", uuid.uuid4()),
        subject=referral_id,
        **envelope,
        data=ReferralAcceptedData(
            prescriber_id="parquet-tj-lille",
            prescriber_kind=PrescriberKind.PARQUET,
            judicial_frame=JudicialFrame.ALTERNATIVE_ORIENTATION,
            residence_commune_insee="59350",
            residence_departement="59",
            needed_services=list(needs),
            urgency=urgency,
            language="fr",
            interpreter_needed=False,
        ),
    )


def lille_cancelled(referral_id: str, correlation_id: uuid.UUID | None = None) -> ReferralCancelled:
    """The Lille prosecutor's cancellation of ``referral_id``, as intake forwards it."""
    return ReferralCancelled(
        source="referral-intake",
        correlation_id=correlation_id or uuid.uuid4(),
        subject=referral_id,
        data=ReferralCancelledData(
            prescriber_id="parquet-tj-lille",
            prescriber_kind=PrescriberKind.PARQUET,
            reason="prescriber_decision",
        ),
    )


def capacity(
    site_id: str,
    places_total: int,
    service: ServiceCode = COURSE,
    actor: Actor | None = TEST_OPERATOR,
) -> CapacityUpdated:
    """A count set through the portal by ``actor`` (``Kafka.send_event`` signs it with the
    portal's key; with no actor, nothing says who may sign it and it goes unsigned)."""
    return CapacityUpdated(
        source="portal",
        correlation_id=uuid.uuid4(),
        subject=site_id,
        data=CapacityUpdatedData(
            site_id=site_id,
            service=service,
            places_total=places_total,
            as_of=datetime.now(UTC),
            actor=actor,
        ),
    )


def site_added(
    site_id: str,
    centre_id: str,
    as_of: datetime,
    commune_insee: str = "59512",
    serves: Sequence[str] = ("59",),
    actor: Actor | None = None,
    source: str = "centre",
) -> SiteAdded:
    """A new site of ``centre_id`` (Roubaix, serving the Nord, unless told otherwise)."""
    return SiteAdded(
        source=source,
        correlation_id=uuid.uuid4(),
        subject=site_id,
        data=SiteAddedData(
            site_id=site_id,
            centre_id=centre_id,
            commune_insee=commune_insee,
            serves=list(serves),
            as_of=as_of,
            actor=actor,
        ),
    )


def answer(
    referral_id: str,
    site_id: str,
    verdict: str,
    reason: str | None = None,
    centre: str = "",
    actor: Actor | None = None,
) -> OfferAnswered:
    """A centre's answer: ``Kafka.send_event`` signs it with that centre's key, or the
    portal's when ``actor`` names a portal user."""
    centre_id = centre or site_id.rsplit("-", 1)[0]
    return OfferAnswered.model_validate(
        {
            "source": centre_id,
            "correlation_id": uuid.uuid4(),
            "subject": referral_id,
            "data": {
                "centre_id": centre_id,
                "site_id": site_id,
                "answer": verdict,
                "decline_reason": reason,
                "actor": actor.model_dump() if actor is not None else None,
            },
        }
    )


def path_report(
    referral_id: str, site_id: str, report: str, centre: str = "", **extra: Any
) -> PathReport:
    """A centre reports a step of the path of a referral placed at ``site_id`` (today's date)."""
    centre_id = centre or site_id.rsplit("-", 1)[0]
    return PathReport.model_validate(
        {
            "source": centre_id,
            "correlation_id": uuid.uuid4(),
            "subject": referral_id,
            "data": {
                "centre_id": centre_id,
                "site_id": site_id,
                "report": report,
                "occurred_on": datetime.now(UTC).date().isoformat(),
                **extra,
            },
        }
    )


async def group_members(bootstrap: str, group: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        responses = await admin.describe_consumer_groups([group])
    finally:
        await admin.close()
    for response in responses:
        for entry in response.to_object()["groups"]:
            if entry["group"] == group and entry["error_code"] == 0 and entry["state"] == "Stable":
                members: list[Any] = entry["members"]
                return len(members)
    return 0


async def wait_group(bootstrap: str, group: str, members: int, timeout_s: float = 60) -> None:
    await eventually(
        lambda: group_members(bootstrap, group),
        lambda n: n == members,
        timeout_s,
        0.5,
        f"{members} stable members in {group}",
    )
