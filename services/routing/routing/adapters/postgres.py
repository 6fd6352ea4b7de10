"""PostgreSQL side of routing: directory, referrals, holds, waiting lists and decision records.

Everything runs inside the unit of work's transaction. Reservation is one statement: the needed
services' rows with room (``places_held < places_total``) are locked in service order, so two
transactions lock rows in the same order, and taken only if every needed service has room, so a
half-reserved referral never exists. Inside a consumer's batch, the sites are read once per batch
(the counts at every decision) and decision records are written with the batch's other rows.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import uuid
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

import asyncpg

from aiguillage_common.unit_of_work import PostgresUnitOfWork, SharedTransaction
from aiguillage_schemas.events.referral_lifecycle import ReferralAcceptedData
from aiguillage_schemas.events.routing_decisions import SiteRef
from aiguillage_schemas.vocabulary import ServiceCode
from routing.domain.directory import Capacity, Centre, Directory, Eligibility, Site
from routing.domain.referral import ReferralState
from routing.domain.waiting import Waiting
from routing.use_cases.ports import DecisionRow

_WAITLIST_LOCK = 0x52_4F_55_54_57_41_49_54  # "ROUTWAIT"
_SITE_COLUMNS = (
    "s.site_id, s.centre_id, s.commune_insee, s.departement, s.lat, s.lon, s.serves,"
    " s.address_confidential, s.assumed, s.languages, s.national,"
    " c.name, c.region_code, c.departements, c.coordinator_contact"
)


def _eligibility(text: str) -> Eligibility:
    return "judicial_only" if text == "judicial_only" else "all"


async def read_directory(
    connection: asyncpg.pool.PoolConnectionProxy | asyncpg.Connection,
    departements: Collection[str] | None = None,
) -> Directory:
    """Open sites (serving or lying in ``departements``, or all) with their open services."""
    where = "s.closed_at IS NULL"
    args: list[object] = []
    if departements is not None:
        where += " AND (s.serves && $1::text[] OR s.departement = ANY($1::text[]))"
        args.append(sorted(departements))
    site_rows = await connection.fetch(
        f"SELECT {_SITE_COLUMNS} FROM sites s JOIN centres c USING (centre_id) WHERE {where}"  # noqa: S608 - fixed text
        " ORDER BY s.site_id",
        *args,
    )
    capacity, services = await read_capacity(connection, [row["site_id"] for row in site_rows])
    centres: dict[str, Centre] = {}
    sites: list[Site] = []
    for row in site_rows:
        centres[row["centre_id"]] = Centre(
            row["centre_id"],
            row["name"],
            row["region_code"],
            frozenset(row["departements"]),
            row["coordinator_contact"],
        )
        sites.append(
            Site(
                site_id=row["site_id"],
                centre_id=row["centre_id"],
                commune_insee=row["commune_insee"],
                departement=row["departement"],
                lat=row["lat"],
                lon=row["lon"],
                services=frozenset(services.get(row["site_id"], ())),
                serves=frozenset(row["serves"]),
                address_confidential=row["address_confidential"],
                assumed=row["assumed"],
                languages=frozenset(row["languages"]),
                national=row["national"],
            )
        )
    return Directory(centres=centres, sites=tuple(sites), capacity=capacity)


# Open sites with an open service whose count is older than the freshness window.
_STALE_SITES = (
    "SELECT count(DISTINCT ss.site_id) FROM site_services ss JOIN sites s USING (site_id)"
    " WHERE s.closed_at IS NULL AND ss.is_open"
    " AND ss.updated_at < clock_timestamp() - make_interval(secs => $1)"
)


async def count_stale_sites(
    connection: asyncpg.Pool | asyncpg.pool.PoolConnectionProxy, freshness_s: float
) -> int:
    """Open sites with at least one open service whose capacity is stale (metrics, alerting)."""
    return int(await connection.fetchval(_STALE_SITES, freshness_s) or 0)


async def read_decisions(
    connection: asyncpg.pool.PoolConnectionProxy | asyncpg.Connection, referral_id: str
) -> list[dict[str, Any]]:
    """Every decision taken for a referral, oldest first, as ``aiguillage decision`` prints them
    (and ``aiguillage timeline`` reads them): outcome, site, reason, the full record."""
    rows = await connection.fetch(
        "SELECT decision_id, attempt, outcome, site_id, centre_id, distance_km, reason,"
        " explanation, policy_version, record, caused_by_event_id, decided_at"
        " FROM decisions WHERE referral_id = $1 ORDER BY decided_at, attempt",
        referral_id,
    )
    return [
        {
            **{k: row[k] for k in ("attempt", "outcome", "site_id", "centre_id", "distance_km")},
            "reason": row["reason"],
            "decision_id": str(row["decision_id"]),
            "explanation": row["explanation"],
            "policy_version": row["policy_version"],
            "caused_by_event_id": str(row["caused_by_event_id"]),
            "decided_at": row["decided_at"].isoformat(),
            "record": json.loads(row["record"]) if row["record"] else None,
        }
        for row in rows
    ]


async def read_capacity(
    connection: asyncpg.pool.PoolConnectionProxy | asyncpg.Connection, site_ids: list[str]
) -> tuple[dict[tuple[str, ServiceCode], Capacity], dict[str, set[ServiceCode]]]:
    """The open services of ``site_ids`` with their places, and each site's open services."""
    rows = await connection.fetch(
        "SELECT site_id, service, places_total, places_held, eligibility, assumed, updated_at"
        " FROM site_services WHERE is_open AND site_id = ANY($1::text[])",
        site_ids,
    )
    capacity: dict[tuple[str, ServiceCode], Capacity] = {}
    services: dict[str, set[ServiceCode]] = {}
    for row in rows:
        service = _SERVICES[row["service"]]  # a dict lookup: an Enum call costs a microsecond
        services.setdefault(row["site_id"], set()).add(service)
        capacity[(row["site_id"], service)] = Capacity(
            places_total=row["places_total"],
            places_held=row["places_held"],
            updated_at=row["updated_at"],
            eligibility=_eligibility(row["eligibility"]),
            assumed=row["assumed"],
        )
    return capacity, services


_SERVICES = {service.value: service for service in ServiceCode}


class _BatchDirectory:
    """The sites and centres read once per consumer batch (they change a few times a year, by
    directory updates, which forget this copy in their own batch). Places are never taken from
    it: every snapshot reads the counts and open services of its sites afresh. The first
    snapshot of a batch reads its territory only (a batch of one record, at low rates, needs no
    more); the second reads every site once for the rest of the batch."""

    def __init__(self, directory: Directory) -> None:
        self.centres = directory.centres
        self._directory = directory

    def near(self, departements: Collection[str]) -> tuple[Site, ...]:
        """As ``read_directory`` selects them (serving or lying in ``departements``), in its
        order."""
        return self._directory.territory(departements)


_FIRST_SNAPSHOT = "routing.first_directory_snapshot"  # the batch has read one territory
_CAPACITY = "routing.capacity"  # site id -> its open services' places, in this batch
# Every site's centre (closed sites too), read once per batch from its second record on (a batch
# of one record reads the one site it names): each record of a centre topic asks whose site it
# names. A site never changes centre; one added in the batch joins the copy.
_SITE_CENTRES = "routing.site_centres"
_FIRST_OWNER = "routing.first_site_centre"  # the batch has looked one site's centre up
_INSERT_DECISION = (
    "INSERT INTO decisions (referral_id, decision_id, outcome, site_id, centre_id,"
    " distance_km, reason, explanation, caused_by_event_id, correlation_id, attempt,"
    " policy_version, record)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13::jsonb)"
    " ON CONFLICT (decision_id) DO NOTHING"
)


async def _write_decisions(
    rows: list[tuple[object, ...]], connection: asyncpg.pool.PoolConnectionProxy
) -> None:
    if rows:
        await connection.executemany(_INSERT_DECISION, rows)  # pipelined: one round trip


async def seed_directory(
    connection: asyncpg.pool.PoolConnectionProxy | asyncpg.Connection, directory: Directory
) -> int:
    """Insert what is missing; never overwrites what centres reported since. Returns the number
    of site services inserted (0 when the directory was already loaded)."""
    async with connection.transaction():
        await connection.executemany(
            "INSERT INTO centres (centre_id, name, region_code, departements, coordinator_contact)"
            " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (centre_id) DO NOTHING",
            [
                (c.centre_id, c.name, c.region_code, sorted(c.departements), c.coordinator_contact)
                for c in directory.centres.values()
            ],
        )
        await connection.executemany(
            "INSERT INTO sites (site_id, centre_id, commune_insee, departement, lat, lon, serves,"
            " address_confidential, assumed, languages, national)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
            " ON CONFLICT (site_id) DO NOTHING",
            [
                (
                    s.site_id,
                    s.centre_id,
                    s.commune_insee,
                    s.departement,
                    s.lat,
                    s.lon,
                    sorted(s.serves),
                    s.address_confidential,
                    s.assumed,
                    sorted(s.languages),
                    s.national,
                )
                for s in directory.sites
            ],
        )
        inserted = 0
        for (site_id, service), capacity in sorted(directory.capacity.items()):
            done = await connection.fetchval(
                "INSERT INTO site_services (site_id, service, places_total, eligibility, assumed,"
                " updated_at) VALUES ($1, $2, $3, $4, $5, $6)"
                " ON CONFLICT (site_id, service) DO NOTHING RETURNING true",
                site_id,
                str(service),
                capacity.places_total,
                capacity.eligibility,
                capacity.assumed,
                capacity.updated_at,
            )
            inserted += bool(done)
    return inserted


class PostgresRoutingUnitOfWork(PostgresUnitOfWork):
    # -- directory -------------------------------------------------------------------------
    async def directory_snapshot(self, departements: Collection[str]) -> Directory:
        batch = self._batch
        if batch is None:
            return await read_directory(self.connection, departements)
        known: _BatchDirectory | None = batch.extensions.get(_BatchDirectory)
        if known is None:
            if _FIRST_SNAPSHOT not in batch.extensions:
                batch.extensions[_FIRST_SNAPSHOT] = True
                return await read_directory(self.connection, departements)
            known = batch.extensions[_BatchDirectory] = _BatchDirectory(
                await read_directory(self.connection)
            )
        near = known.near(departements)
        capacity, services = await self._batch_capacity(batch, [s.site_id for s in near])
        sites = tuple(
            site
            if site.services == services.get(site.site_id, frozenset())
            else dataclasses.replace(site, services=frozenset(services.get(site.site_id, ())))
            for site in near
        )
        return Directory(centres=known.centres, sites=sites, capacity=capacity)

    async def _batch_capacity(
        self, batch: SharedTransaction, site_ids: list[str]
    ) -> tuple[dict[tuple[str, ServiceCode], Capacity], dict[str, set[ServiceCode]]]:
        """The places of ``site_ids`` as this batch's transaction sees them: each site is read
        once per batch and then kept up to date with the batch's own holds and releases (a
        referral read ~80 rows, 0.5 ms of CPU between routing and PostgreSQL, mostly the same
        sites again). Another transaction's change is not seen until that site is read again:
        the reservation checks the places in the database, and one that fails re-reads its site
        (``_places_changed``), so a copy never makes a place taken twice."""
        known: dict[str, dict[ServiceCode, Capacity]] = batch.extensions.setdefault(_CAPACITY, {})
        missing = [site_id for site_id in site_ids if site_id not in known]
        if missing:
            read, _ = await read_capacity(self.connection, missing)
            for site_id in missing:
                known[site_id] = {}
            for (site_id, service), places in read.items():
                known[site_id][service] = places
        capacity = {
            (site_id, service): places
            for site_id in site_ids
            for service, places in known[site_id].items()
        }
        services = {site_id: set(known[site_id]) for site_id in site_ids if known[site_id]}
        return capacity, services

    def _places_changed(
        self, site_id: str, services: Collection[ServiceCode], held: int | None
    ) -> None:
        """Keep the batch's copy of the site's places true: ``held`` more places held (fewer when
        negative), or None when the change is not known (the site is read again)."""
        known = self._batch.extensions.get(_CAPACITY) if self._batch is not None else None
        site = known.get(site_id) if known is not None else None
        if known is None or site is None:
            return
        if held is None or any(service not in site for service in services):
            del known[site_id]
            return
        for service in services:
            places = site[service]
            site[service] = dataclasses.replace(places, places_held=places.places_held + held)

    def _forget_directory(self) -> None:
        """This transaction changes the directory: the batch's copy is read again."""
        if self._batch is not None:
            self._batch.extensions.pop(_BatchDirectory, None)
            self._batch.extensions.pop(_FIRST_SNAPSHOT, None)
            self._batch.extensions.pop(_CAPACITY, None)

    async def site_centre(self, site_id: str) -> str | None:
        batch = self._batch
        centres: dict[str, str] | None = batch.extensions.get(_SITE_CENTRES) if batch else None
        if centres is None:
            if batch is None or _FIRST_OWNER not in batch.extensions:
                if batch is not None:
                    batch.extensions[_FIRST_OWNER] = True
                found = await self.connection.fetchval(
                    "SELECT centre_id FROM sites WHERE site_id = $1", site_id
                )
                return str(found) if found is not None else None
            rows = await self.connection.fetch("SELECT site_id, centre_id FROM sites")
            centres = batch.extensions[_SITE_CENTRES] = {r["site_id"]: r["centre_id"] for r in rows}
        return centres.get(site_id)

    async def site_ref(self, site_id: str) -> SiteRef | None:
        row = await self.connection.fetchrow(
            "SELECT s.centre_id, c.name, s.site_id, s.commune_insee, s.departement,"
            " s.address_confidential FROM sites s JOIN centres c USING (centre_id)"
            " WHERE s.site_id = $1",
            site_id,
        )
        if row is None:
            return None
        return SiteRef(
            centre_id=row["centre_id"],
            centre_name=row["name"],
            site_id=row["site_id"],
            site_commune_insee=row["commune_insee"],
            site_departement=row["departement"],
            address_confidential=row["address_confidential"],
        )

    async def set_capacity(
        self, site_id: str, service: ServiceCode, places_total: int, as_of: datetime
    ) -> bool:
        """Applies a count newer than the stored one; an older (reordered) one changes nothing."""
        self._forget_directory()
        applied = await self.connection.fetchval(
            "UPDATE site_services SET places_total = $3, updated_at = $4, assumed = false"
            " WHERE site_id = $1 AND service = $2 AND updated_at < $4 RETURNING true",
            site_id,
            str(service),
            places_total,
            as_of,
        )
        return bool(applied)

    async def open_service(
        self,
        site_id: str,
        service: ServiceCode,
        places_total: int,
        eligibility: Eligibility,
        as_of: datetime,
    ) -> bool:
        self._forget_directory()
        applied = await self.connection.fetchval(
            "INSERT INTO site_services (site_id, service, places_total, eligibility, updated_at)"
            " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (site_id, service) DO UPDATE SET"
            " is_open = true, places_total = EXCLUDED.places_total,"
            " eligibility = EXCLUDED.eligibility, updated_at = EXCLUDED.updated_at,"
            " assumed = false WHERE site_services.updated_at < EXCLUDED.updated_at"
            " RETURNING true",
            site_id,
            str(service),
            places_total,
            eligibility,
            as_of,
        )
        return bool(applied)

    async def close_service(self, site_id: str, service: ServiceCode, as_of: datetime) -> bool:
        self._forget_directory()
        applied = await self.connection.fetchval(
            "UPDATE site_services SET is_open = false, updated_at = $3"
            " WHERE site_id = $1 AND service = $2 AND updated_at < $3 RETURNING true",
            site_id,
            str(service),
            as_of,
        )
        return bool(applied)

    async def site_exists(self, site_id: str) -> bool:
        return bool(
            await self.connection.fetchval("SELECT true FROM sites WHERE site_id = $1", site_id)
        )

    async def centre_exists(self, centre_id: str) -> bool:
        return bool(
            await self.connection.fetchval(
                "SELECT true FROM centres WHERE centre_id = $1", centre_id
            )
        )

    async def add_site(self, site: Site) -> bool:
        self._forget_directory()
        if self._batch is not None:
            # The upsert never changes an existing site's centre: a new site joins the copy.
            self._batch.extensions.get(_SITE_CENTRES, {}).setdefault(site.site_id, site.centre_id)
        applied = await self.connection.fetchval(
            "INSERT INTO sites (site_id, centre_id, commune_insee, departement, lat, lon, serves,"
            " address_confidential, assumed, languages)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, false, $9)"
            " ON CONFLICT (site_id) DO UPDATE SET closed_at = NULL, serves = EXCLUDED.serves,"
            " commune_insee = EXCLUDED.commune_insee, departement = EXCLUDED.departement,"
            " lat = EXCLUDED.lat, lon = EXCLUDED.lon, languages = EXCLUDED.languages,"
            " address_confidential = EXCLUDED.address_confidential, assumed = false,"
            " updated_at = clock_timestamp() RETURNING true",
            site.site_id,
            site.centre_id,
            site.commune_insee,
            site.departement,
            site.lat,
            site.lon,
            sorted(site.serves),
            site.address_confidential,
            sorted(site.languages),
        )
        return bool(applied)

    async def close_site(self, site_id: str, as_of: datetime) -> bool:
        self._forget_directory()
        applied = await self.connection.fetchval(
            "UPDATE sites SET closed_at = $2, updated_at = clock_timestamp()"
            " WHERE site_id = $1 AND closed_at IS NULL RETURNING true",
            site_id,
            as_of,
        )
        return bool(applied)

    # -- referrals ---------------------------------------------------------------------------
    async def get_referral(self, referral_id: str) -> ReferralState | None:
        """The referral, locked until the transaction ends (answers, timers and cancellations
        of one referral are serialised on this row)."""
        row = await self.connection.fetchrow(
            "SELECT * FROM referrals WHERE referral_id = $1 FOR UPDATE", referral_id
        )
        return _state(row) if row is not None else None

    async def save_referral(self, state: ReferralState) -> None:
        await self.connection.execute(
            "INSERT INTO referrals (referral_id, correlation_id, accepted, status, site_id,"
            " attempt, tried, urgency_rank, arrived_at, answer_by, housing_site_id,"
            " housing_status, housing_answer_by)"
            " VALUES ($1, $2, $3::jsonb, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
            " ON CONFLICT (referral_id) DO UPDATE SET status = EXCLUDED.status,"
            " site_id = EXCLUDED.site_id, attempt = EXCLUDED.attempt, tried = EXCLUDED.tried,"
            " answer_by = EXCLUDED.answer_by, housing_site_id = EXCLUDED.housing_site_id,"
            " housing_status = EXCLUDED.housing_status,"
            " housing_answer_by = EXCLUDED.housing_answer_by, updated_at = clock_timestamp()",
            *_referral_values(state),
        )

    async def add_referral(self, state: ReferralState) -> ReferralState | None:
        # One round trip: inserted, or the known row read and locked (FOR UPDATE, as
        # get_referral). A concurrent insert of the same id waits for the other transaction.
        row = await self.connection.fetchrow(
            "WITH added AS (INSERT INTO referrals (referral_id, correlation_id, accepted, status,"
            " site_id, attempt, tried, urgency_rank, arrived_at, answer_by, housing_site_id,"
            " housing_status, housing_answer_by)"
            " VALUES ($1, $2, $3::jsonb, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
            " ON CONFLICT (referral_id) DO NOTHING RETURNING referral_id)"
            " SELECT * FROM referrals WHERE referral_id = $1"
            " AND NOT EXISTS (SELECT 1 FROM added) FOR UPDATE",
            *_referral_values(state),
        )
        return _state(row) if row is not None else None

    async def due_offer(self, now: datetime) -> ReferralState | None:
        """One open offer past its deadline, locked; offers another worker holds are skipped."""
        row = await self.connection.fetchrow(
            "SELECT * FROM referrals WHERE status = 'offered' AND answer_by <= $1"
            " ORDER BY answer_by LIMIT 1 FOR UPDATE SKIP LOCKED",
            now,
        )
        return _state(row) if row is not None else None

    async def due_housing(self, now: datetime) -> ReferralState | None:
        row = await self.connection.fetchrow(
            "SELECT * FROM referrals WHERE housing_status = 'offered'"
            " AND housing_answer_by <= $1"
            " ORDER BY housing_answer_by LIMIT 1 FOR UPDATE SKIP LOCKED",
            now,
        )
        return _state(row) if row is not None else None

    # -- places ----------------------------------------------------------------------------------
    async def reserve(
        self, referral_id: str, site_id: str, services: Sequence[ServiceCode]
    ) -> bool:
        """One place per service at the site, all or none: one statement takes the places and
        writes the holds, or takes nothing when a service has no room left (another transaction
        got a last place first)."""
        wanted = sorted({str(service) for service in services})
        # All or none in one statement: the wanted rows that still have room are locked (in
        # service order, as every reservation locks them, so two never deadlock; a row changed
        # meanwhile is checked again once its lock is had), and taken only if all of them are.
        taken = await self.connection.fetch(
            "WITH free AS (SELECT site_id, service FROM site_services"
            " WHERE site_id = $2 AND service = ANY($3::text[]) AND is_open"
            " AND places_held < places_total ORDER BY service FOR UPDATE),"
            " taken AS (UPDATE site_services s SET places_held = s.places_held + 1 FROM free"
            " WHERE s.site_id = free.site_id AND s.service = free.service"
            " AND (SELECT count(*) FROM free) = cardinality($3::text[])"
            " RETURNING s.site_id, s.service)"
            " INSERT INTO holds (referral_id, site_id, service)"
            " SELECT $1, site_id, service FROM taken RETURNING service",
            referral_id,
            site_id,
            wanted,
        )
        won = len(taken) == len(wanted)
        self._places_changed(site_id, set(services), 1 if won else None)
        return won

    async def release(
        self, referral_id: str, site_id: str | None = None
    ) -> list[tuple[str, ServiceCode]]:
        rows = await self.connection.fetch(
            "DELETE FROM holds WHERE referral_id = $1 AND ($2::text IS NULL OR site_id = $2)"
            " RETURNING site_id, service",
            referral_id,
            site_id,
        )
        freed = sorted((row["site_id"], ServiceCode(row["service"])) for row in rows)
        for site_id, service in freed:
            await self.connection.execute(
                "UPDATE site_services SET places_held = places_held - 1"
                " WHERE site_id = $1 AND service = $2",
                site_id,
                str(service),
            )
            self._places_changed(site_id, [service], -1)
        return freed

    # -- waiting lists -------------------------------------------------------------------------
    async def _lock_waitlist(self) -> None:
        """Waiting-list changes and position reads are serialised (one transaction-level advisory
        lock), so two instances never tell two referrals the same position."""
        if not getattr(self, "_waitlist_locked", False):
            await self.connection.execute("SELECT pg_advisory_xact_lock($1)", _WAITLIST_LOCK)
            self._waitlist_locked = True

    async def waitlist_add(
        self, state: ReferralState, site_id: str, service: ServiceCode, decision_id: uuid.UUID
    ) -> None:
        await self._lock_waitlist()
        await self.connection.execute(
            "INSERT INTO waitlist (referral_id, site_id, service, residence_departement,"
            " urgency_rank, arrived_at, decision_id) VALUES ($1, $2, $3, $4, $5, $6, $7)"
            " ON CONFLICT (referral_id) DO UPDATE SET"
            " site_id = EXCLUDED.site_id, service = EXCLUDED.service,"
            " decision_id = EXCLUDED.decision_id,"
            # moved to another site: its new notice is told, whatever the position
            " told_position = CASE WHEN waitlist.site_id = EXCLUDED.site_id"
            " THEN waitlist.told_position END",
            state.referral_id,
            site_id,
            str(service),
            state.accepted.residence_departement,
            state.urgency_rank,
            state.arrived_at,
            decision_id,
        )

    async def waitlist_remove(self, referral_id: str) -> None:
        await self._lock_waitlist()
        await self.connection.execute("DELETE FROM waitlist WHERE referral_id = $1", referral_id)

    async def waiting_near(self, departements: Collection[str]) -> list[Waiting]:
        await self._lock_waitlist()
        rows = await self.connection.fetch(
            "SELECT w.referral_id, w.site_id, w.service, w.urgency_rank, w.arrived_at, w.seq,"
            " w.told_position, w.decision_id, r.correlation_id, r.accepted, r.tried"
            " FROM waitlist w JOIN referrals r USING (referral_id)"
            " WHERE w.residence_departement = ANY($1::text[])"
            " ORDER BY w.urgency_rank, w.arrived_at, w.seq",
            sorted(departements),
        )
        return [
            Waiting(
                referral_id=row["referral_id"],
                correlation_id=row["correlation_id"],
                accepted=ReferralAcceptedData.model_validate_json(row["accepted"]),
                urgency_rank=row["urgency_rank"],
                arrived_at=row["arrived_at"],
                seq=row["seq"],
                tried=tuple(row["tried"]),
                site_id=row["site_id"],
                service=ServiceCode(row["service"]),
                told_position=row["told_position"],
                decision_id=row["decision_id"],
            )
            for row in rows
        ]

    async def waitlist_told(self, referral_id: str, position: int) -> None:
        await self.connection.execute(
            "UPDATE waitlist SET told_position = $2 WHERE referral_id = $1", referral_id, position
        )

    async def waiting_at(self, site_id: str) -> list[str]:
        rows = await self.connection.fetch(
            "SELECT referral_id FROM waitlist WHERE site_id = $1"
            " ORDER BY urgency_rank, arrived_at, seq",
            site_id,
        )
        return [row["referral_id"] for row in rows]

    async def site_reach(self, site_id: str) -> list[str]:
        """Départements whose residents this site may receive (served ones and its own)."""
        row = await self.connection.fetchrow(
            "SELECT serves, departement FROM sites WHERE site_id = $1", site_id
        )
        return sorted({*row["serves"], row["departement"]}) if row else []

    # -- decision records ------------------------------------------------------------------
    async def record_decision(self, row: DecisionRow) -> None:
        site, record = row.site, row.record
        values = (
            row.referral_id,
            row.decision_id,
            row.outcome,
            site.site_id if site else None,
            site.centre_id if site else None,
            row.distance_km,
            row.reason,
            row.explanation,
            row.cause_event_id,
            row.correlation_id,
            row.attempt,
            record.policy_version if record else None,
            json.dumps(record.to_json()) if record else None,
        )
        batch = self._batch
        if batch is None:
            await self.connection.execute(_INSERT_DECISION, *values)
            return
        # Nothing reads decision records back while routing: written with the batch's others.
        rows: list[tuple[object, ...]] | None = batch.extensions.get(_INSERT_DECISION)
        if rows is None:
            rows = batch.extensions[_INSERT_DECISION] = []
            batch.flushes[_INSERT_DECISION] = functools.partial(_write_decisions, rows)
        rows.append(values)


def _referral_values(state: ReferralState) -> tuple[object, ...]:
    return (
        state.referral_id,
        state.correlation_id,
        state.accepted.model_dump_json(),
        state.status,
        state.site_id,
        state.attempt,
        list(state.tried),
        state.urgency_rank,
        state.arrived_at,
        state.answer_by,
        state.housing_site_id,
        state.housing_status,
        state.housing_answer_by,
    )


def _state(row: asyncpg.Record) -> ReferralState:
    return ReferralState(
        referral_id=row["referral_id"],
        correlation_id=row["correlation_id"],
        accepted=ReferralAcceptedData.model_validate_json(row["accepted"]),
        status=row["status"],
        site_id=row["site_id"],
        attempt=row["attempt"],
        tried=tuple(row["tried"]),
        urgency_rank=row["urgency_rank"],
        arrived_at=row["arrived_at"],
        answer_by=row["answer_by"],
        housing_site_id=row["housing_site_id"],
        housing_status=row["housing_status"],
        housing_answer_by=row["housing_answer_by"],
    )
