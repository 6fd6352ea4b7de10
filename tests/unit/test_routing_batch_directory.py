"""Routing's per-batch copy of the directory finds a territory's sites as the database query
does (serving or lying in one of its départements), in the same order, asked once or again."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from aiguillage_common.geography import load_geography
from routing.adapters.directory_csv import load_directory
from routing.adapters.postgres import _BatchDirectory
from routing.domain.directory import Directory, Site

DIRECTORY = load_directory(load_geography())
DEPARTEMENTS = sorted({s.departement for s in DIRECTORY.sites} | {"2A", "975", "99"})


def _selected(directory: Directory, departements: set[str]) -> tuple[Site, ...]:
    """What read_directory's WHERE clause keeps, in the order it read the sites."""
    return tuple(
        s
        for s in directory.sites
        if s.departement in departements or not s.serves.isdisjoint(departements)
    )


@given(st.lists(st.sets(st.sampled_from(DEPARTEMENTS), max_size=4), min_size=1, max_size=6))
def test_near_is_the_query_s_selection_in_its_order(territories: list[set[str]]) -> None:
    batch = _BatchDirectory(DIRECTORY)
    for departements in territories + territories:  # each asked twice: the second is remembered
        assert batch.near(departements) == _selected(DIRECTORY, departements)


def test_a_territory_has_sites() -> None:
    assert len(_BatchDirectory(DIRECTORY).near({"59"})) > 0
