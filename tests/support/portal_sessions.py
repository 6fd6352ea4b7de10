"""The portal store's session calls in memory, for the unit tests of sign-in and of the guards."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any


class InMemorySessions:
    def __init__(self) -> None:
        self.sessions: dict[str, dict[str, Any]] = {}

    def add_session(
        self,
        session_sha256: str,
        user_id: uuid.UUID,
        csrf_token: str,
        now: datetime,
        role: str = "centre",
        display_name: str = "Agent",
    ) -> None:
        """A session row as the store reads it back (a centre user of Arras by default)."""
        self.sessions[session_sha256] = {
            "created_at": now,
            "last_seen_at": now,
            "csrf_token": csrf_token,
            "user_id": user_id,
            "role": role,
            "centre_id": "HDF-ARRAS" if role == "centre" else None,
            "prescriber_id": "parquet-tj-lille" if role == "prescriber" else None,
            "display_name": display_name,
        }

    async def session(self, session_sha256: str) -> dict[str, Any] | None:
        return self.sessions.get(session_sha256)

    async def touch_session(self, session_sha256: str, now: datetime) -> None:
        self.sessions[session_sha256]["last_seen_at"] = now

    async def end_session(self, session_sha256: str, now: datetime, reason: str) -> None:
        self.sessions.pop(session_sha256, None)
        self.session_ended(reason)

    def session_ended(self, reason: str) -> None:
        """Where each test's fake notes an ended session."""
