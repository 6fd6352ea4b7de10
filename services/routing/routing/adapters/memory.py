"""An in-memory routing store behind the RoutingUnitOfWork port, faithful to the PostgreSQL
adapter's rules (reservation guard, all-or-nothing, waiting-list rows, told positions).

Used by the unit tests (with rollback on error) and by the year benchmark (without: it runs the
service's own use cases on a simulated year). One process, one transaction at a time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import uuid
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Self

from aiguillage_common.unit_of_work import D
from aiguillage_schemas.envelope import Envelope
from aiguillage_schemas.events.routing_decisions import SiteRef
from aiguillage_schemas.vocabulary import ServiceCode
from routing.domain.directory import Capacity, Directory, Eligibility, Site
from routing.domain.referral import ReferralState
from routing.domain.waiting import Waiting
from routing.use_cases.ports import DecisionRow


@dataclasses.dataclass
class WaitRow:
    site_id: str
    service: ServiceCode
    urgency_rank: int
    arrived_at: datetime
    seq: int
    home: str
    decision_id: uuid.UUID
    told_position: int | None = None


@dataclasses.dataclass
class RoutingStore:
    """``directory.capacity`` is this store's own mutable dict: counts change in place, so the
    directory's indexes (by département and service) stay valid."""

    directory: Directory
    transactional: bool = True  # keep a copy at each transaction start, to roll back on error
    keep_decisions: bool = True
    claims: set[tuple[str, uuid.UUID]] = dataclasses.field(default_factory=set)
    outbox: list[tuple[str, Envelope]] = dataclasses.field(default_factory=list)
    referrals: dict[str, ReferralState] = dataclasses.field(default_factory=dict)
    holds: dict[str, list[tuple[str, ServiceCode]]] = dataclasses.field(default_factory=dict)
    waitlist: dict[str, WaitRow] = dataclasses.field(default_factory=dict)
    decisions: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    seq: int = 0
    commits: int = 0
    # Set while a consumer's batch runs (``batch``): what its units of work defer to its end.
    batch_deferred: dict[object, Any] | None = None

    def __post_init__(self) -> None:
        self.directory = dataclasses.replace(self.directory, capacity=dict(self.directory.capacity))

    @property
    def capacity(self) -> dict[tuple[str, ServiceCode], Capacity]:
        return self.directory.capacity  # type: ignore[return-value]

    def snapshot(self) -> dict[str, Any]:
        return {
            "capacity": dict(self.capacity),
            "claims": set(self.claims),
            "outbox": list(self.outbox),
            "referrals": dict(self.referrals),
            "holds": {k: list(v) for k, v in self.holds.items()},
            "waitlist": {k: dataclasses.replace(v) for k, v in self.waitlist.items()},
            "decisions": list(self.decisions),
            "seq": self.seq,
        }

    def restore(self, saved: dict[str, Any]) -> None:
        capacity = saved.pop("capacity")
        self.capacity.clear()
        self.capacity.update(capacity)
        for key, value in saved.items():
            setattr(self, key, value)

    def events(self, kind: type[Envelope] | None = None) -> list[Envelope]:
        return [e for _, e in self.outbox if kind is None or isinstance(e, kind)]

    def set_capacity(self, site_id: str, service: ServiceCode, **changes: Any) -> None:
        key = (site_id, service)
        self.capacity[key] = dataclasses.replace(self.capacity[key], **changes)


@contextlib.asynccontextmanager
async def batch(store: RoutingStore) -> AsyncIterator[None]:
    """Units of work opened inside run as in one consumer batch: what they defer (``deferred``)
    runs once when the block ends, as the PostgreSQL adapter does before the batch commits."""
    store.batch_deferred = {}
    try:
        yield
        pending, store.batch_deferred = store.batch_deferred, None
        for deferred in pending.values():
            await deferred.run()  # as the batch ends: no longer deferred
    finally:
        store.batch_deferred = None


class MemoryRoutingUow:
    def __init__(self, store: RoutingStore) -> None:
        self.store = store
        self._saved: dict[str, Any] | None = None

    async def __aenter__(self) -> Self:
        if self.store.transactional:
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

    def deferred(self, key: object, make: Callable[[], D]) -> D | None:
        pending = self.store.batch_deferred
        if pending is None:
            return None
        found: D | None = pending.get(key)
        if found is None:
            found = pending[key] = make()
        return found

    async def claim(self, consumer: str, event_id: uuid.UUID) -> bool:
        if (consumer, event_id) in self.store.claims:
            return False
        self.store.claims.add((consumer, event_id))
        return True

    async def emit(self, topic: str, event: Envelope) -> None:
        if not self.store.transactional or all(
            e.event_id != event.event_id for _, e in self.store.outbox
        ):
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

    async def site_centre(self, site_id: str) -> str | None:
        site = self.store.directory.site(site_id)
        return site.centre_id if site is not None else None

    async def set_capacity(
        self, site_id: str, service: ServiceCode, places_total: int, as_of: datetime
    ) -> bool:
        current = self.store.capacity.get((site_id, service))
        if current is None or current.updated_at >= as_of:
            return False
        self.store.set_capacity(
            site_id, service, places_total=places_total, updated_at=as_of, assumed=False
        )
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

    async def add_referral(self, state: ReferralState) -> ReferralState | None:
        known = self.store.referrals.get(state.referral_id)
        if known is None:
            self.store.referrals[state.referral_id] = state
        return known

    async def due_offer(self, now: datetime) -> ReferralState | None:
        due = [
            r
            for r in self.store.referrals.values()
            if r.status == "offered" and r.answer_by is not None and r.answer_by <= now
        ]
        return min(due, key=lambda r: r.answer_by or now) if due else None

    async def due_housing(self, now: datetime) -> ReferralState | None:
        due = [
            r
            for r in self.store.referrals.values()
            if r.housing_status == "offered"
            and r.housing_answer_by is not None
            and r.housing_answer_by <= now
        ]
        return min(due, key=lambda r: r.housing_answer_by or now) if due else None

    async def reserve(
        self, referral_id: str, site_id: str, services: Sequence[ServiceCode]
    ) -> bool:
        capacity = self.store.capacity
        wanted = sorted(set(services))
        for service in wanted:
            held = capacity.get((site_id, service))
            if held is None or held.places_held >= held.places_total:
                return False
        for service in wanted:
            held_now = capacity[(site_id, service)].places_held
            self.store.set_capacity(site_id, service, places_held=held_now + 1)
        self.store.holds[referral_id] = [
            *self.store.holds.get(referral_id, []),
            *((site_id, s) for s in wanted),
        ]
        return True

    async def release(
        self, referral_id: str, site_id: str | None = None
    ) -> list[tuple[str, ServiceCode]]:
        held = self.store.holds.pop(referral_id, [])
        freed = sorted(h for h in held if site_id is None or h[0] == site_id)
        kept = [h for h in held if h not in freed]
        if kept:
            self.store.holds[referral_id] = kept
        for freed_site, service in freed:
            count = self.store.capacity[(freed_site, service)].places_held
            self.store.set_capacity(freed_site, service, places_held=count - 1)
        return freed

    async def waitlist_add(
        self, state: ReferralState, site_id: str, service: ServiceCode, decision_id: uuid.UUID
    ) -> None:
        row = self.store.waitlist.get(state.referral_id)
        if row is not None:  # moved: keeps its entry order; its new notice is told
            if row.site_id != site_id:
                row.told_position = None
            row.site_id, row.service, row.decision_id = site_id, service, decision_id
            return
        self.store.seq += 1
        self.store.waitlist[state.referral_id] = WaitRow(
            site_id,
            service,
            state.urgency_rank,
            state.arrived_at,
            self.store.seq,
            state.accepted.residence_departement,
            decision_id,
        )

    async def waitlist_remove(self, referral_id: str) -> None:
        self.store.waitlist.pop(referral_id, None)

    async def waiting_near(self, departements: Collection[str]) -> list[Waiting]:
        wanted = set(departements)
        found = []
        for referral_id, row in self.store.waitlist.items():
            if row.home not in wanted:
                continue
            ref = self.store.referrals[referral_id]
            found.append(
                Waiting(
                    referral_id=referral_id,
                    correlation_id=ref.correlation_id,
                    accepted=ref.accepted,
                    urgency_rank=row.urgency_rank,
                    arrived_at=row.arrived_at,
                    seq=row.seq,
                    tried=ref.tried,
                    site_id=row.site_id,
                    service=row.service,
                    told_position=row.told_position,
                    decision_id=row.decision_id,
                )
            )
        found.sort(key=lambda w: (w.urgency_rank, w.arrived_at, w.seq))
        return found

    async def waitlist_told(self, referral_id: str, position: int) -> None:
        row = self.store.waitlist.get(referral_id)
        if row is not None:
            row.told_position = position

    async def waiting_at(self, site_id: str) -> list[str]:
        entries = [
            (row.urgency_rank, row.arrived_at, row.seq, rid)
            for rid, row in self.store.waitlist.items()
            if row.site_id == site_id
        ]
        return [rid for *_, rid in sorted(entries)]

    async def site_reach(self, site_id: str) -> list[str]:
        site = self.store.directory.site(site_id)
        return sorted({*site.serves, site.departement}) if site else []

    async def record_decision(self, row: DecisionRow) -> None:
        if self.store.keep_decisions:
            self.store.decisions.append(
                {
                    "referral_id": row.referral_id,
                    "outcome": row.outcome,
                    "site_id": row.site.site_id if row.site else None,
                    "attempt": row.attempt,
                    "record": row.record,
                }
            )
