"""Browser tests: Debian's Chromium driven by Playwright, against the real services, Kafka and
PostgreSQL. Chromium missing is a failure, never a skip (.ci/run installs it)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pyotp
import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright

from aiguillage_demo.signing import PORTAL_KEY_ID, demo_secret
from portal.adapters.passwords import hash_password
from portal.adapters.postgres import PortalStore
from portal.adapters.secret_box import SecretBox
from portal.domain.access import Role
from portal.use_cases.accounts import create_enrolled_user
from tests.conftest import Isolated, wait_started
from tests.support.services import TEST_TOTP_KEY, ServiceProcess
from tests.support.waiting import eventually

ROOT = Path(__file__).resolve().parents[2]
AXE = ROOT / "services" / "portal" / "node_modules" / "axe-core" / "axe.min.js"
# The README's screenshots are the tests' own: `AIGUILLAGE_SCREENSHOTS_DIR=docs/img ./run test
# tests/browser` renews them; otherwise they go to a temporary folder, so a test run leaves the
# working tree as it was.
SCREENSHOTS = Path(
    os.environ.get("AIGUILLAGE_SCREENSHOTS_DIR") or tempfile.mkdtemp(prefix="aiguillage-shots-")
)
# The portal signs with the demo key routing is given in every test (demo_routing_secrets_json).
PORTAL_SECRET = demo_secret(PORTAL_KEY_ID)
IDENTITY_SECRET = "identity-api-secret-for-tests"
PASSWORD = "un mot de passe de test"


def chromium_path() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    pytest.fail(
        "Debian's Chromium is not installed (apt-get install -y chromium): browser tests fail "
        "rather than skip",
        pytrace=False,
    )


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=chromium_path(),
            # As root in CI, Chromium's sandbox cannot start.
            args=["--no-sandbox", "--disable-dev-shm-usage"],
        )
        try:
            yield launched
        finally:
            await launched.close()


@dataclass
class Portal:
    """The running portal, with intake (identity API) and routing behind it."""

    isolated: Isolated
    process: ServiceProcess
    intake: ServiceProcess
    routing: ServiceProcess
    pool: asyncpg.Pool

    @property
    def url(self) -> str:
        return self.process.url

    @property
    def schema(self) -> str:
        return self.isolated.schema("portal")

    async def user(
        self,
        email: str,
        role: Role,
        centre_id: str | None = None,
        prescriber_id: str | None = None,
    ) -> str:
        """An enrolled user; returns their TOTP secret."""
        _, secret = await create_enrolled_user(
            PortalStore(self.pool, SecretBox(TEST_TOTP_KEY)),
            email,
            email.split("@")[0],
            role,
            centre_id,
            prescriber_id,
            PASSWORD,
            datetime.now(UTC),
            hash_password,
        )
        return secret

    async def referral(self, referral_id: str) -> asyncpg.Record | None:
        row: asyncpg.Record | None = await self.pool.fetchrow(
            "SELECT * FROM referrals WHERE referral_id = $1", referral_id
        )
        return row

    async def wait_referral(
        self, referral_id: str, accept: object, what: str, timeout_s: float = 90
    ) -> asyncpg.Record:
        found = await eventually(
            lambda: self.referral(referral_id),
            lambda row: row is not None and accept(row),  # type: ignore[operator]
            timeout_s,
            0.2,
            what,
        )
        assert found is not None
        return found


def _identity_api_port(intake: ServiceProcess) -> int | None:
    for line in intake.logs().splitlines():
        if '"identity_api.listening"' in line:
            return int(json.loads(line)["port"])
    return None


async def start_portal_stack(
    isolated: Isolated,
    intake_env: dict[str, str] | None = None,
    portal_env: dict[str, str] | None = None,
) -> Portal:
    """Intake (with its identity API), routing and the portal as processes, the portal signing
    with the key routing knows it by; ``*_env`` adds to a process's settings."""
    intake = isolated.service(
        "referral-intake",
        AIGUILLAGE_INTAKE_IDENTITY_API_PORT="0",
        AIGUILLAGE_INTAKE_IDENTITY_API_SECRET=IDENTITY_SECRET,
        **(intake_env or {}),
    )
    # Routing checks the portal's signature: its secrets (service_env) hold the portal's key.
    routing = isolated.service("routing")
    assert json.loads(routing.env["AIGUILLAGE_ROUTING_SIGNING_SECRETS"])[PORTAL_KEY_ID] == (
        PORTAL_SECRET
    )
    intake.start()
    routing.start()
    await wait_started(intake, routing)

    async def port() -> int | None:
        return _identity_api_port(intake)

    identity_port = await eventually(port, lambda p: p is not None, 30, what="identity API port")
    process = isolated.service(
        "portal",
        AIGUILLAGE_PORTAL_LOG_LEVEL="DEBUG",
        AIGUILLAGE_PORTAL_SIGNING_KEY_ID=PORTAL_KEY_ID,
        AIGUILLAGE_PORTAL_SIGNING_SECRET=PORTAL_SECRET,
        AIGUILLAGE_PORTAL_INTAKE_IDENTITY_URL=(
            f"http://127.0.0.1:{identity_port}/internal/v1/identity-releases"
        ),
        AIGUILLAGE_PORTAL_IDENTITY_API_SECRET=IDENTITY_SECRET,
        **(portal_env or {}),
    )
    process.start()
    await wait_started(process)
    pool = await asyncpg.create_pool(
        isolated.endpoints.database_url,
        min_size=1,
        max_size=2,
        server_settings={"search_path": isolated.schema("portal")},
    )
    assert pool is not None
    return Portal(isolated, process, intake, routing, pool)


@pytest.fixture
async def portal(isolated: Isolated) -> AsyncIterator[Portal]:
    stack = await start_portal_stack(isolated)
    try:
        yield stack
    finally:
        await stack.pool.close()


async def new_context(browser: Browser) -> BrowserContext:
    # bypass_csp: only so that the test can inject axe-core; the pages' own CSP stays as served.
    return await browser.new_context(bypass_csp=True, locale="fr-FR", timezone_id="Europe/Paris")


async def sign_in(page: Page, base: str, email: str, secret: str, target: str = "/") -> None:
    """Password + TOTP through the sign-in form, as a user does."""
    await page.goto(f"{base}{target}")
    await page.get_by_label("Adresse électronique").fill(email)
    await page.get_by_label("Mot de passe", exact=True).fill(PASSWORD)
    await page.get_by_label("Code à usage unique").fill(pyotp.TOTP(secret).now())
    await page.get_by_role("button", name="Se connecter").click()
    await page.wait_for_load_state()
    assert "/connexion" not in page.url, await page.content()


async def serious_accessibility_violations(page: Page) -> list[dict[str, object]]:
    """axe-core's serious and critical violations on the page as it is now."""
    await page.add_script_tag(path=str(AXE))
    violations: list[dict[str, object]] = await page.evaluate(
        """async () => {
            const result = await axe.run(document, {resultTypes: ['violations']});
            return result.violations.map(v => ({
                id: v.id, impact: v.impact, help: v.help,
                targets: v.nodes.slice(0, 3).map(n => n.target.join(' ')),
            }));
        }"""
    )
    return [v for v in violations if v["impact"] in ("serious", "critical")]
