"""The portal's pages: FastAPI routes rendering Jinja2 templates (DSFR), forms that work without
JavaScript (htmx only lightens some), CSRF on every form, server-side sessions.

Routes stay thin: they read the form, call a use case or the store, and render. What decides who
may see what lives in ``portal.domain.access``. The person's identity is fetched from intake for
the holding centre's offer page only, passed to that one template, and never logged or stored.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, get_args
from uuid import UUID
from zoneinfo import ZoneInfo

import pyotp
import segno
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from markupsafe import Markup

from aiguillage_common.logging import get_logger
from aiguillage_schemas.events.centres import DeclineReason
from aiguillage_schemas.events.routing_decisions import PathReportKind, TerminationReason
from aiguillage_schemas.vocabulary import ServiceCode
from portal.adapters.guards import (
    PRE_COOKIE,
    SESSION_COOKIE,
    CentreForm,
    CentreUser,
    CurrentSession,
    Operator,
    OperatorForm,
    PrescriberUser,
    PreSessionForm,
    SessionReader,
    check_csrf,
    client_address,
    install,
)
from portal.adapters.identity import IdentityClient
from portal.adapters.passwords import hash_password, verify_password
from portal.adapters.postgres import PortalStore, PortalUnitOfWork
from portal.domain import labels
from portal.domain.access import (
    ROLES,
    ReferralView,
    home_path,
    may_answer_offer,
    may_operate,
    may_read_identity,
    may_report_path,
    may_see_as_prescriber,
    may_see_offer,
    safe_next,
)
from portal.domain.capacity import FreshnessPolicy
from portal.domain.responses import ActionRefused
from portal.domain.security import SessionPolicy, ThrottlePolicy
from portal.use_cases import accounts, centre_actions
from portal.use_cases.accounts import AccountRefused, Session
from portal.use_cases.centre_actions import NotFound, Topics

log = get_logger("aiguillage.portal")
PARIS = ZoneInfo("Europe/Paris")
TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
STATIC = Path(__file__).resolve().parent.parent / "static"
DECLINE_REASONS: tuple[str, ...] = get_args(DeclineReason)
PATH_REPORTS: tuple[str, ...] = get_args(PathReportKind)
TERMINATION_REASONS: tuple[str, ...] = get_args(TerminationReason)


@dataclass(frozen=True)
class WebDeps:
    store: PortalStore
    uow_factory: Callable[[], PortalUnitOfWork]
    identity: IdentityClient
    topics: Topics
    session_policy: SessionPolicy
    throttle: ThrottlePolicy
    public_url: str
    cookie_secure: bool
    enrolment_valid: timedelta
    freshness: FreshnessPolicy
    dsfr_dir: Path
    htmx_file: Path
    clock: Callable[[], datetime]
    # Operator console modules: each adds its routes to the app (see ``PageKit``).
    console: tuple[Callable[[FastAPI, PageKit], None], ...] = ()


def _paris(value: datetime | None) -> str:
    if value is None:
        return ""
    return value.astimezone(PARIS).strftime("%d/%m/%Y à %H:%M")


def _day(value: date | datetime | str | None) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, str):
        try:
            return date.fromisoformat(value).strftime("%d/%m/%Y")
        except ValueError:
            return value
    if isinstance(value, datetime):
        value = value.astimezone(PARIS).date()
    return value.strftime("%d/%m/%Y")


@dataclass(frozen=True)
class PageKit:
    """What every page module needs from the app: rendering with the session's context and the
    404 page. The operator console's modules (``portal.adapters.console``) register their routes
    with it and guard them as these do (``portal.adapters.guards``), so there is one way to do
    each."""

    render: Callable[..., HTMLResponse]
    not_found: Callable[[Request, Session | None], HTMLResponse]


def create_web_app(deps: WebDeps) -> FastAPI:
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    templates = Jinja2Templates(directory=str(TEMPLATES))
    env = templates.env
    env.filters["paris"] = _paris
    env.filters["day"] = _day
    env.globals["labels"] = labels
    env.globals["language"] = labels.language
    env.globals["label"] = labels.label
    env.globals["freshness"] = lambda row: deps.freshness.state(
        row["as_of"], row["assumed"], deps.clock()
    )
    env.globals["confirm_by"] = lambda row: deps.freshness.confirm_by(row["as_of"])

    if deps.dsfr_dir.is_dir():
        app.mount("/static/dsfr", StaticFiles(directory=deps.dsfr_dir), name="dsfr")
    else:
        log.error("portal.assets_missing", path=str(deps.dsfr_dir))
    app.mount("/static/portal", StaticFiles(directory=STATIC), name="portal-static")

    @app.get("/static/htmx.min.js", include_in_schema=False)
    async def htmx() -> Response:
        return FileResponse(deps.htmx_file, media_type="text/javascript")

    @app.middleware("http")
    async def headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
            "script-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
        )
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "same-origin"
        response.headers["X-Frame-Options"] = "DENY"
        if not request.url.path.startswith("/static/"):
            # Pages may show an identity: no copy in any cache, the browser's included.
            response.headers["Cache-Control"] = "no-store"
        return response

    def render(
        request: Request,
        name: str,
        context: dict[str, Any],
        session: Session | None = None,
        status_code: int = 200,
    ) -> HTMLResponse:
        context = {
            "request": request,
            "session": session,
            "principal": session.principal if session else None,
            "csrf": session.csrf_token if session else context.get("pre_token", ""),
            "may_operate": bool(session and may_operate(session.principal)),
            **context,
        }
        return templates.TemplateResponse(request, name, context, status_code=status_code)

    def not_found(request: Request, session: Session | None) -> HTMLResponse:
        return render(
            request, "error.html", {"title": "Page introuvable", "code": 404}, session, 404
        )

    install(app, SessionReader(deps.store, deps.clock, deps.session_policy), render)

    # --- sign-in, enrolment, sign-out -----------------------------------------------------
    def pre_token(request: Request) -> str:
        return request.cookies.get(PRE_COOKIE) or secrets.token_urlsafe(24)

    def with_pre(response: Response, token: str) -> Response:
        response.set_cookie(
            PRE_COOKIE,
            token,
            httponly=True,
            secure=deps.cookie_secure,
            samesite="strict",
            max_age=3600,
        )
        return response

    @app.get("/", response_model=None)
    async def home(session: CurrentSession) -> Response:
        return RedirectResponse(home_path(session.principal) if session else "/connexion", 303)

    @app.get("/connexion", response_model=None)
    async def login_page(request: Request, suivant: str | None = None) -> Response:
        token = pre_token(request)
        return with_pre(
            render(request, "login.html", {"pre_token": token, "next": safe_next(suivant) or ""}),
            token,
        )

    @app.post("/connexion", response_model=None)
    async def login(request: Request, form: PreSessionForm) -> Response:
        email = str(form.get("email", ""))
        result = await accounts.sign_in(
            deps.store,
            email,
            str(form.get("password", "")),
            str(form.get("totp", "")),
            client_address(request),
            deps.clock(),
            deps.throttle,
            verify_password,
        )
        if result.outcome != "ok" or result.session_token is None or result.principal is None:
            token = pre_token(request)
            if result.outcome == "throttled" and result.retry_after is not None:
                minutes = max(1, round(result.retry_after.total_seconds() / 60))
                error = (
                    "Trop de tentatives de connexion. Réessayez dans "
                    f"{minutes} minute{'s' if minutes > 1 else ''}."
                )
            else:
                error = "Adresse, mot de passe ou code à usage unique incorrect."
            return with_pre(
                render(
                    request,
                    "login.html",
                    {
                        "pre_token": token,
                        "error": error,
                        "email": email,
                        "next": safe_next(str(form.get("next", ""))) or "",
                    },
                    status_code=429 if result.outcome == "throttled" else 401,
                ),
                token,
            )
        target = safe_next(str(form.get("next", ""))) or home_path(result.principal)
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            result.session_token,
            httponly=True,
            secure=deps.cookie_secure,
            samesite="lax",  # lax: the deep link of an offer e-mail arrives signed in
            max_age=int(deps.session_policy.absolute.total_seconds()),
        )
        response.delete_cookie(PRE_COOKIE)
        return response

    @app.post("/deconnexion", response_model=None)
    async def logout(request: Request, session: CurrentSession) -> Response:
        if session is not None:
            check_csrf(await request.form(), session.csrf_token)
            await deps.store.end_session(session.token_sha256, deps.clock(), "signed_out")
        response = RedirectResponse("/connexion", status_code=303)
        response.delete_cookie(SESSION_COOKIE)
        return response

    @app.get("/enrolement/{token}", response_model=None)
    async def enrol_page(request: Request, token: str) -> Response:
        found = await deps.store.enrolment(accounts.digest(token), deps.clock())
        if found is None:
            return render(
                request,
                "error.html",
                {
                    "title": "Lien d'activation invalide",
                    "code": 404,
                    "message": "Ce lien a déjà servi ou a expiré : demandez-en un nouveau à votre "
                    "opérateur.",
                },
                status_code=404,
            )
        user, secret = found
        uri = _otpauth(secret, user.email)
        pre = pre_token(request)
        return with_pre(
            render(
                request,
                "enrol.html",
                {"pre_token": pre, "user": user, "secret": secret, "uri": uri, "qr": _qr(uri)},
            ),
            pre,
        )

    @app.post("/enrolement/{token}", response_model=None)
    async def enrol(request: Request, token: str, form: PreSessionForm) -> Response:
        now = deps.clock()
        key = accounts.digest(token)
        found = await deps.store.enrolment(key, now)
        if found is None:
            return not_found(request, None)
        user, secret = found
        problem, step = accounts.check_enrolment(
            secret,
            str(form.get("password", "")),
            str(form.get("password_confirmation", "")),
            str(form.get("totp", "")),
            now,
        )
        if problem or step is None:
            pre = pre_token(request)
            return with_pre(
                render(
                    request,
                    "enrol.html",
                    {
                        "pre_token": pre,
                        "user": user,
                        "secret": secret,
                        "uri": _otpauth(secret, user.email),
                        "qr": _qr(_otpauth(secret, user.email)),
                        "error": problem,
                    },
                    status_code=400,
                ),
                pre,
            )
        await deps.store.complete_enrolment(
            key,
            user.user_id,
            await asyncio.to_thread(hash_password, str(form["password"])),
            secret,
            step,
            now,
            client_address(request),
        )
        return RedirectResponse("/connexion?active=1", status_code=303)

    # --- centre ---------------------------------------------------------------------------
    @app.get("/centre/offres", response_model=None)
    async def centre_offers(request: Request, session: CentreUser) -> Response:
        centre_id = session.principal.centre_id or ""
        rows = await deps.store.centre_referrals(centre_id)
        now = deps.clock()
        to_confirm = sum(
            1
            for r in await deps.store.capacities(centre_id)
            if deps.freshness.state(r["as_of"], r["assumed"], now) != "fresh"
        )
        return render(
            request,
            "centre_offers.html",
            {
                "to_confirm": to_confirm,
                "offers": [r for r in rows if r["status"] == "offered"],
                "placed": [r for r in rows if r["status"] == "placed"],
                "centre_name": await deps.store.centre_name(centre_id) or centre_id,
            },
            session,
        )

    @app.get("/centre/offres/{referral_id}", response_model=None)
    async def offer_page(request: Request, referral_id: str, session: CentreUser) -> Response:
        return await _offer(request, session, referral_id)

    async def _offer(
        request: Request,
        session: Session,
        referral_id: str,
        *,
        error: str | None = None,
        notice: str | None = None,
        status_code: int = 200,
    ) -> Response:
        row = await deps.store.referral(referral_id)
        principal = session.principal
        if row is None or not may_see_offer(principal, view := ReferralView.of(row)):
            return not_found(request, session)
        identity = None
        if may_read_identity(principal, view):
            answer = await deps.identity.lookup(referral_id, principal.centre_id or "")
            await deps.store.record_audit(
                "identity_viewed",
                answer.outcome,
                user_id=principal.user_id,
                referral_id=referral_id,
                detail={"reason": answer.reason, "centre_id": principal.centre_id},
                client_address=client_address(request),
            )
            identity = answer
        return render(
            request,
            "offer.html",
            {
                "r": row,
                "identity": identity,
                "history": await deps.store.centre_history(referral_id, principal.centre_id or ""),
                "may_answer": may_answer_offer(principal, view),
                "may_report": may_report_path(principal, view),
                "decline_reasons": DECLINE_REASONS,
                "path_reports": PATH_REPORTS,
                "termination_reasons": TERMINATION_REASONS,
                "services": [s.value for s in ServiceCode],
                "today": deps.clock().astimezone(PARIS).date().isoformat(),
                "error": error,
                "notice": notice,
            },
            session,
            status_code,
        )

    @app.post("/centre/offres/{referral_id}/reponse", response_model=None)
    async def answer(
        request: Request, referral_id: str, session: CentreUser, form: CentreForm
    ) -> Response:
        verdict = form.get("answer")
        reason = form.get("decline_reason") or None
        if verdict not in ("accepted", "declined") or (
            reason is not None and reason not in DECLINE_REASONS
        ):
            return await _offer(
                request, session, referral_id, error="Réponse invalide.", status_code=400
            )
        try:
            await centre_actions.answer_offer(
                session.principal,
                referral_id,
                verdict,  # type: ignore[arg-type]
                reason,  # type: ignore[arg-type]
                str(form.get("decline_text") or "") or None,
                deps.uow_factory,
                deps.topics,
                deps.clock(),
            )
        except NotFound:
            return not_found(request, session)
        except ActionRefused as refused:
            return await _offer(request, session, referral_id, error=str(refused), status_code=400)
        log.info("portal.offer_answered", referral_id=referral_id, answer=verdict)
        if verdict == "declined":
            return RedirectResponse("/centre/offres?refus=1", status_code=303)
        return RedirectResponse(f"/centre/offres/{referral_id}?accepte=1", status_code=303)

    @app.post("/centre/offres/{referral_id}/parcours", response_model=None)
    async def report(
        request: Request, referral_id: str, session: CentreUser, form: CentreForm
    ) -> Response:
        kind = form.get("report")
        termination = form.get("termination_reason") or None
        module = form.get("module") or None
        try:
            occurred_on = date.fromisoformat(str(form.get("occurred_on", "")))
        except ValueError:
            return await _offer(
                request, session, referral_id, error="Date invalide.", status_code=400
            )
        if (
            kind not in PATH_REPORTS
            or (termination is not None and termination not in TERMINATION_REASONS)
            or (module is not None and module not in set(ServiceCode))
        ):
            return await _offer(
                request, session, referral_id, error="Déclaration invalide.", status_code=400
            )
        try:
            await centre_actions.report_path(
                session.principal,
                referral_id,
                kind,  # type: ignore[arg-type]
                occurred_on,
                deps.uow_factory,
                deps.topics,
                deps.clock().astimezone(PARIS).date(),
                justified=form.get("justified") == "oui" if kind == "no_show" else None,
                termination_reason=termination,  # type: ignore[arg-type]
                module=ServiceCode(module) if module else None,
            )
        except NotFound:
            return not_found(request, session)
        except ActionRefused as refused:
            return await _offer(request, session, referral_id, error=str(refused), status_code=400)
        log.info("portal.path_reported", referral_id=referral_id, report=kind)
        return RedirectResponse(f"/centre/offres/{referral_id}?declare={kind}", status_code=303)

    @app.get("/centre/capacites", response_model=None)
    async def capacity_page(request: Request, session: CentreUser) -> Response:
        rows = await deps.store.capacities(session.principal.centre_id or "")
        return render(request, "capacity.html", {"rows": rows, "now": deps.clock()}, session)

    @app.post("/centre/capacites", response_model=None)
    async def capacity_change(request: Request, session: CentreUser, form: CentreForm) -> Response:
        service = str(form.get("service", ""))
        try:
            places = int(str(form.get("places_total", "")))
            code = ServiceCode(service)
        except ValueError:
            return RedirectResponse("/centre/capacites?erreur=1", status_code=303)
        site_id = str(form.get("site_id", ""))
        try:
            await centre_actions.set_capacity(
                session.principal,
                site_id,
                code,
                places,
                deps.uow_factory,
                deps.topics,
                deps.clock(),
            )
        except NotFound:
            return not_found(request, session)
        except ActionRefused:
            return RedirectResponse("/centre/capacites?erreur=1", status_code=303)
        if request.headers.get("HX-Request") == "true":
            # htmx: only the row changes, the page stays where the user is.
            row = next(
                (
                    r
                    for r in await deps.store.capacities(session.principal.centre_id or "")
                    if r["site_id"] == site_id and r["service"] == service
                ),
                None,
            )
            return render(
                request,
                "_capacity_row.html",
                {"row": row, "now": deps.clock(), "saved": True},
                session,
            )
        return RedirectResponse(
            f"/centre/capacites?ok={site_id}#{site_id}-{service}", status_code=303
        )

    # --- prescriber -----------------------------------------------------------------------
    @app.get("/prescripteur/orientations", response_model=None)
    async def prescriber_list(request: Request, session: PrescriberUser) -> Response:
        prescriber_id = session.principal.prescriber_id or ""
        return render(
            request,
            "prescriber_list.html",
            {
                "referrals": await deps.store.prescriber_referrals(prescriber_id),
                "rejections": await deps.store.prescriber_rejections(prescriber_id),
            },
            session,
        )

    @app.get("/prescripteur/orientations/{referral_id}", response_model=None)
    async def prescriber_referral(
        request: Request, referral_id: str, session: PrescriberUser
    ) -> Response:
        row = await deps.store.referral(referral_id)
        if row is None or not may_see_as_prescriber(session.principal, row["prescriber_id"]):
            return not_found(request, session)
        return render(
            request,
            "prescriber_referral.html",
            {
                "r": row,
                "history": await deps.store.history(referral_id),
                "rejections": await deps.store.rejections_of(
                    referral_id, session.principal.prescriber_id or ""
                ),
            },
            session,
        )

    # --- operator -------------------------------------------------------------------------
    @app.get("/operateur/utilisateurs", response_model=None)
    async def users_page(request: Request, session: Operator) -> Response:
        return render(
            request,
            "operator_users.html",
            {"users": await deps.store.users(), "roles": ROLES},
            session,
        )

    @app.post("/operateur/utilisateurs", response_model=None)
    async def users_create(request: Request, session: Operator, form: OperatorForm) -> Response:
        role = str(form.get("role", ""))
        context: dict[str, Any] = {"roles": ROLES}
        try:
            if role not in ROLES:
                raise AccountRefused("Rôle inconnu.")
            created = await accounts.create_user(
                deps.store,
                str(form.get("email", "")),
                str(form.get("display_name", "")),
                role,
                str(form.get("centre_id", "")).strip() or None,
                str(form.get("prescriber_id", "")).strip() or None,
                deps.clock(),
                deps.enrolment_valid,
                created_by=session.principal.user_id,
                known_centres=set(await deps.store.centre_ids()),
            )
            context["link"] = created.link(deps.public_url)
        except AccountRefused as refused:
            context["error"] = str(refused)
        context["users"] = await deps.store.users()
        return render(
            request, "operator_users.html", context, session, 400 if "error" in context else 200
        )

    @app.post("/operateur/utilisateurs/{user_id}/desactiver", response_model=None)
    async def users_disable(
        request: Request,
        user_id: str,
        session: Operator,
        _form: OperatorForm,  # only its token: the user is the path's
    ) -> Response:
        try:
            target = UUID(user_id)
        except ValueError:
            return not_found(request, session)
        if await deps.store.set_disabled(target, session.principal.user_id, deps.clock()) is None:
            return not_found(request, session)
        return RedirectResponse("/operateur/utilisateurs", status_code=303)

    @app.get("/operateur/journal", response_model=None)
    async def audit_page(request: Request, session: Operator) -> Response:
        return render(
            request, "operator_audit.html", {"entries": await deps.store.audit_entries()}, session
        )

    kit = PageKit(render, not_found)
    for register in deps.console:
        register(app, kit)
    return app


def _otpauth(secret: str, email: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=email, issuer_name="Aiguillage")


def _qr(uri: str) -> Markup:
    """The otpauth URI as a QR code an authenticator app scans: inline SVG drawn here (no
    script, no third party); segno's output holds only the path of the code and our title."""
    svg = segno.make(uri, error="m").svg_inline(
        scale=4, title="QR code à scanner avec votre application d'authentification"
    )
    return Markup(svg)  # noqa: S704 - generated SVG, no user input besides the encoded URI
