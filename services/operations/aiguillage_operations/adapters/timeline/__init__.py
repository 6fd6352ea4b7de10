"""Where ``aiguillage timeline`` reads one referral's story: each service's own records, one
module per source (``intake``, ``routing``, ``notifications``, ``centres``, ``dead_letters``).

- intake (its schema): the referral row, the events it published (outbox), identity releases
  (outcome only) and who may receive the identity;
- routing (its schema): decisions, the events it published (placed, path reported, waiting
  positions, withdrawn), current holds, waiting entry and state;
- notifications (its schema): every delivery attempt and what is still pending (the same query as
  ``aiguillage deliveries``);
- centres' messages on ``centres.responses`` (the key's partition): who answered the offer or
  reported the path (centre, site, the ``actor`` when the sender named one), and whether routing
  handled it (routing's inbox) or refused it (a dead letter names it);
- dead letters about the referral (the dead-letter topics) and what operators did with them
  (the operations schema);
- the portal (its schema): who was shown the person's identity on the offer page (its audit log).

Each reader picks fields by name and turns them into codes and ids: no record is passed through,
so identity, clinical content and free text (a decline's text, an operator's discard reason,
routing's explanations) never reach the output.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg

from aiguillage_operations.timeline import Entry

# Shared by the readers of each source (one module per service in this package).
Connection = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy


@dataclass
class Part:
    """What one source found: entries, where things stand now, and what it could not read."""

    entries: list[Entry] = field(default_factory=list)
    now: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def parse_json(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        value = bytes(value).decode("utf-8")
    return json.loads(value) if isinstance(value, str) else value


def as_text(value: Any) -> str:
    return ", ".join(map(str, value)) if isinstance(value, list) else str(value)


def event_of(payload: Any) -> dict[str, Any] | None:
    try:
        event = parse_json(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    return event if isinstance(event, dict) else None


def data_of(event: Mapping[str, Any]) -> Mapping[str, Any]:
    data = event.get("data")
    return data if isinstance(data, Mapping) else {}


def codes(value: Any) -> tuple[str, ...]:
    return (str(value),) if value not in (None, "") else ()


def site_of(data: Mapping[str, Any]) -> Mapping[str, Any]:
    site = data.get("site")
    return site if isinstance(site, Mapping) else {}


def utc_text(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ") if moment else "-"
