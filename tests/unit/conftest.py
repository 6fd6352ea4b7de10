from __future__ import annotations

import pytest

from aiguillage_common.geography import Geography, load_geography
from routing.adapters.directory_csv import load_directory
from routing.domain.directory import Directory


@pytest.fixture(scope="session")
def geography() -> Geography:
    return load_geography()


@pytest.fixture(scope="session")
def directory(geography: Geography) -> Directory:
    return load_directory(geography)
