"""The operator console's network pages in a real browser, against the real services, Kafka and
PostgreSQL: the map renders with its legend and a title per département, the CSV downloaded
from the page holds the numbers SQL computes from routing's decision records, an operator
corrects a count and sees routing apply it, and a centre user is refused every one of these pages.
"""

from __future__ import annotations

import csv
import os
import uuid
from pathlib import Path

import httpx
from playwright.async_api import Browser, Page

from aiguillage_demo.samples import make_referral
from aiguillage_schemas import topics
from tests.browser.conftest import (
    Portal,
    new_context,
    serious_accessibility_violations,
    sign_in,
)
from tests.support.waiting import eventually

# The README's screenshots are renewed only when asked for.
SHOTS = os.environ.get("AIGUILLAGE_SCREENSHOTS_DIR")


async def screenshot(page: Page, name: str) -> None:
    if SHOTS:
        await page.screenshot(path=str(Path(SHOTS) / name), full_page=True)


async def accessible(page: Page) -> None:
    found = await serious_accessibility_violations(page)
    assert found == [], f"{page.url}: {found}"


async def test_operator_reads_the_map_exports_the_csv_and_corrects_a_count(
    portal: Portal, browser: Browser, tmp_path: Path
) -> None:
    token = uuid.uuid4().hex[:8]
    suffix = portal.isolated.suffix
    routing = portal.isolated.schema("routing")
    referrals = [make_referral(0, referral_id=f"ref-map{n}{suffix}") for n in range(2)]
    for referral in referrals:
        await portal.isolated.kafka.send_event(portal.isolated.topic(topics.INTAKE), referral)
    for referral in referrals:
        await portal.wait_referral(
            referral.subject, lambda r: r["status"] is not None, "routing decided"
        )
    operator_secret = await portal.user(f"ops-{token}@aiguillage.example", "operator")
    page = await (await new_context(browser)).new_page()
    await sign_in(
        page,
        portal.url,
        f"ops-{token}@aiguillage.example",
        operator_secret,
        "/operateur/indicateurs",
    )

    # --- the map: one titled shape per département, a legend, the same numbers in a table --
    await page.get_by_label("Indicateur").select_option("received")
    await page.get_by_label("Période").select_option("4")
    await page.get_by_role("button", name="Afficher").click()
    await page.wait_for_load_state()
    assert "kpi=received" in page.url
    shapes = page.locator("#carte svg path")
    assert await shapes.count() == 96
    nord = await page.locator('#carte path[data-departement="59"] title').text_content()
    assert nord == "59 Nord : 2"
    legend = await page.locator("#legende").inner_text()
    assert "aucune donnée" in legend
    assert [part.strip() for part in legend.split("\n")][:2] == ["0", "> 0 à 2"], legend
    row = page.locator('#table-departements tr[data-departement="59"]')
    assert "2" in await row.locator("td").nth(1).inner_text()
    assert await page.locator('#carte [data-departement="974"]').count() == 1  # overseas
    assert await page.locator("#graphe-semaines svg").count() == 1
    await accessible(page)
    if SHOTS:  # the map and its legend, with the choices above them
        await page.set_viewport_size({"width": 1280, "height": 1250})
        await page.screenshot(path=str(Path(SHOTS) / "console-map.png"))

    # --- the CSV downloaded from the page equals SQL over routing's decisions -----------------
    async with page.expect_download() as download_info:
        await page.locator("#export-csv").click()
    download = await download_info.value
    saved = tmp_path / "export.csv"
    await download.save_as(saved)
    with saved.open(encoding="utf-8", newline="") as handle:
        exported = list(csv.reader(handle))
    assert exported[0][:4] == ["kpi", "departement", "departement_nom", "semaine"]
    expected = await portal.pool.fetch(
        f"""
        SELECT x.accepted->>'residence_departement' AS home,
               date_trunc('week', min(d.decided_at) AT TIME ZONE 'Europe/Paris')::date AS week
        FROM {routing}.decisions d JOIN {routing}.referrals x USING (referral_id)
        GROUP BY d.referral_id, x.accepted
        """
    )
    counts: dict[tuple[str, str], int] = {}
    for found in expected:
        key = (found["home"], found["week"].isoformat())
        counts[key] = counts.get(key, 0) + 1
    assert {(row[1], row[3]): int(row[6]) for row in exported[1:]} == counts
    assert sum(counts.values()) == 2

    # --- the directory: correct a count of the Nord, see it pending then applied --------------
    site = await portal.pool.fetchrow(
        f"SELECT ss.site_id, ss.service, ss.places_total FROM {routing}.site_services ss"
        f" JOIN {routing}.sites s USING (site_id) WHERE s.departement = '59' AND ss.is_open"
        " ORDER BY ss.site_id, ss.service LIMIT 1"
    )
    assert site is not None
    new_total = site["places_total"] + 7
    await page.goto(f"{portal.url}/operateur/reseau")
    await page.get_by_label("Département").select_option("59")
    await page.get_by_role("button", name="Filtrer").click()
    await page.wait_for_load_state()
    assert "departement=59" in page.url
    line = page.locator(
        f'#table-reseau tr[data-site="{site["site_id"]}"][data-service="{site["service"]}"]'
    )
    assert await line.locator("td.places").inner_text() == str(site["places_total"])
    await accessible(page)
    await screenshot(page, "console-network.png")
    await line.locator('input[name="places_total"]').fill(str(new_total))
    await line.get_by_role("button").click()
    await page.wait_for_load_state()
    assert "corrige=" in page.url
    assert "departement=59" in page.url  # the filter is kept
    badge = (await line.locator(".correction").text_content() or "").strip()
    assert badge in (f"en attente : {new_total} place(s)", "correction appliquée")

    async def applied() -> tuple[str, str]:
        await page.reload()
        return (
            (await line.locator(".correction").text_content() or "").strip(),
            await line.locator("td.places").inner_text(),
        )

    await eventually(
        applied,
        lambda shown: shown == ("correction appliquée", str(new_total)),
        60,
        0.5,
        "routing applied the operator's correction",
    )
    in_routing = await portal.pool.fetchval(
        f"SELECT places_total FROM {routing}.site_services WHERE site_id = $1 AND service = $2",
        site["site_id"],
        site["service"],
    )
    assert in_routing == new_total
    audited = await portal.pool.fetchrow(
        "SELECT user_id, detail FROM audit_log WHERE action = 'capacity_corrected'"
    )
    assert audited is not None
    assert f'"places_total": {new_total}' in audited["detail"]


async def test_a_centre_user_is_refused_the_network_pages(portal: Portal, browser: Browser) -> None:
    token = uuid.uuid4().hex[:8]
    secret = await portal.user(f"agent-{token}@centre.example", "centre", "HDF-ARRAS")
    page = await (await new_context(browser)).new_page()
    await sign_in(page, portal.url, f"agent-{token}@centre.example", secret)
    for path in (
        "/operateur/reseau",
        "/operateur/indicateurs",
        "/operateur/indicateurs.csv?kpi=received&periode=4",
    ):
        response = await page.goto(f"{portal.url}{path}")
        assert response is not None
        assert response.status == 403, path
        assert "Accès refusé" in await page.content()
    # A correction posted with the user's own session and CSRF token is refused too.
    await page.goto(f"{portal.url}/centre/capacites")
    csrf = await page.locator('input[name="csrf_token"]').first.get_attribute("value")
    cookies = {c["name"]: c["value"] for c in await page.context.cookies()}
    async with httpx.AsyncClient(base_url=portal.url, cookies=cookies) as client:
        refused = await client.post(
            "/operateur/reseau/capacite",
            data={
                "csrf_token": csrf or "",
                "site_id": "HDF-ARRAS-62",
                "service": "responsibility_course",
                "places_total": "99",
            },
        )
    assert refused.status_code == 403
    assert (
        await portal.pool.fetchval(
            "SELECT count(*) FROM audit_log WHERE action = 'capacity_corrected'"
        )
        == 0
    )
