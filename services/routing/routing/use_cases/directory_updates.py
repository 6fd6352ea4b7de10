"""Use case on ``directory.updates``: centres and operators change capacity, services and sites.

An update older than what is stored (by ``as_of``) changes nothing, so reordered or replayed
updates cannot bring back a stale count. Places that open are offered to the waiting list at once.
"""

from __future__ import annotations

from aiguillage_common.codec import InvalidMessage, Problem
from aiguillage_schemas.envelope import Envelope
from aiguillage_schemas.events.centres import (
    CapacityUpdated,
    ServiceClosed,
    ServiceOpened,
    SiteAdded,
    SiteClosed,
)
from aiguillage_schemas.vocabulary import RejectionReason
from routing.domain.directory import Site
from routing.use_cases.placement import drain, requeue_waiting_at
from routing.use_cases.ports import CONSUMER, RoutingContext

DIRECTORY_CONSUMER = CONSUMER + ".directory"


def _unknown(what: str, path: str) -> InvalidMessage:
    reason = RejectionReason.UNKNOWN_SITE if what == "site" else RejectionReason.INVALID_VALUE
    return InvalidMessage(Problem(reason, f"the directory has no such {what}", path))


async def apply_directory_update(event: Envelope, ctx: RoutingContext) -> bool:
    """Returns True when the directory changed."""
    now = ctx.clock()
    async with ctx.uow_factory() as uow:
        if not await uow.claim(DIRECTORY_CONSUMER, event.event_id):
            return False
        if isinstance(event, SiteAdded):
            data = event.data
            if not await uow.centre_exists(data.centre_id):
                raise _unknown("centre", "data.centre_id")
            commune = ctx.geography.communes.get(data.commune_insee)
            coordinates = ctx.geography.coordinates(data.commune_insee)
            if commune is None or coordinates is None:
                raise InvalidMessage(
                    Problem(
                        RejectionReason.UNKNOWN_COMMUNE, "unknown commune", "data.commune_insee"
                    )
                )
            return await uow.add_site(
                Site(
                    site_id=data.site_id,
                    centre_id=data.centre_id,
                    commune_insee=data.commune_insee,
                    departement=commune.departement,
                    lat=coordinates[0],
                    lon=coordinates[1],
                    services=frozenset(),
                    serves=frozenset(data.serves),
                    address_confidential=data.address_confidential,
                    languages=frozenset(data.languages),
                )
            )
        site_id: str = event.data.site_id  # type: ignore[attr-defined]
        if not await uow.site_exists(site_id):
            raise _unknown("site", "data.site_id")
        if isinstance(event, SiteClosed | ServiceClosed):
            # Open offers there still get an answer or time out; no new offer goes there, and
            # whoever waited there is decided again.
            if isinstance(event, SiteClosed):
                changed = await uow.close_site(site_id, event.data.as_of)
            else:
                changed = await uow.close_service(site_id, event.data.service, event.data.as_of)
            if changed:
                await requeue_waiting_at(uow, ctx, site_id, event.event_id, now)
            return changed
        if isinstance(event, CapacityUpdated):
            data_c = event.data
            changed = await uow.set_capacity(
                site_id, data_c.service, data_c.places_total, data_c.as_of
            )
            if changed:
                await drain(uow, ctx, [(site_id, data_c.service)], event.event_id, now)
            return changed
        if isinstance(event, ServiceOpened):
            data_o = event.data
            changed = await uow.open_service(
                site_id, data_o.service, data_o.places_total, data_o.eligibility, data_o.as_of
            )
            if changed:
                await drain(uow, ctx, [(site_id, data_o.service)], event.event_id, now)
            return changed
        raise InvalidMessage(
            Problem(RejectionReason.UNKNOWN_EVENT_TYPE, "not a directory update", "event_type")
        )
