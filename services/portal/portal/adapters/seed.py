"""Seeds the portal's sites and capacities from the reference data, once per schema.

The numbers are routing's seed directory (``routing.adapters.directory_csv``): one derivation of
data/cpca_centres.csv, imported rather than copied so that the portal and routing never start
from two different seeds. Rows already present (a centre confirmed since) are kept.
"""

from __future__ import annotations

from datetime import datetime

from aiguillage_common.geography import Geography
from portal.adapters.postgres import PortalStore
from routing.adapters.directory_csv import load_directory


async def seed_directory(store: PortalStore, geography: Geography, as_of: datetime) -> None:
    directory = load_directory(geography, as_of=as_of)
    sites = [
        (site.site_id, site.centre_id, directory.centres[site.centre_id].name, site.departement)
        for site in directory.sites
    ]
    capacity = [
        (site_id, str(service), cap.places_total, cap.updated_at)
        for (site_id, service), cap in directory.capacity.items()
    ]
    await store.seed_directory(sites, capacity)
