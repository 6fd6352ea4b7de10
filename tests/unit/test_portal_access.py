"""Who may reach which page of the portal, through its real routes (FastAPI, in process) with a
fake store: no session sends a page to the sign-in (and back) and refuses a form; an expired
session is ended and counts as none; another role's page or action answers 403 before its CSRF
token is even read; a form with a missing or wrong token answers 403 and changes nothing.

Every route under /centre, /prescripteur and /operateur is enumerated from the app, the operator
console's included, so a page added without its guard fails here."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, Literal, cast

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute

from portal.adapters.console import dead_letters, indicators, network, referrals
from portal.adapters.guards import SESSION_COOKIE
from portal.adapters.web import WebDeps, create_web_app
from portal.domain.capacity import FreshnessPolicy
from portal.domain.security import SessionPolicy, ThrottlePolicy
from portal.use_cases.accounts import digest
from portal.use_cases.centre_actions import Topics
from tests.support.portal_sessions import InMemorySessions

NOW = datetime(2026, 11, 30, 10, 0, 7, tzinfo=UTC)
POLICY = SessionPolicy(idle=timedelta(minutes=30), absolute=timedelta(hours=10))
ROLE_OF_SECTION = {"centre": "centre", "prescripteur": "prescriber", "operateur": "operator"}
CSRF_REFUSED = "Requête refusée"
ROLE_REFUSED = "Accès refusé"


class FakeStore(InMemorySessions):
    """The store calls the guarded routes make before or instead of their work."""

    def __init__(self) -> None:
        super().__init__()
        self.ended: list[str] = []
        self.disabled: list[uuid.UUID] = []

    def sign_in(self, role: str, *, last_seen: datetime = NOW) -> tuple[str, str]:
        """A session of a user of ``role``: its cookie value and its CSRF token."""
        token, csrf = f"cookie-{uuid.uuid4()}", f"csrf-{uuid.uuid4()}"
        self.add_session(digest(token), uuid.uuid4(), csrf, last_seen, role, f"Agent {role}")
        return token, csrf

    def session_ended(self, reason: str) -> None:
        self.ended.append(reason)

    async def set_disabled(
        self, user_id: uuid.UUID, by: uuid.UUID | None, now: datetime
    ) -> Literal["disabled", "already"] | None:
        self.disabled.append(user_id)
        return "disabled"

    async def capacities(self, centre_id: str) -> list[Any]:
        return []


def _signed_in(
    client: httpx.AsyncClient, store: FakeStore, role: str, *, last_seen: datetime = NOW
) -> str:
    """The client signed in as a user of ``role``; the session's CSRF token."""
    cookie, csrf = store.sign_in(role, last_seen=last_seen)
    client.cookies.set(SESSION_COOKIE, cookie)
    return csrf


def _app(store: FakeStore) -> FastAPI:
    # The console's readers are never reached by a refused request: none is given.
    nothing = cast(Any, None)
    pages = network.NetworkPages(nothing, nothing, nothing, nothing, nothing, lambda: NOW)
    charts = indicators.IndicatorPages(nothing, nothing, lambda: NOW)
    return create_web_app(
        WebDeps(
            store=cast(Any, store),
            uow_factory=nothing,
            identity=nothing,
            topics=Topics("t.centres", "t.directory"),
            session_policy=POLICY,
            throttle=ThrottlePolicy(5, 30, timedelta(minutes=15)),
            public_url="http://portal.test",
            cookie_secure=False,
            enrolment_valid=timedelta(hours=72),
            freshness=FreshnessPolicy(timedelta(days=30), timedelta(days=7)),
            dsfr_dir=Path("/nonexistent"),
            htmx_file=Path("/nonexistent/htmx.min.js"),
            clock=lambda: NOW,
            console=(
                partial(referrals.register, places=nothing, store=cast(Any, store)),
                partial(dead_letters.register, console=nothing),
                pages.register,
                charts.register,
            ),
        )
    )


def _guarded(app: FastAPI, method: str) -> list[tuple[str, str]]:
    """(role, path) of every route of a role's section, path parameters filled in."""
    found = []
    for route in app.routes:
        if isinstance(route, APIRoute) and method in (route.methods or ()):
            section = route.path.strip("/").split("/")[0]
            if section in ROLE_OF_SECTION:
                path = re.sub(r"\{[^}]+\}", "0123456789ab", route.path)
                found.append((ROLE_OF_SECTION[section], path))
    return found


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


@pytest.fixture
async def client(store: FakeStore) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=_app(store))
    async with httpx.AsyncClient(transport=transport, base_url="http://portal.test") as c:
        yield c


def test_every_section_has_pages_and_forms(store: FakeStore) -> None:
    app = _app(store)
    gets, posts = _guarded(app, "GET"), _guarded(app, "POST")
    assert {role for role, _ in gets} == set(ROLE_OF_SECTION.values())
    assert {role for role, _ in posts} == {"centre", "operator"}
    assert ("operator", "/operateur/lettres-mortes/0123456789ab/rejouer") in posts


async def test_a_page_without_a_session_sends_to_the_sign_in_and_back(
    client: httpx.AsyncClient, store: FakeStore
) -> None:
    for _, path in _guarded(_app(store), "GET"):
        response = await client.get(path)
        assert response.status_code == 303, path
        assert response.headers["location"] == f"/connexion?suivant={path}", path
    response = await client.get("/centre/offres?refus=1")
    assert response.headers["location"] == "/connexion?suivant=/centre/offres%3Frefus%3D1"
    assert response.headers["cache-control"] == "no-store"


async def test_a_form_without_a_session_is_refused(
    client: httpx.AsyncClient, store: FakeStore
) -> None:
    for _, path in _guarded(_app(store), "POST"):
        response = await client.post(path, data={"csrf_token": "anything"})
        assert response.status_code == 403, path
        assert CSRF_REFUSED in response.text, path
    assert store.disabled == []


async def test_an_expired_session_is_ended_and_counts_as_none(
    client: httpx.AsyncClient, store: FakeStore
) -> None:
    _signed_in(client, store, "operator", last_seen=NOW - timedelta(minutes=31))
    response = await client.get("/operateur/utilisateurs")
    assert response.headers["location"] == "/connexion?suivant=/operateur/utilisateurs"
    assert store.ended == ["idle_expired"]

    csrf = _signed_in(client, store, "operator", last_seen=NOW - timedelta(hours=10))
    target = f"/operateur/utilisateurs/{uuid.uuid4()}/desactiver"
    response = await client.post(target, data={"csrf_token": csrf})
    assert response.status_code == 403
    assert CSRF_REFUSED in response.text
    assert store.ended == ["idle_expired", "expired"]
    assert store.disabled == []


@pytest.mark.parametrize("role", ["centre", "prescriber", "operator"])
async def test_another_roles_page_answers_403_with_the_users_own_navigation(
    client: httpx.AsyncClient, store: FakeStore, role: str
) -> None:
    _signed_in(client, store, role)
    others = [path for owner, path in _guarded(_app(store), "GET") if owner != role]
    assert others
    for path in others:
        response = await client.get(path)
        assert response.status_code == 403, path
        assert ROLE_REFUSED in response.text, path
        assert f"Agent {role}" in response.text, path  # signed in, still: the session is kept


@pytest.mark.parametrize("role", ["centre", "prescriber", "operator"])
async def test_another_roles_action_is_refused_for_the_role_whatever_the_token(
    client: httpx.AsyncClient, store: FakeStore, role: str
) -> None:
    csrf = _signed_in(client, store, role)
    others = [path for owner, path in _guarded(_app(store), "POST") if owner != role]
    assert others
    for path in others:
        for form in ({"csrf_token": csrf}, {"csrf_token": "forged"}, {}):
            response = await client.post(path, data=form)
            assert response.status_code == 403, (path, form)
            assert ROLE_REFUSED in response.text, (path, form)
    assert store.disabled == []
    assert len(store.sessions) == 1  # the session lives on


async def test_a_form_with_a_missing_or_wrong_token_is_refused_and_changes_nothing(
    client: httpx.AsyncClient, store: FakeStore
) -> None:
    csrf = _signed_in(client, store, "operator")
    user = uuid.uuid4()
    target = f"/operateur/utilisateurs/{user}/desactiver"
    for form in ({}, {"csrf_token": ""}, {"csrf_token": "forged"}, {"csrf_token": csrf + "x"}):
        response = await client.post(target, data=form)
        assert response.status_code == 403, form
        assert CSRF_REFUSED in response.text, form
        assert "Agent operator" not in response.text  # the CSRF page is shown as to no one
    assert store.disabled == []

    response = await client.post(target, data={"csrf_token": csrf})
    assert response.status_code == 303
    assert response.headers["location"] == "/operateur/utilisateurs"
    assert store.disabled == [user]


async def test_a_centre_users_capacity_form_needs_its_token(
    client: httpx.AsyncClient, store: FakeStore
) -> None:
    csrf = _signed_in(client, store, "centre")
    form = {"site_id": "HDF-ARRAS-01", "service": "not-a-service", "places_total": "3"}
    refused = await client.post("/centre/capacites", data={**form, "csrf_token": "forged"})
    assert refused.status_code == 403
    assert CSRF_REFUSED in refused.text
    # With its token the form is read (and this service code refused by the page itself).
    read = await client.post("/centre/capacites", data={**form, "csrf_token": csrf})
    assert read.status_code == 303
    assert read.headers["location"] == "/centre/capacites?erreur=1"


async def test_signing_out_needs_the_sessions_token_and_signing_in_the_pre_session_one(
    client: httpx.AsyncClient, store: FakeStore
) -> None:
    csrf = _signed_in(client, store, "centre")
    refused = await client.post("/deconnexion", data={"csrf_token": "forged"})
    assert refused.status_code == 403
    assert store.ended == []
    done = await client.post("/deconnexion", data={"csrf_token": csrf})
    assert (done.status_code, done.headers["location"]) == (303, "/connexion")
    assert store.ended == ["signed_out"]

    client.cookies.clear()
    signed_out = await client.post("/deconnexion", data={})
    assert (signed_out.status_code, signed_out.headers["location"]) == (303, "/connexion")
    forged = await client.post("/connexion", data={"email": "a@b.fr", "csrf_token": "x"})
    assert forged.status_code == 403
    assert CSRF_REFUSED in forged.text
