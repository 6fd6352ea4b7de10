"""Issue 10's operator console in a real browser: a referral's timeline and the dead letters,
against the real intake, routing, portal, Kafka and PostgreSQL.

Lille's prosecutor switches to its next signing key before the registry knows it: intake refuses
its referral as ``unknown_prescriber``. Once the registry is fixed, an operator finds the dead
letter in the console, inspects it, replays it: the referral is admitted and routed once, and a
second replay publishes nothing. The operator finds the referral by id and reads its timeline in
order (refused, replayed by the operator, admitted, offered), discards another dead letter with a
reason; both actions are in the portal's audit log and in the operations schema under the
operator's portal id. The person's made-up name, phone and address never appear on these pages
nor in the portal's logs. A centre user gets 403 on every operator page and action.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from playwright.async_api import Browser, Page

from aiguillage_common.migrations.cli import migrate_services
from aiguillage_demo.samples import make_referral
from aiguillage_demo.signing import SECRETS_ENV, demo_key_ids, demo_secret, sign_as
from aiguillage_schemas import topics
from aiguillage_schemas.events.prescribers import (
    Jurisdiction,
    PrescriberEntry,
    PrescriberRegistryUpdated,
)
from aiguillage_schemas.signing import sign
from tests.browser.conftest import (
    IDENTITY_SECRET,
    SCREENSHOTS,
    Portal,
    new_context,
    serious_accessibility_violations,
    sign_in,
    start_portal_stack,
)
from tests.browser.test_portal import with_identity
from tests.conftest import Isolated, wait_started
from tests.support.waiting import eventually

LILLE = "parquet-tj-lille"
NEXT_KEY = "parquet-tj-lille-2027"  # in intake's secrets, not yet in the registry
NEXT_SECRET = "next-key-console-test-secret"
OPERATIONS_SECRET = "operations-console-test-secret"


def _operations_schema(isolated: Isolated) -> str:
    return f"operations{isolated.suffix}"


@pytest.fixture
async def operations(isolated: Isolated) -> AsyncIterator[str]:
    """The operators' actions schema of this test (not among the services' schemas)."""
    await migrate_services(isolated.endpoints.database_url, ["operations"], isolated.suffix)
    yield _operations_schema(isolated)
    if not os.environ.get("AIGUILLAGE_KEEP_TEST_SCHEMAS"):
        await isolated.db.execute(f"DROP SCHEMA IF EXISTS {_operations_schema(isolated)} CASCADE")


def _console_env(isolated: Isolated) -> dict[str, str]:
    """The portal reads the other services' schemas and the operators' actions (this test's)."""
    return {
        "AIGUILLAGE_PORTAL_CONSOLE_INTAKE_SCHEMA": isolated.schema("referral-intake"),
        "AIGUILLAGE_PORTAL_CONSOLE_ROUTING_SCHEMA": isolated.schema("routing"),
        "AIGUILLAGE_PORTAL_CONSOLE_NOTIFICATIONS_SCHEMA": isolated.schema("notifications"),
        "AIGUILLAGE_PORTAL_CONSOLE_OPERATIONS_SCHEMA": _operations_schema(isolated),
        "AIGUILLAGE_OPERATIONS_SECRET": OPERATIONS_SECRET,
    }


async def _portal_pool(isolated: Isolated) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        isolated.endpoints.database_url,
        min_size=1,
        max_size=2,
        server_settings={"search_path": isolated.schema("portal")},
    )
    assert pool is not None
    return pool


@pytest.fixture
async def console(isolated: Isolated, operations: str) -> AsyncIterator[Portal]:
    """Intake (knowing Lille's next key), routing and the portal with its console."""
    secrets = {key: demo_secret(key) for key in demo_key_ids().values()}
    secrets[NEXT_KEY] = NEXT_SECRET
    stack = await start_portal_stack(
        isolated,
        intake_env={
            "AIGUILLAGE_OPERATIONS_SECRET": OPERATIONS_SECRET,
            SECRETS_ENV: json.dumps(secrets),
            # Intake sees a registry update up to REGISTRY_CACHE_S (5 s) after storing it (its
            # lookups are cached, unknown keys too): shorter here, so that the operator's
            # replay right after the fix is not refused again by the cache.
            "AIGUILLAGE_INTAKE_REGISTRY_CACHE_S": "0.2",
        },
        portal_env={
            "AIGUILLAGE_INTAKE_IDENTITY_API_SECRET": IDENTITY_SECRET,
            **_console_env(isolated),
        },
    )
    try:
        yield stack
    finally:
        await stack.pool.close()


async def _accessible(page: Page) -> None:
    found = await serious_accessibility_violations(page)
    assert found == [], f"{page.url}: {found}"


async def _decisions(isolated: Isolated, referral_id: str) -> int:
    return await isolated.count(
        f"SELECT count(*) FROM {isolated.schema('routing')}.decisions WHERE referral_id = $1",
        referral_id,
    )


async def _accepted(isolated: Isolated, referral_id: str) -> int:
    records = await isolated.kafka.read_all(isolated.topic(topics.ACCEPTED))
    return sum(1 for r in records if r.key == referral_id)


async def test_an_operator_replays_a_dead_letter_once_and_reads_the_referral_timeline(
    console: Portal, browser: Browser
) -> None:
    isolated = console.isolated
    token = uuid.uuid4().hex[:8]
    canaries = {
        "last_name": f"Canarylast{token}",
        "first_name": f"Canaryfirst{token}",
        "phone": f"06{int(token, 16) % 10**8:08d}",
        "address": f"7 impasse Canary{token}",
    }
    referral = with_identity(make_referral(0, referral_id=f"ref-cons{isolated.suffix}"), **canaries)
    assert referral.data.prescriber.prescriber_id == LILLE
    intake_topic = isolated.topic(topics.INTAKE)
    rejected_topic = isolated.topic(topics.REJECTED)
    value = referral.model_dump_json().encode()
    signed = sign(value, NEXT_KEY, NEXT_SECRET.encode(), timestamp=int(time.time()))
    await isolated.kafka.send_raw(
        intake_topic, value, referral.subject.encode(), [(k, v.encode()) for k, v in signed.items()]
    )
    # A record that is not a referral at all: nothing to replay, the operator discards it.
    bad_key = f"ref-bad-{token}"
    await isolated.kafka.send_raw(
        intake_topic,
        b"<referral/>",
        bad_key.encode(),
        [(k, v.encode()) for k, v in sign_as(LILLE, b"<referral/>").items()],
    )
    await eventually(
        lambda: isolated.kafka.read_all(rejected_topic),
        lambda records: len(records) >= 2,
        timeout_s=60,
        what="both records refused by intake",
    )
    # The registry learns Lille's next key.
    await isolated.kafka.send_event(
        isolated.topic(topics.PRESCRIBERS_REGISTRY),
        PrescriberRegistryUpdated(
            source="registry-admin",
            correlation_id=uuid.uuid4(),
            subject=LILLE,
            data=PrescriberEntry(
                prescriber_id=LILLE,
                kind="parquet",
                name="Parquet de Lille",
                jurisdiction=Jurisdiction(departements=["59"]),
                signing_key_id=NEXT_KEY,
            ),
        ),
    )
    prescribers = f"{isolated.schema('referral-intake')}.prescribers"
    await eventually(
        lambda: isolated.db.fetchval(
            f"SELECT signing_key_id FROM {prescribers} WHERE prescriber_id = $1", LILLE
        ),
        lambda key: key == NEXT_KEY,
        timeout_s=60,
        what="the registry update stored by intake",
    )
    operator_secret = await console.user(f"ops-{token}@aiguillage.example", "operator")
    operator_id = await console.pool.fetchval(
        "SELECT user_id FROM users WHERE email = $1", f"ops-{token}@aiguillage.example"
    )
    pages: list[str] = []

    # --- the dead letters: listed with counts, filtered, inspected ------------------------
    page = await (await new_context(browser)).new_page()
    await sign_in(page, console.url, f"ops-{token}@aiguillage.example", operator_secret)
    await page.goto(f"{console.url}/operateur/lettres-mortes")
    listed = page.locator("#table-lettres-mortes")
    assert await listed.get_by_role("link", name=referral.subject).count() == 1
    assert await listed.get_by_role("link", name=bad_key).count() == 1
    counts = await page.locator("#table-comptes").inner_text()
    assert "unknown_prescriber\t1" in counts, counts
    assert "not_json\t1" in counts, counts
    await _accessible(page)
    pages.append(await page.content())
    await page.get_by_label("Motif").select_option("unknown_prescriber")
    await page.get_by_role("button", name="Filtrer").click()
    await page.wait_for_load_state()
    assert "motif=unknown_prescriber" in page.url
    assert await listed.get_by_role("link", name=bad_key).count() == 0
    row = listed.locator("tbody tr").filter(has_text=referral.subject)
    await row.locator("td").first.get_by_role("link").click()
    await page.wait_for_load_state()
    metadata = await page.locator("#table-lettre-morte").inner_text()
    assert "unknown_prescriber" in metadata
    assert "headers.x-aiguillage-key-id" in metadata
    assert "SHA-256 matches" in metadata
    assert "(not shown)" in metadata  # the signature header: named, never shown
    assert await page.locator("#statut").get_attribute("data-state") == "open"
    await _accessible(page)
    pages.append(await page.content())
    dead_letter_url = page.url

    # --- replay: processed once --------------------------------------------------------------
    await page.get_by_role("button", name="Rejouer").click()
    await page.wait_for_load_state()
    assert await page.locator("#resultat").get_attribute("data-result") == "replayed"
    assert await page.locator("#statut").get_attribute("data-state") == "replayed"
    pages.append(await page.content())
    routed = await console.wait_referral(
        referral.subject,
        lambda r: r["status"] == "offered" and r["judicial_frame"] is not None,
        "the replayed referral offered",
    )
    assert await _decisions(isolated, referral.subject) == 1
    intake_records = len(await isolated.kafka.read_all(intake_topic))
    await page.get_by_role("button", name="Rejouer").click()
    await page.wait_for_load_state()
    assert await page.locator("#resultat").get_attribute("data-result") == "skipped"
    assert "déjà" in (await page.locator("#resultat").inner_text()).lower()
    pages.append(await page.content())
    assert len(await isolated.kafka.read_all(intake_topic)) == intake_records  # nothing sent
    assert await _accepted(isolated, referral.subject) == 1
    assert await _decisions(isolated, referral.subject) == 1

    # --- discard the other one, with a reason -------------------------------------------------
    await page.goto(f"{console.url}/operateur/lettres-mortes?statut=open")
    await (
        listed.locator("tbody tr")
        .filter(has_text=bad_key)
        .locator("td")
        .first.get_by_role("link")
        .click()
    )
    await page.wait_for_load_state()
    await page.get_by_label("Raison").fill("pas du JSON ; Lille renvoie l'orientation")
    await page.get_by_role("button", name="Écarter").click()
    await page.wait_for_load_state()
    assert await page.locator("#statut").get_attribute("data-state") == "discarded"
    pages.append(await page.content())
    await page.goto(f"{console.url}/operateur/lettres-mortes")  # open ones: none left
    assert await page.locator("#table-lettres-mortes tbody tr").count() == 0

    # --- the holding centre reads the identity on its offer page (the canary is real) ---------
    centre_secret = await console.user(
        f"agent-{token}@centre.example", "centre", routed["centre_id"]
    )
    centre = await (await new_context(browser)).new_page()
    await sign_in(centre, console.url, f"agent-{token}@centre.example", centre_secret)
    await centre.goto(f"{console.url}/centre/offres/{referral.subject}")
    assert canaries["last_name"] in await centre.locator("#identite").inner_text()
    centre_user = await console.pool.fetchval(
        "SELECT user_id FROM users WHERE email = $1", f"agent-{token}@centre.example"
    )

    # --- the referral's timeline ---------------------------------------------------------------
    await page.goto(f"{console.url}/operateur/orientations")
    await page.get_by_label("Identifiant de l'orientation").fill("pas un identifiant !")
    await page.get_by_role("button", name="Afficher l'historique").click()
    await page.wait_for_load_state()
    assert "n'est pas un identifiant" in await page.locator("#erreur-orientation").inner_text()
    await page.get_by_label("Identifiant de l'orientation").fill(f"ref-inconnue-{token}")
    await page.get_by_role("button", name="Afficher l'historique").click()
    await page.wait_for_load_state()
    assert "Aucun service" in await page.locator("#erreur-orientation").inner_text()
    await page.get_by_label("Identifiant de l'orientation").fill(referral.subject)
    await page.get_by_role("button", name="Afficher l'historique").click()
    await page.wait_for_load_state()
    assert page.url.endswith(f"/operateur/orientations/{referral.subject}")
    kinds = await page.locator("#table-historique tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.kind)"
    )
    steps = [
        "referral.rejected",
        "dead_letter.replayed",
        "referral.admitted",
        "decision.routed",
        "portal.identity_shown",
    ]
    assert all(step in kinds for step in steps), kinds
    assert [kinds.index(step) for step in steps] == sorted(kinds.index(s) for s in steps), kinds
    table = await page.locator("#table-historique").inner_text()
    assert f"operator:portal:u:{operator_id}" in table  # who replayed it
    assert f"prescriber:{LILLE}" in table
    assert f"centre_user:u:{centre_user}" in table  # who was shown the identity
    assert "unknown_prescriber" in table  # why it was refused
    assert f"judicial_frame={referral.data.frame.judicial_frame}" in table  # a code, no text
    await _accessible(page)
    await page.screenshot(path=str(SCREENSHOTS / "console-timeline.png"), full_page=True)
    pages.append(await page.content())
    await page.get_by_role("link", name="Voir la lettre morte").first.click()
    await page.wait_for_load_state()
    assert page.url == dead_letter_url

    # --- audited, under the operator's portal id --------------------------------------------
    audit = {
        (r["action"], r["outcome"])
        for r in await console.pool.fetch(
            "SELECT action, outcome FROM audit_log WHERE user_id = $1", operator_id
        )
    }
    assert {
        ("dead_letter_replay", "replayed"),
        ("dead_letter_replay", "skipped"),
        ("dead_letter_discard", "discarded"),
        ("timeline_viewed", "found"),
    } <= audit, audit
    actions = await isolated.db.fetch(
        f"SELECT action, operator FROM {_operations_schema(isolated)}.dead_letter_actions"
    )
    assert sorted((a["action"], a["operator"]) for a in actions) == [
        ("discarded", f"portal:u:{operator_id}"),
        ("replayed", f"portal:u:{operator_id}"),
    ]

    # --- never the person's identity -----------------------------------------------------------
    logs = console.process.logs()
    assert '"portal.dead_letter_replay"' in logs  # the logs are there, at DEBUG
    for html in pages:
        for canary in canaries.values():
            assert canary not in html
    for canary in canaries.values():
        assert canary not in logs


# Every operator page and action of the console areas built here, and the older ones.
OPERATOR_PAGES = (
    "/operateur/orientations",
    "/operateur/orientations?reference=ref-2026-000001",
    "/operateur/orientations/ref-2026-000001",
    "/operateur/lettres-mortes",
    "/operateur/lettres-mortes?statut=all",
    "/operateur/lettres-mortes/0123456789",
    "/operateur/utilisateurs",
    "/operateur/journal",
)
OPERATOR_ACTIONS = (
    "/operateur/lettres-mortes/0123456789/rejouer",
    "/operateur/lettres-mortes/0123456789/ecarter",
)


@pytest.fixture
async def portal_alone(isolated: Isolated, operations: str) -> AsyncIterator[Portal]:
    """Only the portal: refusing a role needs nothing behind it."""
    process = isolated.service("portal", **_console_env(isolated))
    process.start()
    await wait_started(process)
    pool = await _portal_pool(isolated)
    try:
        yield Portal(isolated, process, process, process, pool)
    finally:
        await pool.close()


async def test_a_centre_user_gets_403_on_every_operator_page(
    portal_alone: Portal, browser: Browser
) -> None:
    secret = await portal_alone.user("agent-console@arras.example", "centre", "HDF-ARRAS")
    page = await (await new_context(browser)).new_page()
    await sign_in(page, portal_alone.url, "agent-console@arras.example", secret)
    # The centre user's own, valid CSRF token: the role is what refuses.
    csrf = await page.locator("input[name=csrf_token]").first.get_attribute("value")
    assert csrf
    refused: dict[str, int] = {}
    for path in OPERATOR_PAGES:
        response = await page.goto(f"{portal_alone.url}{path}")
        assert response is not None
        refused[f"GET {path}"] = response.status
    for path in OPERATOR_ACTIONS:
        posted = await page.request.post(
            f"{portal_alone.url}{path}", form={"csrf_token": csrf, "raison": "essai"}
        )
        refused[f"POST {path}"] = posted.status
    assert refused == dict.fromkeys(refused, 403), refused
    # Nothing was recorded for them.
    actions = await portal_alone.isolated.count(
        f"SELECT count(*) FROM {_operations_schema(portal_alone.isolated)}.dead_letter_actions"
    )
    assert actions == 0
