"""The routing decision: hard constraints first, then a deterministic preference.

First rule (walking skeleton): a site of a centre that serves the person's département, offering
every needed service, outside every exclusion zone; prefer a site in the person's own département,
then the nearest; ties broken by site id. Capacity, waitlists and the closed loop come next.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from aiguillage_common.geography import Geography, haversine_km
from aiguillage_schemas.events.referral_lifecycle import ReferralAcceptedData
from routing.domain.directory import Directory, Site

UnroutableReason = Literal["no_site_offers_services", "all_sites_excluded", "territory_not_served"]


@dataclass(frozen=True, slots=True)
class Routed:
    site: Site
    distance_km: float
    explanation: str


@dataclass(frozen=True, slots=True)
class Unroutable:
    reason: UnroutableReason
    explanation: str


def decide(
    referral: ReferralAcceptedData, directory: Directory, geography: Geography
) -> Routed | Unroutable:
    home = referral.residence_departement
    serving = [site for site in directory.sites if home in site.serves]
    if not serving:
        return Unroutable("territory_not_served", f"aucun site ne couvre le département {home}")
    needed = set(referral.needed_services)
    offering = [site for site in serving if needed <= site.services]
    if not offering:
        missing = sorted(needed - set().union(*(site.services for site in serving)))
        detail = ", ".join(missing) or "la combinaison demandée"
        return Unroutable(
            "no_site_offers_services",
            f"aucun site couvrant le département {home} n'offre : {detail}",
        )
    excluded_communes = set(referral.excluded_communes)
    excluded_departements = set(referral.excluded_departements)
    allowed = [
        site
        for site in offering
        if site.commune_insee not in excluded_communes
        and site.departement not in excluded_departements
    ]
    if not allowed:
        return Unroutable(
            "all_sites_excluded",
            "tous les sites possibles sont dans une zone d'exclusion",
        )
    origin = geography.coordinates(referral.residence_commune_insee)

    def distance(site: Site) -> float:
        return haversine_km(origin, (site.lat, site.lon)) if origin else 0.0

    best = min(allowed, key=lambda site: (site.departement != home, distance(site), site.site_id))
    where = (
        "dans le département de résidence" if best.departement == home else "hors du département"
    )
    centre = directory.centre_of(best)
    return Routed(
        site=best,
        distance_km=round(distance(best), 1),
        explanation=(
            f"{centre.name} : site {best.site_id} {where}, à {distance(best):.0f} km, "
            f"offre les {len(needed)} services demandés; {len(allowed)} site(s) possibles."
        ),
    )
