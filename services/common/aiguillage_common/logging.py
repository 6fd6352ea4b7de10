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
from typing import Any, TextIO

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


def _tail_processors(service: str) -> list[Any]:
    """Time, service and redaction: on every line, ours and the libraries'."""

    def add_service(
        _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        event_dict.setdefault("service", service)
        return event_dict

    return [structlog.processors.TimeStamper(fmt="iso", utc=True), add_service, redact_sensitive]


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
    """Route structlog and every stdlib logger (aiokafka, asyncpg, FastStream) to JSON on stdout.

    Our own lines are rendered by structlog and written straight to stdout, without a stdlib
    record and handler each, and a line below the level costs a no-op call (a service writes a
    few lines per message: about 14 µs each instead of 45, measured). The libraries' stdlib
    records go through the same processors on the root handler."""
    tail = _tail_processors(service)
    number = logging.getLevelNamesMapping()[level.upper()]
    stdout = sys.stdout
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            _add_name,
            *tail,
            # Frame locals would print message payloads and identities: never show them.
            structlog.processors.ExceptionRenderer(ExceptionDictTransformer(show_locals=False)),
            structlog.processors.JSONRenderer(ensure_ascii=False),
        ],
        logger_factory=lambda *args: _NamedWriteLogger(stdout, args[0] if args else ""),
        wrapper_class=structlog.make_filtering_bound_logger(number),
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            *tail,
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.ExceptionRenderer(ExceptionDictTransformer(show_locals=False)),
            structlog.processors.JSONRenderer(ensure_ascii=False),
        ],
    )
    handler = logging.StreamHandler(stdout)
    handler.setFormatter(formatter)
    handler.addFilter(DemoteReconnectNoise())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(number)
    # Client libraries are chatty at INFO about connections; operators want warnings from them.
    for name in ("aiokafka", "asyncpg", *quiet):
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))


class _NamedWriteLogger(structlog.WriteLogger):
    """Writes rendered lines to a file and knows its name (``get_logger``'s)."""

    def __init__(self, file: TextIO, name: str) -> None:
        super().__init__(file)
        self.name = name


def _add_name(
    logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    event_dict.setdefault("logger", getattr(logger, "name", None))
    return event_dict


def get_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    """A logger whose lines name it (``logger``), as the stdlib loggers' lines do."""
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(name)
    return logger
