"""Issue 9's scenarios in a real browser, against the real services, Kafka and PostgreSQL.

A centre user signs in with password + TOTP, sees a new offer, reads the identity, declines with
a reason and the referral is re-routed; accepts another and reports attendance and completion,
and the prescriber sees each step on their page; a user of another centre gets 404 for that offer;
a prescriber sees none of another prescriber's referrals; a form posted without the CSRF token is
refused. axe-core finds no serious or critical violation on the pages, and the identity appears on
the holding centre's offer page only: not on any other page, not in the portal's logs.
"""

from __future__ import annotations

import uuid

import pyotp
from playwright.async_api import Browser, Page

from aiguillage_demo.samples import make_referral
from aiguillage_demo.signing import PORTAL_KEY_ID
from aiguillage_schemas import topics
from aiguillage_schemas.events.referral_submitted import ReferralSubmitted
from aiguillage_schemas.signing import KEY_ID_HEADER, signature_matches
from tests.browser.conftest import (
    PASSWORD,
    PORTAL_SECRET,
    SCREENSHOTS,
    Portal,
    new_context,
    serious_accessibility_violations,
    sign_in,
)
from tests.support.waiting import eventually


def with_identity(referral: ReferralSubmitted, **identity: str) -> ReferralSubmitted:
    person = referral.data.identity.model_copy(update=identity)
    return referral.model_copy(
        update={"data": referral.data.model_copy(update={"identity": person})}
    )


async def accessible(page: Page) -> None:
    found = await serious_accessibility_violations(page)
    assert found == [], f"{page.url}: {found}"


async def test_centre_and_prescriber_follow_a_referral_through_the_portal(
    portal: Portal, browser: Browser
) -> None:
    token = uuid.uuid4().hex[:8]
    canaries = {
        "last_name": f"Canarylast{token}",
        "first_name": f"Canaryfirst{token}",
        "phone": f"07{int(token, 16) % 10**8:08d}",
        "address": f"12 rue Canary{token}",
    }
    suffix = portal.isolated.suffix
    declined = with_identity(make_referral(0, referral_id=f"ref-decl{suffix}"), **canaries)
    accepted = make_referral(0, referral_id=f"ref-acc{suffix}")
    foreign = make_referral(1, referral_id=f"ref-spip{suffix}")  # spip-69's, not Lille's
    intake_topic = portal.isolated.topic(topics.INTAKE)
    for referral in (declined, accepted, foreign):
        await portal.isolated.kafka.send_event(intake_topic, referral)
    first = await portal.wait_referral(
        declined.subject,
        lambda r: r["status"] == "offered" and r["judicial_frame"] is not None,
        "the first referral offered and its needs known",
    )
    centre_id = first["centre_id"]
    await portal.wait_referral(
        accepted.subject, lambda r: r["status"] == "offered", "the second referral offered"
    )
    centre_secret = await portal.user(f"agent-{token}@centre.example", "centre", centre_id)
    other_centre = next(c for c in ("HDF-CREIL", "ARA-LYON") if c != centre_id)
    stranger_secret = await portal.user(f"autre-{token}@centre.example", "centre", other_centre)
    lille_secret = await portal.user(
        f"greffe-{token}@justice.example", "prescriber", prescriber_id="parquet-tj-lille"
    )
    spip_secret = await portal.user(
        f"spip-{token}@justice.example", "prescriber", prescriber_id="spip-69"
    )
    other_pages: list[str] = []  # every page but the holding centre's offer pages

    # --- the centre user: offers, identity, decline -----------------------------------------
    centre = await (await new_context(browser)).new_page()
    await sign_in(centre, portal.url, f"agent-{token}@centre.example", centre_secret)
    assert centre.url.endswith("/centre/offres")
    offers = centre.locator("#table-offres")
    assert await offers.get_by_role("link", name=declined.subject).is_visible()
    await accessible(centre)
    other_pages.append(await centre.content())

    await offers.get_by_role("link", name=declined.subject).click()
    await centre.wait_for_load_state()
    identity = centre.locator("#identite")
    assert canaries["last_name"] in await identity.inner_text()
    assert canaries["phone"] in await identity.inner_text()
    needs = await centre.locator("#besoins").inner_text()
    assert "Stage de responsabilisation" in needs
    assert "Alternative aux poursuites : orientation" in needs
    assert "français" in needs
    await accessible(centre)
    await centre.get_by_label("Motif du refus").select_option("no_capacity")
    await centre.get_by_role("button", name="Refuser l'orientation").click()
    await centre.wait_for_load_state()
    assert "refus=1" in centre.url
    other_pages.append(await centre.content())
    rerouted = await portal.wait_referral(
        declined.subject,
        lambda r: r["attempt"] == 2 and r["pending_action"] is None,
        "the declined referral re-routed",
    )
    assert rerouted["status"] in ("offered", "waitlisted", "escalated")
    assert rerouted["site_id"] != first["site_id"]

    # --- accept the second offer, report attendance and completion ---------------------------
    await centre.goto(f"{portal.url}/centre/offres/{accepted.subject}")
    await centre.screenshot(path=str(SCREENSHOTS / "portal-offer.png"), full_page=True)
    await centre.get_by_role("button", name="Accepter l'orientation").click()
    await centre.wait_for_load_state()
    await portal.wait_referral(accepted.subject, lambda r: r["status"] == "placed", "placed")
    for report, label in (
        ("attended", "Présence constatée"),
        ("path_completed", "Parcours terminé"),
    ):
        await centre.goto(f"{portal.url}/centre/offres/{accepted.subject}")
        await centre.get_by_label("Étape").select_option(report)
        await centre.get_by_role("button", name="Déclarer").click()
        await centre.wait_for_load_state()
        assert f"declare={report}" in centre.url
        await eventually(
            lambda: portal.pool.fetch(
                "SELECT summary FROM referral_history WHERE referral_id = $1",
                accepted.subject,
            ),
            lambda rows, label=label: any(r["summary"].startswith(label) for r in rows),
            90,
            0.2,
            f"{report} relayed by routing",
        )

    # --- the capacity page: one click confirms ------------------------------------------------
    await centre.goto(f"{portal.url}/centre/capacites")
    await accessible(centre)
    first_row = centre.locator("#table-capacites tbody tr").first
    site_service = await first_row.get_attribute("id")
    await first_row.get_by_role("button", name="Confirmer ce nombre").click()
    await first_row.page.locator(f"[id='{site_service}'] >> text=transmis").wait_for()
    other_pages.append(await centre.content())
    confirmed = await portal.pool.fetchval(
        "SELECT confirmed_by FROM site_services WHERE site_id || '-' || service = $1",
        site_service,
    )
    assert confirmed is not None
    assert confirmed.startswith("u:")

    # --- a form without its CSRF token is refused, and changes nothing -----------------------
    outbox_before = await portal.pool.fetchval("SELECT count(*) FROM outbox")
    forged = await centre.request.post(
        f"{portal.url}/centre/capacites",
        form={"site_id": site_service.rsplit("-", 1)[0], "service": "x", "places_total": "0"},
    )
    assert forged.status == 403
    forged = await centre.request.post(
        f"{portal.url}/centre/offres/{accepted.subject}/parcours",
        form={"report": "no_show", "occurred_on": "2026-01-01", "csrf_token": "forged"},
    )
    assert forged.status == 403
    assert await portal.pool.fetchval("SELECT count(*) FROM outbox") == outbox_before

    # --- another centre's user gets 404 for the offer -------------------------------------------
    stranger = await (await new_context(browser)).new_page()
    await sign_in(stranger, portal.url, f"autre-{token}@centre.example", stranger_secret)
    response = await stranger.goto(f"{portal.url}/centre/offres/{accepted.subject}")
    assert response is not None
    assert response.status == 404
    other_pages.append(await stranger.content())

    # --- the prescriber sees each step; another prescriber sees none of it ------------------
    lille = await (await new_context(browser)).new_page()
    await sign_in(lille, portal.url, f"greffe-{token}@justice.example", lille_secret)
    table = lille.locator("#table-orientations")
    assert await table.get_by_role("link", name=accepted.subject).is_visible()
    assert await table.get_by_role("link", name=declined.subject).is_visible()
    assert await table.get_by_role("link", name=foreign.subject).count() == 0
    await accessible(lille)
    other_pages.append(await lille.content())
    await table.get_by_role("link", name=accepted.subject).click()
    await lille.wait_for_load_state()
    history = await lille.locator("#historique").inner_text()
    for step in ("Reçue", "Proposée", "Acceptée", "Présence constatée", "Parcours terminé"):
        assert step in history, history
    assert await lille.locator("#statut").inner_text() == "Parcours terminé"
    await accessible(lille)
    await lille.screenshot(path=str(SCREENSHOTS / "portal-prescriber.png"), full_page=True)
    other_pages.append(await lille.content())
    await lille.goto(f"{portal.url}/prescripteur/orientations/{declined.subject}")
    assert "essai 2" in await lille.locator("#historique").inner_text()
    other_pages.append(await lille.content())

    spip = await (await new_context(browser)).new_page()
    await sign_in(spip, portal.url, f"spip-{token}@justice.example", spip_secret)
    spip_table = await spip.content()
    assert accepted.subject not in spip_table
    assert declined.subject not in spip_table
    response = await spip.goto(f"{portal.url}/prescripteur/orientations/{accepted.subject}")
    assert response is not None
    assert response.status == 404
    other_pages.append(await spip.content())
    # A prescriber is not a centre: the offer page is not theirs either.
    response = await spip.goto(f"{portal.url}/centre/offres/{accepted.subject}")
    assert response is not None
    assert response.status == 403

    # --- what the portal published is signed with its key and names the user -----------------
    responses = await portal.isolated.kafka.read_all(portal.isolated.topic(topics.CENTRE_RESPONSES))
    updates = await portal.isolated.kafka.read_all(portal.isolated.topic(topics.DIRECTORY_UPDATES))
    published = [*responses, *updates]
    assert {r.json()["event_type"] for r in published} == {
        "centre.offer_answered",
        "centre.path_report",
        "directory.capacity_updated",
    }
    centre_user = await portal.pool.fetchval(
        "SELECT user_id FROM users WHERE email = $1", f"agent-{token}@centre.example"
    )
    for record in published:
        assert record.headers[KEY_ID_HEADER] == PORTAL_KEY_ID
        assert signature_matches(PORTAL_SECRET.encode(), record.headers, record.value)
        assert record.json()["data"]["actor"] == {"kind": "centre_user", "id": f"u:{centre_user}"}
        for value in canaries.values():
            assert value.encode() not in record.value

    # --- the identity: on the holding centre's offer page only --------------------------------
    for html in other_pages:
        for value in canaries.values():
            assert value not in html
    logs = portal.process.logs()
    assert '"portal.offer_answered"' in logs  # the logs are there, and at DEBUG
    for value in canaries.values():
        assert value not in logs
    audit = await portal.pool.fetch(
        "SELECT action, outcome FROM audit_log WHERE referral_id = $1", declined.subject
    )
    assert ("identity_viewed", "granted") in {(r["action"], r["outcome"]) for r in audit}


async def test_a_new_user_enrols_with_the_one_time_link_then_signs_in(
    portal: Portal, browser: Browser
) -> None:
    operator_secret = await portal.user("operateur@aiguillage.example", "operator")
    page = await (await new_context(browser)).new_page()
    await sign_in(page, portal.url, "operateur@aiguillage.example", operator_secret)
    assert page.url.endswith("/operateur/utilisateurs")
    await page.get_by_label("Adresse électronique").fill("nouvelle@arras.example")
    await page.get_by_label("Nom affiché").fill("Nouvelle Collègue")
    await page.get_by_label("Rôle", exact=True).select_option("centre")
    await page.locator("#new-centre").fill("HDF-ARRAS")
    await page.get_by_role("button", name="Créer et obtenir le lien d'activation").click()
    await page.wait_for_load_state()
    link = await page.locator("#lien-activation").inner_text()
    await accessible(page)

    newcomer = await (await new_context(browser)).new_page()
    await newcomer.goto(link)
    secret = await newcomer.locator("#totp-secret").inner_text()
    assert await newcomer.locator("#totp-qr svg").count() == 1  # the code to scan
    await accessible(newcomer)
    await newcomer.locator("#password").fill(PASSWORD)
    await newcomer.get_by_label("Confirmez le mot de passe").fill(PASSWORD)
    await newcomer.get_by_label("Code à usage unique").fill(pyotp.TOTP(secret).now())
    await newcomer.get_by_role("button", name="Activer mon compte").click()
    await newcomer.wait_for_load_state()
    assert "/connexion" in newcomer.url
    # The link served once.
    again = await newcomer.goto(link)
    assert again is not None
    assert again.status == 404
    # The code used to enrol cannot open a session: the next one does.
    await newcomer.goto(f"{portal.url}/connexion")
    await newcomer.get_by_label("Adresse électronique").fill("nouvelle@arras.example")
    await newcomer.get_by_label("Mot de passe", exact=True).fill(PASSWORD)
    code = pyotp.TOTP(secret)
    import time

    await newcomer.get_by_label("Code à usage unique").fill(code.at(time.time() + 30))
    await newcomer.get_by_role("button", name="Se connecter").click()
    await newcomer.wait_for_load_state()
    assert newcomer.url.endswith("/centre/offres")

    # Operators see it all in the audit log; a centre user may not.
    await page.goto(f"{portal.url}/operateur/journal")
    journal = await page.locator("#table-journal").inner_text()
    assert "enrolled" in journal
    assert "user_created" in journal
    assert "sign_in" in journal
    await accessible(page)
    response = await newcomer.goto(f"{portal.url}/operateur/journal")
    assert response is not None
    assert response.status == 403


async def test_sign_in_is_throttled_after_repeated_failures(
    portal: Portal, browser: Browser
) -> None:
    secret = await portal.user("cible@arras.example", "centre", "HDF-ARRAS")
    page = await (await new_context(browser)).new_page()
    # The sign-in form too needs its token (a login CSRF would sign the victim in as someone else).
    forged = await page.request.post(
        f"{portal.url}/connexion",
        form={"email": "cible@arras.example", "password": PASSWORD, "totp": "000000"},
    )
    assert forged.status == 403
    for _ in range(5):
        await page.goto(f"{portal.url}/connexion")
        await page.get_by_label("Adresse électronique").fill("cible@arras.example")
        await page.get_by_label("Mot de passe", exact=True).fill("pas le bon mot de passe")
        await page.get_by_label("Code à usage unique").fill("000000")
        await page.get_by_role("button", name="Se connecter").click()
        await page.wait_for_load_state()
    await page.goto(f"{portal.url}/connexion")
    await page.get_by_label("Adresse électronique").fill("cible@arras.example")
    await page.get_by_label("Mot de passe", exact=True).fill(PASSWORD)
    await page.get_by_label("Code à usage unique").fill(pyotp.TOTP(secret).now())
    await page.get_by_role("button", name="Se connecter").click()
    await page.wait_for_load_state()
    assert "Trop de tentatives" in await page.locator("#erreur-connexion").inner_text()
    await accessible(page)
