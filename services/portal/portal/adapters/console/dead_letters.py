"""Operator console: dead letters. List (filters by topic, reason and status, counts per topic and
reason), inspect, replay, discard with a reason.

The same use cases as ``aiguillage dead-letters`` (``aiguillage_operations.use_cases``), reached
through the same adapters (``aiguillage_operations.connected``), and the inspect page shows the
lines ``show`` prints (``detail_lines``): metadata, hash, reason, field path, safe headers; never a
payload. A replay or a discard is recorded where the command records it (the operations schema,
naming the portal user as operator) and in the portal's audit log. Replaying twice publishes one
copy: the use case checks the status under a per-dead-letter lock and says "skipped".
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.responses import Response

from aiguillage_common.cli import Unreachable
from aiguillage_common.logging import get_logger
from aiguillage_operations.adapters.kafka import KafkaDeadLetters, ScanStalled
from aiguillage_operations.adapters.postgres import PostgresActions, SchemaMissing
from aiguillage_operations.cli import detail_lines
from aiguillage_operations.connected import with_dead_letters
from aiguillage_operations.domain import (
    DEAD_LETTER_TOPICS,
    Filter,
    FilterProblem,
    IdProblem,
    Refusal,
    Selection,
    replay_hint,
)
from aiguillage_operations.timeline_read import Places
from aiguillage_operations.use_cases import (
    discard,
    list_dead_letters,
    replay,
    show_dead_letter,
)
from portal.adapters.guards import Operator, OperatorForm, client_address
from portal.adapters.postgres import PortalStore
from portal.adapters.web import PageKit
from portal.use_cases.accounts import Session

log = get_logger("aiguillage.portal")
T = TypeVar("T")
STATUSES = ("open", "replayed", "discarded", "all")
STATUS_LABELS = {
    "open": "Ouvertes",
    "replayed": "Rejouées",
    "discarded": "Écartées",
    "all": "Toutes",
}
RESULT_LABELS = {
    "replayed": "Rejouée : l'enregistrement d'origine a été republié une fois.",
    "skipped": "Déjà traitée : rien n'a été republié.",
    "refused": "Rejeu refusé.",
    "failed": "Rejeu impossible.",
    "planned": "Rejeu prévu.",
}
UNAVAILABLE = "Kafka ou PostgreSQL ne répond pas : réessayez dans un instant."
NO_SCHEMA = (
    "Le schéma des actions des opérateurs n'existe pas : lancez `aiguillage-migrate operations` "
    "(AIGUILLAGE_PORTAL_CONSOLE_OPERATIONS_SCHEMA dit lequel)."
)


def _unavailable(error: Exception) -> str:
    return NO_SCHEMA if isinstance(error, SchemaMissing) else UNAVAILABLE


@dataclass(frozen=True)
class DeadLetterConsole:
    """Where the dead letters and the operators' actions are, and the replay headers' secret."""

    places: Places
    secret: bytes | None
    store: PortalStore

    async def run(self, work: Callable[[KafkaDeadLetters, PostgresActions], Awaitable[T]]) -> T:
        return await with_dead_letters(
            self.places.bootstrap_servers,
            self.places.operations.url,
            self.places.topic_prefix,
            self.places.operations.schema,
            work,
        )


def operator_name(session: Session) -> str:
    """Who acted, as recorded with the dead letter: the portal user's pseudonymous id (the
    command line records the system account)."""
    return f"portal:{session.principal.actor_id}"


def register(app: FastAPI, kit: PageKit, *, console: DeadLetterConsole) -> None:
    async def problem_page(
        request: Request, session: Session, message: str, status_code: int
    ) -> Response:
        return kit.render(
            request,
            "error.html",
            {"title": "Lettres mortes indisponibles", "code": status_code, "message": message},
            session,
            status_code,
        )

    @app.get("/operateur/lettres-mortes", response_model=None)
    async def dead_letters_page(
        request: Request,
        session: Operator,
        sujet: str = "",
        motif: str = "",
        statut: str = "open",
    ) -> Response:
        topic = sujet if sujet in DEAD_LETTER_TOPICS else None
        reason = motif.strip() or None
        status = statut if statut in STATUSES else "open"
        try:
            # One reading for the counts (every topic and reason of that status) and the rows.
            listing = await console.run(
                lambda kafka, store: list_dead_letters(kafka, store, Filter(status=status))  # type: ignore[arg-type]
            )
        except (Unreachable, ScanStalled, SchemaMissing) as error:
            log.warning("portal.console_unavailable", page="dead_letters", error=str(error))
            return await problem_page(request, session, _unavailable(error), 503)
        wanted = Filter(topic=topic, reason=reason, status=status)  # type: ignore[arg-type]
        rows = [(d, s) for d, s in listing.rows if wanted.matches(d, s)]
        counts = Counter((d.topic, d.reason) for d, _ in listing.rows)
        return kit.render(
            request,
            "console_dead_letters.html",
            {
                "nav": "lettres-mortes",
                "rows": [
                    {
                        "d": d,
                        "status": s,
                        "hint": replay_hint(d),
                        "copy_of": listing.copy_of.get(d.uid),
                    }
                    for d, s in rows
                ],
                "counts": sorted(counts.items()),
                "totals": listing.totals,
                "missing": listing.missing_topics,
                "topics": DEAD_LETTER_TOPICS,
                "reasons": sorted({r for _, r in counts}),
                "statuses": STATUS_LABELS,
                "chosen": {"sujet": topic or "", "motif": reason or "", "statut": status},
            },
            session,
        )

    async def detail_page(
        request: Request,
        session: Session,
        dead_letter_id: str,
        *,
        notice: dict[str, str] | None = None,
        error: str | None = None,
        status_code: int = 200,
    ) -> Response:
        try:
            detail = await console.run(
                lambda kafka, store: show_dead_letter(kafka, store, dead_letter_id)
            )
        except IdProblem:
            return kit.not_found(request, session)
        except (Unreachable, ScanStalled, SchemaMissing) as error:
            log.warning("portal.console_unavailable", page="dead_letter", error=str(error))
            return await problem_page(request, session, _unavailable(error), 503)
        d = detail.dead_letter
        context: dict[str, Any] = {
            "nav": "lettres-mortes",
            "d": d,
            "status": detail.status,
            "lines": detail_lines(detail),
            "replayable": d.replayable,
            "referral_link": d.subject if d.subject != "unknown" else None,
            "notice": notice,
            "error": error,
        }
        return kit.render(request, "console_dead_letter.html", context, session, status_code)

    @app.get("/operateur/lettres-mortes/{dead_letter_id}", response_model=None)
    async def dead_letter_page(
        request: Request, dead_letter_id: str, session: Operator
    ) -> Response:
        return await detail_page(request, session, dead_letter_id)

    @app.post("/operateur/lettres-mortes/{dead_letter_id}/rejouer", response_model=None)
    async def replay_action(
        request: Request,
        dead_letter_id: str,
        session: Operator,
        _form: OperatorForm,  # only its token: the id is the path's
    ) -> Response:
        try:
            selection = Selection(dead_letter_id=dead_letter_id)
            outcomes = await console.run(
                lambda kafka, store: replay(
                    kafka,
                    store,
                    selection,
                    operator=operator_name(session),
                    secret=console.secret,
                )
            )
        except (IdProblem, FilterProblem):
            return kit.not_found(request, session)
        except (Unreachable, ScanStalled, SchemaMissing) as error:
            log.warning("portal.console_unavailable", page="replay", error=str(error))
            return await problem_page(request, session, _unavailable(error), 503)
        (outcome,) = outcomes
        d = outcome.dead_letter
        await console.store.record_audit(
            "dead_letter_replay",
            outcome.result,
            user_id=session.principal.user_id,
            referral_id=d.subject if d.subject != "unknown" else None,
            detail={
                "dead_letter_id": d.short_id,
                "topic": d.topic,
                "reason": d.reason,
                "copy": str(outcome.copy) if outcome.copy else None,
                "signed": outcome.signed,
            },
            client_address=client_address(request),
        )
        log.info(
            "portal.dead_letter_replay",
            dead_letter_id=d.short_id,
            result=outcome.result,
            referral_id=d.subject,
        )
        return await detail_page(
            request,
            session,
            dead_letter_id,
            notice={
                "result": outcome.result,
                "title": RESULT_LABELS[outcome.result],
                "detail": outcome.detail,
                "ok": "oui" if outcome.ok else "",
            },
            status_code=200 if outcome.ok else 409,
        )

    @app.post("/operateur/lettres-mortes/{dead_letter_id}/ecarter", response_model=None)
    async def discard_action(
        request: Request, dead_letter_id: str, session: Operator, form: OperatorForm
    ) -> Response:
        reason = str(form.get("raison", "")).strip()
        if not reason or len(reason) > 500:
            return await detail_page(
                request,
                session,
                dead_letter_id,
                error="Indiquez pourquoi cette lettre morte est écartée (500 caractères au plus).",
                status_code=400,
            )
        try:
            outcome = await console.run(
                lambda kafka, store: discard(
                    kafka, store, dead_letter_id, reason, operator_name(session)
                )
            )
        except IdProblem:
            return kit.not_found(request, session)
        except Refusal as refused:
            return await detail_page(
                request, session, dead_letter_id, error=str(refused), status_code=400
            )
        except (Unreachable, ScanStalled, SchemaMissing) as error:
            log.warning("portal.console_unavailable", page="discard", error=str(error))
            return await problem_page(request, session, _unavailable(error), 503)
        d = outcome.dead_letter
        # The operator's words stay in the operations schema (as with the command line): the
        # audit log holds codes and ids only.
        await console.store.record_audit(
            "dead_letter_discard",
            "discarded" if outcome.discarded else "already_discarded",
            user_id=session.principal.user_id,
            referral_id=d.subject if d.subject != "unknown" else None,
            detail={"dead_letter_id": d.short_id, "topic": d.topic, "reason": d.reason},
            client_address=client_address(request),
        )
        return await detail_page(
            request,
            session,
            dead_letter_id,
            notice={
                "result": "discarded" if outcome.discarded else "skipped",
                "title": "Écartée." if outcome.discarded else "Déjà écartée : rien d'enregistré.",
                "detail": outcome.status.describe(),
                "ok": "oui",
            },
        )
