"""The operator console's pure parts: KPI arithmetic, class breaks, the map's projection and SVG,
the CSV rows, and the network page's pending corrections."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from portal.adapters.console.reference import load_territory
from portal.domain import indicators as ind
from portal.domain.capacity import FreshnessPolicy
from portal.domain.map_svg import Bar, Shade, bar_chart, build_geometry, render_map
from portal.domain.network import Correction, Filters, correction_state, line

MONDAY = date(2026, 11, 23)
TERRITORY = load_territory()


@given(st.lists(st.floats(min_value=0, max_value=1e6, allow_nan=False), min_size=1, max_size=120))
def test_class_breaks_ascend_and_put_every_value_in_a_class(values: list[float]) -> None:
    breaks = ind.class_breaks(values)
    assert 1 <= len(breaks) <= len(ind.PALETTE)
    assert breaks == sorted(set(breaks))
    assert breaks[-1] == max(values)
    for amount in values:
        index = ind.classify(amount, breaks)
        assert index is not None
        assert amount <= breaks[index]
        assert index == 0 or amount > breaks[index - 1]


def test_class_breaks_of_nothing_and_a_missing_value_is_grey() -> None:
    assert ind.class_breaks([]) == []
    assert ind.classify(None, [1.0, 2.0]) is None
    assert ind.colour(None, [1.0]) == ind.NO_DATA
    breaks = ind.class_breaks([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    assert [ind.colour(ind.classify(v, breaks), breaks) for v in (0, 9)] == [
        ind.PALETTE[0],
        ind.PALETTE[-1],
    ]


def test_a_share_adds_weeks_by_numerator_and_denominator_not_by_averaging() -> None:
    cells = [
        ind.Cell("59", MONDAY, 1, 1),  # one offer, at home
        ind.Cell("59", MONDAY + timedelta(weeks=1), 0, 3),  # three offers elsewhere
    ]
    total = ind.by_departement(cells)["59"]
    assert ind.value("share", total) == 0.25
    assert ind.show("share", 0.25) == "25,0 %"
    assert ind.value("mean", ind.Measure()) is None
    assert ind.value("count", ind.Measure(3, 3)) == 3


def test_weeks_end_with_the_current_one_and_start_on_a_monday_in_paris() -> None:
    # Sunday 23:30 UTC is already Monday in Paris.
    now = datetime(2026, 11, 29, 23, 30, tzinfo=UTC)
    mondays = ind.weeks(4, now)
    assert mondays[-1] == date(2026, 11, 30)
    assert len(mondays) == 4
    assert all(m.weekday() == 0 for m in mondays)
    start = ind.period_start(4, now)
    assert start.date() == mondays[0]
    assert start.utcoffset() == timedelta(hours=1)
    weekly = ind.by_week([ind.Cell("75", mondays[1], 2, 2)], mondays)
    assert [m.den for _, m in weekly] == [0, 2, 0, 0]


def test_unknown_kpi_or_period_falls_back_to_defaults() -> None:
    assert ind.parse_kpi("drop table") == "received"
    assert ind.parse_kpi("mean_distance") == "mean_distance"
    assert ind.parse_period("7") == ind.DEFAULT_PERIOD
    assert ind.parse_period("52") == 52


def test_csv_has_one_row_per_departement_and_week_with_the_value_computed() -> None:
    kpi = ind.KPIS["mean_distance"]
    rows = ind.csv_rows(
        kpi,
        [ind.Cell("75", MONDAY, 30.0, 2), ind.Cell("13", MONDAY, 12.5, 1)],
        TERRITORY.departements,
    )
    assert rows[0] == ind.CSV_HEADER
    assert rows[1:] == [
        ("mean_distance", "13", "Bouches-du-Rhône", "2026-11-23", "12.50", "1", "12.50"),
        ("mean_distance", "75", "Paris", "2026-11-23", "30.00", "2", "15.00"),
    ]


def test_projection_keeps_metropolitan_france_in_the_viewbox_north_up() -> None:
    geometry = TERRITORY.geometry
    assert geometry.width == 560.0
    assert 500 < geometry.height < 620  # about as tall as wide once longitudes are scaled
    numbers = [float(n) for data in geometry.paths.values() for n in re.findall(r"-?\d+\.\d", data)]
    assert min(numbers) >= 0.0
    assert max(numbers) <= max(geometry.width, geometry.height)

    def top(code: str) -> float:
        return min(float(y) for y in re.findall(r",(-?\d+\.\d)", geometry.paths[code]))

    assert top("59") < top("75") < top("13")  # Nord above Paris above Bouches-du-Rhône


def test_a_tiny_square_projects_to_the_full_width() -> None:
    square = {
        "features": [
            {
                "properties": {"code": "01", "nom": "Un"},
                "geometry": {
                    "type": "Polygon",
                    "coordinates": [[[0, 46], [1, 46], [1, 47], [0, 47], [0, 46]]],
                },
            }
        ]
    }
    geometry = build_geometry(square, width=100)
    assert geometry.paths["01"].startswith("M0.0,")
    assert "100.0," in geometry.paths["01"]


def test_map_has_one_path_per_departement_each_with_its_title() -> None:
    geometry = TERRITORY.geometry
    shades = {code: Shade("#000091", f"{code} {name} : 3") for code, name in geometry.names.items()}
    shades["2A"] = Shade("#000091", "2A Corse-du-Sud <b> : 1")
    svg = render_map(
        geometry, shades, [("974", Shade("#eee", "974 La Réunion : 0"))], "Carte", "#e"
    )
    paths = re.findall(r'<path d="[^"]+" fill="[^"]+" data-departement="([^"]+)"><title>', svg)
    assert sorted(paths) == sorted(geometry.names)
    assert len(paths) == 96
    assert "<title>75 Paris : 3</title>" in svg
    assert "&lt;b&gt;" in svg
    assert "<b>" not in svg
    assert '<g data-departement="974"><title>974 La Réunion : 0</title>' in svg


def test_legend_reads_from_lowest_to_highest() -> None:
    classes = ind.legend("count", [2.0, 5.0], 1.0)
    assert [c.text for c in classes] == ["1 à 2", "> 2 à 5"]
    assert ind.legend("count", [0.0, 2.0], 0.0)[0].text == "0"


def test_bar_chart_has_one_titled_group_per_week() -> None:
    svg = bar_chart(
        [Bar("23/11", ((3.0, "#000"),), "Semaine du 23/11/2026 : 3"), Bar("30/11", (), "vide")],
        "Orientations reçues",
    )
    assert svg.count("<g><title>") == 2
    assert "Semaine du 23/11/2026 : 3" in svg


def test_declines_per_week_list_every_reason() -> None:
    series = ind.decline_series([(MONDAY, "no_capacity", 2), (MONDAY, "weird", 1)], [MONDAY])
    assert series == [
        (MONDAY, {"no_capacity": 2, "not_eligible": 0, "victim_site_conflict": 0, "other": 1})
    ]


def test_a_correction_is_pending_until_routing_holds_a_count_as_recent() -> None:
    at = datetime(2026, 11, 30, 10, tzinfo=UTC)
    correction = Correction(4, at, at)
    assert correction_state(None, at) is None
    assert correction_state(correction, at - timedelta(days=3)) == "pending"
    assert correction_state(correction, at) == "applied"
    row = {
        "centre_id": "c",
        "centre_name": "C",
        "region_code": "32",
        "site_id": "s",
        "departement": "59",
        "service": "initial_assessment",
        "places_total": 3,
        "places_held": 5,
        "assumed": False,
        "updated_at": at - timedelta(days=40),
        "waiting": 2,
        "oldest_wait": at - timedelta(days=9),
    }
    shown = line(row, correction, FreshnessPolicy(), at)
    assert (shown.free, shown.freshness, shown.correction_state) == (0, "stale", "pending")


def test_filters_keep_codes_only() -> None:
    assert Filters.parse({"region": "32", "departement": "2A", "centre": "cpca-lille"}) == Filters(
        "32", "2A", "cpca-lille"
    )
    assert Filters.parse({"region": "'; drop", "departement": ""}) == Filters()
