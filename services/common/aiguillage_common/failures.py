"""One classification of failures, used by every consumer, worker and the startup: transient or not.

Transient means the same work may well succeed later without any change to the message: the
database, the broker or a peer is unreachable, restarting, overloaded, or too slow. Such a failure
makes the caller wait and retry for as long as it takes; it is never turned into a dead letter, a
rejection or an exit (a 20-second PostgreSQL restart once ended as lost referrals). Everything else
is a fact about the message or a bug, which retrying cannot change.
"""

from __future__ import annotations

from typing import Literal

import asyncpg
import httpx
from aiokafka import errors as kafka_errors

Dependency = Literal["database", "kafka", "peer", "network", "timeout"]

# asyncpg classes of SQLSTATE that say "the server, not your statement": 08 connection, 40
# transaction rollback (serialization, deadlock), 53 insufficient resources, 57 operator
# intervention (shutdown, cannot connect now, statement timeout), 58 system error.
_DATABASE_TRANSIENT: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.TransactionRollbackError,
    asyncpg.InsufficientResourcesError,
    asyncpg.OperatorInterventionError,
    asyncpg.PostgresSystemError,
    asyncpg.exceptions.OutdatedSchemaCacheError,
)
# InterfaceError is mostly "the connection is closed / the pool is closing"; its subclasses
# DataError and ClientConfigurationError are our own bugs.
_DATABASE_PERMANENT_INTERFACE: tuple[type[BaseException], ...] = (
    asyncpg.DataError,
    asyncpg.exceptions.ClientConfigurationError,
    asyncpg.exceptions.UnsupportedClientFeatureError,
)
# Kafka errors that no amount of waiting fixes.
_KAFKA_PERMANENT: tuple[type[BaseException], ...] = (
    kafka_errors.MessageSizeTooLargeError,
    kafka_errors.RecordTooLargeError,
    kafka_errors.UnsupportedVersionError,
    kafka_errors.TopicAuthorizationFailedError,
)


def transient_dependency(error: BaseException) -> Dependency | None:
    """Which dependency a transient failure is waiting for, or None if it is not transient."""
    if isinstance(error, _DATABASE_TRANSIENT):
        return "database"
    if isinstance(error, asyncpg.InterfaceError):
        return None if isinstance(error, _DATABASE_PERMANENT_INTERFACE) else "database"
    if isinstance(error, kafka_errors.KafkaError):
        return None if isinstance(error, _KAFKA_PERMANENT) else "kafka"
    if isinstance(error, httpx.TransportError):
        return "peer"
    if isinstance(error, TimeoutError):
        return "timeout"
    if isinstance(error, OSError):
        # Connection refused or reset while opening a socket (a pool connecting, a client
        # reconnecting): which server is down is in the error's text, not its type.
        return "network"
    return None


def is_transient(error: BaseException) -> bool:
    return transient_dependency(error) is not None
