"""An in-memory routing store behind the RoutingUnitOfWork port, faithful to the PostgreSQL
adapter's rules (reservation guard, all-or-nothing, waiting-list order, rollback on error)."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Collection, Sequence
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Self

from aiguillage_common.geography import Geography
from aiguillage_schemas.envelope import Envelope
from aiguillage_schemas.events.routing_decisions import SiteRef
from aiguillage_schemas.vocabulary import ServiceCode
from routing.domain.decision import Policy
from routing.domain.directory import Capacity, Directory, Eligibility, Site
from routing.domain.referral import ReferralState
from routing.use_cases.ports import DecisionRow, RoutingContext

T0 = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)


@dataclasses.dataclass
class RoutingStore:
    directory: Directory
    claims: set[tuple[str, uuid.UUID]] = dataclasses.field(default_factory=set)
    outbox: list[tuple[str, Envelope]] = dataclasses.field(default_factory=list)
    referrals: dict[str, ReferralState] = dataclasses.field(default_factory=dict)
    holds: dict[str, list[tuple[str, ServiceCode]]] = dataclasses.field(default_factory=dict)
    waitlist: dict[str, tuple[str, ServiceCode, int, datetime, int, str]] = dataclasses.field(
        default_factory=dict
    )
    decisions: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    seq: int = 0
    commits: int = 0

    def snapshot(self) -> dict[str, Any]:
        return {
            "directory": self.directory,
            "claims": set(self.claims),
            "outbox": list(self.outbox),
            "referrals": dict(self.referrals),
            "holds": {k: list(v) for k, v in self.holds.items()},
            "waitlist": dict(self.waitlist),
            "decisions": list(self.decisions),
            "seq": self.seq,
        }

    def restore(self, saved: dict[str, Any]) -> None:
        for key, value in saved.items():
            setattr(self, key, value)

    def events(self, kind: type[Envelope] | None = None) -> list[Envelope]:
        return [e for _, e in self.outbox if kind is None or isinstance(e, kind)]

    def set_capacity(self, site_id: str, service: ServiceCode, **changes: Any) -> None:
        capacity = dict(self.directory.capacity)
        capacity[(site_id, service)] = dataclasses.replace(capacity[(site_id, service)], **changes)
        self.directory = dataclasses.replace(self.directory, capacity=capacity)


class InMemoryRoutingUow:
    def __init__(self, store: RoutingStore) -> None:
        self.store = store
        self._saved: dict[str, Any] | None = None

    async def __aenter__(self) -> Self:
        self._saved = self.store.snapshot()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is not None and self._saved is not None:
            self.store.restore(self._saved)
        elif exc_type is None:
            self.store.commits += 1

    async def claim(self, consumer: str, event_id: uuid.UUID) -> bool:
        if (consumer, event_id) in self.store.claims:
            return False
        self.store.claims.add((consumer, event_id))
        return True

    async def emit(self, topic: str, event: Envelope) -> None:
        if all(e.event_id != event.event_id for _, e in self.store.outbox):
            self.store.outbox.append((topic, event))

    async def directory_snapshot(self, departements: Collection[str]) -> Directory:
        return self.store.directory

    async def site_ref(self, site_id: str) -> SiteRef | None:
        site = self.store.directory.site(site_id)
        if site is None:
            return None
        return SiteRef(
            centre_id=site.centre_id,
            centre_name=self.store.directory.centre_of(site).name,
            site_id=site.site_id,
            site_commune_insee=site.commune_insee,
            site_departement=site.departement,
            address_confidential=site.address_confidential,
        )

    async def set_capacity(
        self, site_id: str, service: ServiceCode, places_total: int, as_of: datetime
    ) -> bool:
        current = self.store.directory.capacity.get((site_id, service))
        if current is None or current.updated_at >= as_of:
            return False
        self.store.set_capacity(site_id, service, places_total=places_total, updated_at=as_of)
        return True

    async def open_service(
        self,
        site_id: str,
        service: ServiceCode,
        places_total: int,
        eligibility: Eligibility,
        as_of: datetime,
    ) -> bool:
        raise NotImplementedError

    async def close_service(self, site_id: str, service: ServiceCode, as_of: datetime) -> bool:
        raise NotImplementedError

    async def site_exists(self, site_id: str) -> bool:
        return self.store.directory.site(site_id) is not None

    async def centre_exists(self, centre_id: str) -> bool:
        return centre_id in self.store.directory.centres

    async def add_site(self, site: Site) -> bool:
        raise NotImplementedError

    async def close_site(self, site_id: str, as_of: datetime) -> bool:
        raise NotImplementedError

    async def get_referral(self, referral_id: str) -> ReferralState | None:
        return self.store.referrals.get(referral_id)

    async def save_referral(self, state: ReferralState) -> None:
        self.store.referrals[state.referral_id] = state

    async def due_offer(self, now: datetime) -> ReferralState | None:
        due = [
            r
            for r in self.store.referrals.values()
            if r.status == "offered" and r.answer_by is not None and r.answer_by <= now
        ]
        return min(due, key=lambda r: r.answer_by or now) if due else None

    async def reserve(
        self, referral_id: str, site_id: str, services: Sequence[ServiceCode]
    ) -> bool:
        directory = self.store.directory
        wanted = sorted(set(services))
        for service in wanted:
            capacity = directory.capacity.get((site_id, service))
            if capacity is None or capacity.places_held >= capacity.places_total:
                return False
        for service in wanted:
            held = directory.capacity[(site_id, service)].places_held
            self.store.set_capacity(site_id, service, places_held=held + 1)
        self.store.holds[referral_id] = [(site_id, s) for s in wanted]
        return True

    async def release(self, referral_id: str) -> list[tuple[str, ServiceCode]]:
        freed = sorted(self.store.holds.pop(referral_id, []))
        for site_id, service in freed:
            held = self.store.directory.capacity[(site_id, service)].places_held
            self.store.set_capacity(site_id, service, places_held=held - 1)
        return freed

    async def waitlist_add(self, state: ReferralState, site_id: str, service: ServiceCode) -> int:
        self.store.seq += 1
        self.store.waitlist[state.referral_id] = (
            site_id,
            service,
            state.urgency_rank,
            state.arrived_at,
            self.store.seq,
            state.accepted.residence_departement,
        )
        order = await self.waitlist_order(site_id, service)
        return order.index(state.referral_id) + 1

    async def waitlist_remove(self, referral_id: str) -> None:
        self.store.waitlist.pop(referral_id, None)

    async def waitlist_order(self, site_id: str, service: ServiceCode) -> list[str]:
        entries = [
            (rank, arrived, seq, rid)
            for rid, (s, svc, rank, arrived, seq, _) in self.store.waitlist.items()
            if s == site_id and svc == service
        ]
        return [rid for *_, rid in sorted(entries)]

    async def waiting_for(
        self, service: ServiceCode, departements: Collection[str], limit: int
    ) -> list[str]:
        entries = [
            (rank, arrived, seq, rid)
            for rid, (_, svc, rank, arrived, seq, home) in self.store.waitlist.items()
            if svc == service and home in departements
        ]
        return [rid for *_, rid in sorted(entries)][:limit]

    async def waiting_at(self, site_id: str) -> list[str]:
        entries = [
            (rank, arrived, seq, rid)
            for rid, (s, _, rank, arrived, seq, _) in self.store.waitlist.items()
            if s == site_id
        ]
        return [rid for *_, rid in sorted(entries)]

    async def places_open(self, site_id: str, service: ServiceCode) -> int:
        capacity = self.store.directory.capacity.get((site_id, service))
        return max(capacity.places_total - capacity.places_held, 0) if capacity else 0

    async def site_reach(self, site_id: str) -> list[str]:
        site = self.store.directory.site(site_id)
        return sorted({*site.serves, site.departement}) if site else []

    async def record_decision(self, row: DecisionRow) -> None:
        self.store.decisions.append(
            {
                "referral_id": row.referral_id,
                "outcome": row.outcome,
                "site_id": row.site.site_id if row.site else None,
                "attempt": row.attempt,
                "record": row.record,
            }
        )


class Clock:
    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def fresh_directory(directory: Directory, at: datetime = T0) -> Directory:
    """The seed directory stamped at ``at`` (the fixture's was stamped at load time)."""
    return dataclasses.replace(
        directory,
        capacity={
            key: dataclasses.replace(c, updated_at=at) for key, c in directory.capacity.items()
        },
    )


def routing_context(
    store: RoutingStore,
    geography: Geography,
    clock: Clock | None = None,
    policy: Policy | None = None,
    **extra: Any,
) -> RoutingContext:
    return RoutingContext(
        uow_factory=lambda: InMemoryRoutingUow(store),
        geography=geography,
        policy=policy or Policy(),
        decisions_topic="routed",
        clock=clock or Clock(),
        **extra,
    )


def capacity_of(store: RoutingStore, site_id: str, service: ServiceCode) -> Capacity:
    return store.directory.capacity[(site_id, service)]
