"""Use case of ``aiguillage timeline``: read every source about one referral, then merge.

Sources are read one after the other on one connection per service schema and one Kafka reader;
a source that cannot be read stops the command (a timeline silently missing a service would
mislead), except the operators' action records and the portal's, whose absence is said in a
note.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiguillage_common.cli import CONNECT_TIMEOUT_S, bounded, connect
from aiguillage_operations.adapters.kafka import KafkaDeadLetters
from aiguillage_operations.adapters.postgres import PostgresActions, SchemaMissing
from aiguillage_operations.adapters.timeline import Part
from aiguillage_operations.adapters.timeline.centres import CentreRecord, centre_part
from aiguillage_operations.adapters.timeline.dead_letters import (
    about,
    dead_letter_part,
    refused_events,
)
from aiguillage_operations.adapters.timeline.intake import intake_part
from aiguillage_operations.adapters.timeline.notifications import notifications_part
from aiguillage_operations.adapters.timeline.portal import portal_part
from aiguillage_operations.adapters.timeline.routing import routing_part
from aiguillage_operations.domain import DEAD_LETTER_TOPICS, DeadLetter, SourceRecord
from aiguillage_operations.timeline import Timeline, build
from aiguillage_schemas import topics


@dataclass(frozen=True, slots=True)
class Database:
    url: str
    schema: str


@dataclass(frozen=True, slots=True)
class Places:
    """Where each service keeps its records (from the services' settings)."""

    intake: Database
    routing: Database
    notifications: Database
    operations: Database
    bootstrap_servers: str
    topic_prefix: str
    portal: Database | None = None  # None: the portal's records are not read


async def read_timeline(places: Places, referral_id: str, with_kafka: bool = True) -> Timeline:
    """``with_kafka=False``: PostgreSQL only (while the broker is down), said in a note."""
    parts: list[Part] = []
    notes: list[str] = []
    readers = [(places.intake, intake_part), (places.notifications, notifications_part)]
    if places.portal is not None:
        readers.append((places.portal, portal_part))
    for database, reader in readers:
        connection = await connect(database.url, database.schema)
        try:
            parts.append(await reader(connection, referral_id))
        finally:
            await connection.close()
    dead_letters: list[DeadLetter] = []
    raw: list[SourceRecord] | None = []
    if with_kafka:
        kafka = KafkaDeadLetters(places.bootstrap_servers, places.topic_prefix, timeout_s=10.0)
        try:
            await bounded(
                f"Kafka at {places.bootstrap_servers}", kafka.start(), CONNECT_TIMEOUT_S * 2
            )
            dead_letters = about((await kafka.scan(DEAD_LETTER_TOPICS)).dead_letters, referral_id)
            raw = await kafka.records_with_key(topics.CENTRE_RESPONSES.name, referral_id)
        finally:
            await kafka.stop()
    else:
        notes.append(
            "Kafka not read: centres' messages (who answered) and dead letters are not shown"
        )
    records = (
        None
        if raw is None
        else [
            CentreRecord(
                str(r.location),
                r.location.offset,
                r.timestamp_ms,
                r.value,
                {name: value.decode("utf-8", "replace") for name, value in r.headers},
            )
            for r in raw
        ]
    )
    routing = await connect(places.routing.url, places.routing.schema)
    try:
        parts.append(await routing_part(routing, referral_id))
        parts.append(await centre_part(records, routing, refused_events(dead_letters)))
    finally:
        await routing.close()
    history = {}
    if dead_letters:
        try:
            store = await PostgresActions.connect(places.operations.url, places.operations.schema)
        except SchemaMissing:
            notes.append("no operations schema: replays and discards of dead letters not shown")
        else:
            try:
                history = await store.history([d.uid for d in dead_letters])
            finally:
                await store.close()
    parts.append(dead_letter_part(dead_letters, history))
    return build(
        referral_id,
        (part.entries for part in parts),
        now=(line for part in parts for line in part.now),
        notes=[*notes, *(note for part in parts for note in part.notes)],
    )
