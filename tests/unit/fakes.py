"""In-memory stand-ins for the units of work, so use cases are tested without I/O."""

from __future__ import annotations

import uuid
from types import TracebackType
from typing import Any, Self

from aiguillage_schemas.envelope import Envelope


class FakeUnitOfWork:
    """Commits on clean exit, forgets everything on error, like the PostgreSQL one."""

    def __init__(self, store: FakeStore) -> None:
        self.store = store
        self._claims: set[tuple[str, uuid.UUID]] = set()
        self._emitted: list[tuple[str, Envelope]] = []
        self._writes: list[tuple[str, Any]] = []

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.store.claims |= self._claims
            for topic, event in self._emitted:
                if event.event_id not in {e.event_id for _, e in self.store.outbox}:
                    self.store.outbox.append((topic, event))
            for table, row in self._writes:
                self.store.tables.setdefault(table, []).append(row)
            self.store.commits += 1

    async def claim(self, consumer: str, event_id: uuid.UUID) -> bool:
        key = (consumer, event_id)
        if key in self.store.claims or key in self._claims:
            return False
        self._claims.add(key)
        return True

    async def emit(self, topic: str, event: Envelope) -> None:
        self._emitted.append((topic, event))

    def write(self, table: str, row: Any) -> None:
        self._writes.append((table, row))


class FakeStore:
    def __init__(self) -> None:
        self.claims: set[tuple[str, uuid.UUID]] = set()
        self.outbox: list[tuple[str, Envelope]] = []
        self.tables: dict[str, list[Any]] = {}
        self.commits = 0

    def rows(self, table: str) -> list[Any]:
        return self.tables.get(table, [])


class FakeDigests:
    """Notifications' digests in the fake store: one open digest per recipient and address until
    ``close_digests`` (what the delivery worker leasing its e-mail does)."""

    store: FakeStore

    async def add_to_digest(
        self, entry: Any, cause_id: uuid.UUID, correlation_id: uuid.UUID, send_at: Any
    ) -> uuid.UUID:
        digests: dict[tuple[str, str, str, str], Any] = self.store.tables.setdefault(
            "open_digests", [{}]
        )[0]
        key = (entry.recipient_kind, entry.recipient_id, entry.address, entry.topic)
        if key not in digests:
            digests[key] = {"id": uuid.uuid4(), "items": {}, "send_at": send_at}
        digest = digests[key]
        digest["items"].setdefault(entry.notification_id, dict(entry.facts))
        self.store.tables.setdefault("digest_items", [{}])[0][digest["id"]] = digest["items"]
        return digest["id"]

    async def digest_items(self, digest_id: uuid.UUID) -> list[dict[str, str]]:
        return list(self.store.tables["digest_items"][0][digest_id].values())

    def deferred(self, key: object, make: Any) -> None:
        return None  # not in a consumer's batch: the digest e-mail is written at once

    async def set_digest_email(self, digest_id: uuid.UUID, rendered: Any) -> None:
        self.store.tables.setdefault("digest_emails", [{}])[0][digest_id] = rendered

    def close_digests(self) -> None:
        self.store.tables["open_digests"] = [{}]
