"""The dead-letter use cases' adapters, connected for one piece of work and closed after it.

Shared by the command line (``aiguillage dead-letters``) and the portal's operator console, so
both reach Kafka and PostgreSQL the same way and report an unreachable one the same way
(``Unreachable``, one line, no traceback). One Kafka reader and one PostgreSQL connection per piece
of work: a scan assigns and seeks its consumer, and a claim holds a transaction on its connection,
so neither is shared between two requests running at once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg
from aiokafka.errors import KafkaError

from aiguillage_common.cli import Unreachable, where, why
from aiguillage_operations.adapters.kafka import KafkaDeadLetters
from aiguillage_operations.adapters.postgres import PostgresActions, SchemaMissing

T = TypeVar("T")


async def with_dead_letters(
    bootstrap: str,
    database_url: str,
    prefix: str,
    schema: str,
    work: Callable[[KafkaDeadLetters, PostgresActions], Awaitable[T]],
) -> T:
    """Run ``work`` with a started Kafka reader and the operations schema's action store.

    Raises ``Unreachable`` when either cannot be reached, ``SchemaMissing`` when the operations
    schema was never migrated."""
    store = await connect_actions(database_url, schema)
    try:
        kafka = KafkaDeadLetters(bootstrap, prefix)
        try:
            await kafka.start()
        except (KafkaError, OSError, TimeoutError) as error:
            raise Unreachable(f"cannot reach Kafka at {bootstrap} ({why(error)})") from None
        try:
            return await work(kafka, store)
        finally:
            await kafka.stop()
    finally:
        await store.close()


async def connect_actions(database_url: str, schema: str) -> PostgresActions:
    try:
        return await PostgresActions.connect(database_url, schema)
    except SchemaMissing:
        raise
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
        raise Unreachable(
            f"cannot reach PostgreSQL at {where(database_url)} ({why(error)})"
        ) from None
