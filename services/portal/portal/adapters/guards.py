"""Who may call a route, said in its signature: FastAPI dependencies for the signed-in user, their
role and the CSRF token of a state-changing form.

A page names its guard as the type of a parameter, ``session: CentreUser`` (or
``PrescriberUser``, ``Operator``); a form adds ``form: CentreForm`` (or ``OperatorForm``): the
form, read once its token matched the session's. Pre-session forms (sign-in, enrolment) take
``PreSessionForm``. A guard refuses by raising; ``install`` turns each refusal into its response:

- no session (none, signed out, or idle or past its absolute limit: such a session is ended on
  the way, audited by the store): a page redirects to the sign-in, which comes back to it; a form
  answers 403 like a forged one (there is no token to check it against);
- a page or form of another role: 403 *Accès refusé*, with the user's own navigation. The role is
  checked before the token (a form's guard depends on its role's), so a user of another role is
  refused for the role whatever the token;
- a missing or wrong token: 403 *Requête refusée*, logged, nothing done.

Who may see which referral is not decided here but in ``portal.domain.access``, once the route has
read it.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.datastructures import FormData

from aiguillage_common.logging import get_logger
from portal.domain.access import Principal, is_centre, is_prescriber, may_operate
from portal.domain.security import SessionPolicy
from portal.use_cases import accounts
from portal.use_cases.accounts import AccountStore, Session

log = get_logger("aiguillage.portal")
SESSION_COOKIE = "aiguillage_session"
PRE_COOKIE = "aiguillage_pre"  # CSRF for the forms shown before a session exists


class Forbidden(Exception):
    """A form without the right CSRF token (or without a session): 403, nothing done."""


class SignInRequired(Exception):
    """A page asked for without a session: to the sign-in, then back."""


class WrongRole(Exception):
    """A signed-in user on a page or form of another role: 403."""

    def __init__(self, session: Session) -> None:
        super().__init__(session.principal.role)
        self.session = session


@dataclass(frozen=True)
class SessionReader:
    """The session a request's cookie opens, if it still may (the store ends an expired one)."""

    store: AccountStore
    clock: Callable[[], datetime]
    policy: SessionPolicy

    async def current(self, request: Request) -> Session | None:
        return await accounts.resolve_session(
            self.store, request.cookies.get(SESSION_COOKIE), self.clock(), self.policy
        )


Render = Callable[..., HTMLResponse]


def install(app: FastAPI, sessions: SessionReader, render: Render) -> None:
    """Where the guards read sessions, and the response each refusal gets."""
    app.state.sessions = sessions

    @app.exception_handler(SignInRequired)
    async def sign_in_first(request: Request, _: SignInRequired) -> Response:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/connexion?suivant={quote(target)}", status_code=303)

    @app.exception_handler(WrongRole)
    async def wrong_role(request: Request, refused: WrongRole) -> HTMLResponse:
        return render(
            request,
            "error.html",
            {
                "title": "Accès refusé",
                "code": 403,
                "message": "Cette page n'est pas pour votre rôle.",
            },
            refused.session,
            403,
        )

    @app.exception_handler(Forbidden)
    async def forbidden(request: Request, _: Forbidden) -> HTMLResponse:
        log.warning("portal.csrf_refused", path=request.url.path)
        return render(
            request,
            "error.html",
            {
                "title": "Requête refusée",
                "code": 403,
                "message": "Le formulaire a expiré ou ne vient pas de ce site. Rechargez la page "
                "et recommencez.",
            },
            None,
            403,
        )


def check_csrf(form: FormData, expected: str | None) -> None:
    given = form.get("csrf_token")
    if (
        not expected
        or not isinstance(given, str)
        or not hmac.compare_digest(given.encode(), expected.encode())
    ):
        raise Forbidden


# --- the session, whoever it is ------------------------------------------------------------------
async def current_session(request: Request) -> Session | None:
    # FastAPI runs a dependency once per request: the session is read (and touched) once, however
    # many guards of a route ask for it.
    sessions: SessionReader = request.app.state.sessions
    return await sessions.current(request)


CurrentSession = Annotated[Session | None, Depends(current_session)]


async def signed_in(request: Request, session: CurrentSession) -> Session:
    if session is None:
        if request.method == "GET":
            raise SignInRequired
        raise Forbidden
    return session


SignedIn = Annotated[Session, Depends(signed_in)]


# --- roles ---------------------------------------------------------------------------------------
def _of_role(may: Callable[[Principal], bool]) -> Callable[[Session], Awaitable[Session]]:
    """A guard letting through the signed-in users the domain rule ``may`` lets through. Made
    once per rule, at import: FastAPI runs one dependency once per request."""

    async def guard(session: SignedIn) -> Session:
        if not may(session.principal):
            raise WrongRole(session)
        return session

    return guard


CentreUser = Annotated[Session, Depends(_of_role(is_centre))]
PrescriberUser = Annotated[Session, Depends(_of_role(is_prescriber))]
Operator = Annotated[Session, Depends(_of_role(may_operate))]


# --- forms that change something ----------------------------------------------------------------
async def _checked_form(request: Request, session: Session) -> FormData:
    form = await request.form()
    check_csrf(form, session.csrf_token)
    return form


async def centre_form(request: Request, session: CentreUser) -> FormData:
    return await _checked_form(request, session)


async def operator_form(request: Request, session: Operator) -> FormData:
    return await _checked_form(request, session)


async def pre_session_form(request: Request) -> FormData:
    """A form shown before a session exists: its token is the double-submit cookie's."""
    form = await request.form()
    check_csrf(form, request.cookies.get(PRE_COOKIE))
    return form


CentreForm = Annotated[FormData, Depends(centre_form)]
OperatorForm = Annotated[FormData, Depends(operator_form)]
PreSessionForm = Annotated[FormData, Depends(pre_session_form)]


def client_address(request: Request) -> str:
    """Who is asking, as the audit and the sign-in throttle record it."""
    return request.client.host if request.client else "unknown"
