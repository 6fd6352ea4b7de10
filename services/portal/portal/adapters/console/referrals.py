"""Operator console: find a referral by id and read its timeline across the services.

The timeline is ``aiguillage timeline``'s (``aiguillage_operations.timeline_read.read_timeline``):
the same readers pick codes and pseudonymous ids from each service's records, so what the page can
show is what the command prints: who acted (prescriber, centre, site, portal user, operator), why
(reason codes), the judicial frame and needs as codes. Never identity, clinical content or free
text: the readers never pass a record through. Each dead letter of the referral links to its page.
"""

from __future__ import annotations

import uuid
from datetime import UTC
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import TypeAdapter, ValidationError

from aiguillage_common.cli import Unreachable
from aiguillage_common.logging import get_logger
from aiguillage_operations.adapters.kafka import ScanStalled
from aiguillage_operations.domain import Kind, short_id
from aiguillage_operations.timeline import Entry
from aiguillage_operations.timeline_read import Places, read_timeline
from aiguillage_schemas.events.referral_submitted import ReferralId
from portal.adapters.guards import Operator, client_address
from portal.adapters.postgres import PortalStore
from portal.adapters.web import PageKit

log = get_logger("aiguillage.portal")
REFERRAL_ID: TypeAdapter[str] = TypeAdapter(ReferralId)
DEAD_LETTER_KINDS = frozenset(str(kind) for kind in Kind if kind != Kind.UNREADABLE)
SERVICES = {
    "intake": "Réception",
    "centre": "Centre",
    "routing": "Aiguillage",
    "notifications": "Notifications",
    "portal": "Portail",
    "operations": "Opérateur",
}
MALFORMED = (
    "Ce n'est pas un identifiant d'orientation : 6 à 64 caractères, lettres, chiffres, "
    "point, tiret ou souligné, commençant par une lettre ou un chiffre."
)


def valid_referral_id(given: str) -> str | None:
    """The id as the contracts accept it, or None (the published schema's own pattern)."""
    try:
        return REFERRAL_ID.validate_python(given.strip())
    except ValidationError:
        return None


def dead_letter_link(entry: Entry) -> str | None:
    """The console page of the dead letter an entry is, if it is one."""
    if not entry.record.startswith("kafka:") or entry.kind not in DEAD_LETTER_KINDS:
        return None
    try:
        return f"/operateur/lettres-mortes/{short_id(uuid.UUID(entry.key))}"
    except ValueError:
        return None


def _row(entry: Entry) -> dict[str, Any]:
    return {
        "at": entry.at,
        "utc": entry.at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:23],
        "service": SERVICES.get(entry.service, entry.service),
        "kind": entry.kind,
        "what": entry.what,
        "actors": entry.actors,
        "why": entry.why,
        # Codes the line above does not already say (intake's admission lists them itself).
        "details": [
            (name, value)
            for name, value in entry.details
            if f"{name}={value.replace(', ', ',')}" not in entry.what
        ],
        "dead_letter": dead_letter_link(entry),
    }


def register(app: FastAPI, kit: PageKit, *, places: Places, store: PortalStore) -> None:
    @app.get("/operateur/orientations", response_model=None)
    async def find_page(
        request: Request, session: Operator, reference: str | None = None
    ) -> Response:
        if reference is None:
            return kit.render(
                request, "console_referrals.html", {"nav": "orientations", "given": ""}, session
            )
        found = valid_referral_id(reference)
        if found is None:
            return kit.render(
                request,
                "console_referrals.html",
                {"nav": "orientations", "given": reference, "error": MALFORMED},
                session,
                400,
            )
        return RedirectResponse(f"/operateur/orientations/{quote(found)}", status_code=303)

    @app.get("/operateur/orientations/{referral_id}", response_model=None)
    async def timeline_page(request: Request, referral_id: str, session: Operator) -> Response:
        context: dict[str, Any] = {"nav": "orientations", "given": referral_id}
        if valid_referral_id(referral_id) != referral_id:
            context["error"] = MALFORMED
            return kit.render(request, "console_referrals.html", context, session, 400)
        try:
            timeline = await read_timeline(places, referral_id)
        except (Unreachable, ScanStalled) as problem:
            log.warning("portal.console_unavailable", page="timeline", error=str(problem))
            context["error"] = (
                "Une base ou Kafka ne répond pas : l'historique complet ne peut pas être lu. "
                "Réessayez dans un instant."
            )
            return kit.render(request, "console_referrals.html", context, session, 503)
        await store.record_audit(
            "timeline_viewed",
            "found" if not timeline.empty else "unknown",
            user_id=session.principal.user_id,
            referral_id=referral_id,
            client_address=client_address(request),
        )
        if timeline.empty:
            context["error"] = f"Aucun service n'a de trace de l'orientation {referral_id}."
            return kit.render(request, "console_referrals.html", context, session, 404)
        return kit.render(
            request,
            "console_timeline.html",
            {
                "nav": "orientations",
                "referral_id": referral_id,
                "entries": [_row(entry) for entry in timeline.entries],
                "now": [(SERVICES.get(s, s), line) for s, line in timeline.now],
                "notes": timeline.notes,
            },
            session,
        )
