"""JSON log lines for operators, the same pipeline for structlog and stdlib loggers.

Every line is one JSON object on stdout with a stable ``event`` name, the service, and whatever ids
are bound for the message being handled (referral id, correlation id), so an operator can follow a
referral across services with grep. Identity and free text must never reach a log line: keys
known to carry them are redacted, tracebacks never include frame locals, payloads are never logged.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any

import structlog
from structlog.tracebacks import ExceptionDictTransformer

# Keys whose values may hold identity, clinical or free-text content. Checked on every line.
SENSITIVE_KEYS: frozenset[str] = frozenset(
    {
        "identity",
        "person",  # the identity as released to the holding centre
        "last_name",
        "first_name",
        "birth_date",
        "phone",
        "address",
        "name",
        "payload",
        "body",
        "value",
        "data",
        "victim_commune_insee",
    }
)
REDACTED = "[redacted]"


def redact_sensitive(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key in SENSITIVE_KEYS.intersection(event_dict):
        event_dict[key] = REDACTED
    return event_dict


def _shared_processors(service: str) -> list[Any]:
    def add_service(
        _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        event_dict.setdefault("service", service)
        return event_dict

    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        add_service,
        redact_sensitive,
    ]


# What the clients say at ERROR/WARNING on every failed reconnection while a server is down. The
# services report an outage themselves, once when it starts and once when it ends
# (consumer.waiting / service.waiting / ...resumed), so these repeats are demoted to DEBUG.
_RECONNECT_NOISE = (
    "Unable connect to",
    "Unable to update metadata",
    "Unable to request metadata",
    "Failed fetch messages",
    "Kafka error occurred",
    "Got error produce response",
    "Coordinator unknown",
    "Heartbeat failed",
    "Heartbeat send request failed",
    "Group Coordinator Request failed",  # also on every cold start, while the group topic forms
    "Failed to restore the pool connection floor",  # asyncpg, while PostgreSQL is down
    "OffsetCommit failed",
)


class DemoteReconnectNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("aiguillage.faststream") and record.getMessage().startswith(
            "callback for "
        ):
            # FastStream's task supervisor says this of every subscriber task it cancels at a
            # normal shutdown ("callback for Task-N is being executed..."): nothing to act on.
            return False
        if record.levelno > logging.DEBUG and record.name.startswith(
            ("aiokafka", "asyncpg", "aiguillage.fa")
        ):
            message = record.getMessage()
            if message.startswith(_RECONNECT_NOISE):
                record.levelno, record.levelname = logging.DEBUG, "DEBUG"
                return logging.getLogger().isEnabledFor(logging.DEBUG)
        return True


def configure_logging(service: str, level: str = "INFO", quiet: Iterable[str] = ()) -> None:
    """Route structlog and every stdlib logger (aiokafka, asyncpg, FastStream) to JSON on stdout."""
    shared = _shared_processors(service)
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            # Frame locals would print message payloads and identities: never show them.
            structlog.processors.ExceptionRenderer(ExceptionDictTransformer(show_locals=False)),
            structlog.processors.JSONRenderer(ensure_ascii=False),
        ],
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(formatter)
    handler.addFilter(DemoteReconnectNoise())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Client libraries are chatty at INFO about connections; operators want warnings from them.
    for name in ("aiokafka", "asyncpg", *quiet):
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(name)
    return logger
