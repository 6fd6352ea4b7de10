"""The network's indicators, as the operator console shows them: which KPI, over which weeks,
how weekly cells add up to a département's value or a week's national value, class breaks for
the map, and the CSV rows. Pure: the numbers come in as cells computed in SQL (the adapter runs
one query per KPI family over routing's decision records), the presentation decides here.

A cell is one (département, week) pair with a numerator and a denominator:

- counts (referrals received, waiting, unroutable for a missing service): ``num`` is the count,
  ``den`` the same count (so cells add up);
- a share (placed in the home département): ``num`` home offers, ``den`` all offers;
- a mean (distance): ``num`` the sum of distances, ``den`` the number of offers.

Every count is of distinct referrals counted once, in the week of their first such decision, so a
period's value is the plain sum of its weeks'.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Literal, get_args
from zoneinfo import ZoneInfo

PARIS = ZoneInfo("Europe/Paris")

KpiCode = Literal["received", "home_share", "mean_distance", "waiting", "unroutable_missing"]
KpiKind = Literal["count", "share", "mean"]
KPI_CODES: tuple[KpiCode, ...] = get_args(KpiCode)


@dataclass(frozen=True, slots=True)
class Kpi:
    code: KpiCode
    label: str
    kind: KpiKind
    unit: str
    meaning: str


KPIS: dict[KpiCode, Kpi] = {
    "received": Kpi(
        "received",
        "Orientations reçues",
        "count",
        "orientations",
        "Orientations dont la première décision de l'aiguillage tombe dans la semaine, "
        "par département de résidence.",
    ),
    "home_share": Kpi(
        "home_share",
        "Part proposée dans le département de résidence",
        "share",
        "%",
        "Parmi les propositions de place (décisions « orientée »), la part dont le site est "
        "dans le département de résidence de la personne.",
    ),
    "mean_distance": Kpi(
        "mean_distance",
        "Distance moyenne",
        "mean",
        "km",
        "Distance moyenne (à vol d'oiseau) entre la commune de résidence et le site proposé, "
        "sur les propositions de place.",
    ),
    "waiting": Kpi(
        "waiting",
        "Orientations mises en liste d'attente",
        "count",
        "orientations",
        "Orientations mises en liste d'attente, comptées une fois, la semaine de leur "
        "première mise en attente.",
    ),
    "unroutable_missing": Kpi(
        "unroutable_missing",
        "Sans solution faute de service",
        "count",
        "orientations",
        "Orientations sans solution parce qu'aucun site ne propose les services demandés, "
        "comptées une fois, la semaine de la première décision de ce type.",
    ),
}

PERIODS: dict[int, str] = {
    4: "4 dernières semaines",
    13: "13 dernières semaines",
    52: "52 dernières semaines",
}
DEFAULT_PERIOD = 13

DeclineCode = Literal["no_capacity", "not_eligible", "victim_site_conflict", "other"]
DECLINE_LABELS: dict[str, str] = {
    "no_capacity": "Plus de place",
    "not_eligible": "Non éligible",
    "victim_site_conflict": "Conflit avec un site de victime",
    "other": "Autre motif",
}

# Sequential blues (DSFR's blue-france ramp, light to dark) and a neutral grey for no data.
PALETTE: tuple[str, ...] = ("#e3e3fd", "#cacafb", "#8585f6", "#4747e6", "#000091")
NO_DATA = "#eeeeee"


@dataclass(frozen=True, slots=True)
class Cell:
    departement: str
    week: date
    num: float
    den: int


@dataclass(frozen=True, slots=True)
class Measure:
    num: float = 0.0
    den: int = 0

    def add(self, cell: Cell) -> Measure:
        return Measure(self.num + cell.num, self.den + cell.den)


def parse_kpi(text: str | None) -> KpiCode:
    for code in KPI_CODES:
        if text == code:
            return code
    return "received"


def parse_period(text: str | None) -> int:
    try:
        weeks = int(text or "")
    except ValueError:
        return DEFAULT_PERIOD
    return weeks if weeks in PERIODS else DEFAULT_PERIOD


def week_of(day: date) -> date:
    """The Monday of ``day``'s week (ISO weeks, as PostgreSQL's ``date_trunc('week', …)``)."""
    return day - timedelta(days=day.weekday())


def weeks(period: int, now: datetime) -> list[date]:
    """The Mondays of the last ``period`` weeks, the current one included, oldest first."""
    current = week_of(now.astimezone(PARIS).date())
    return [current - timedelta(weeks=period - 1 - i) for i in range(period)]


def period_start(period: int, now: datetime) -> datetime:
    """Midnight (Paris) on the first Monday of the period: what the SQL filters on."""
    return datetime.combine(weeks(period, now)[0], time(0), tzinfo=PARIS)


def value(kind: KpiKind, measure: Measure) -> float | None:
    """None: nothing to measure (no offer for a share or a mean). A count is never None."""
    if kind == "count":
        return float(measure.den)
    if measure.den == 0:
        return None
    return measure.num / measure.den


def by_departement(cells: Iterable[Cell]) -> dict[str, Measure]:
    totals: dict[str, Measure] = defaultdict(Measure)
    for cell in cells:
        totals[cell.departement] = totals[cell.departement].add(cell)
    return dict(totals)


def by_week(cells: Iterable[Cell], mondays: Sequence[date]) -> list[tuple[date, Measure]]:
    """The national value of each week of the period (a week without a cell measures zero)."""
    totals: dict[date, Measure] = {monday: Measure() for monday in mondays}
    for cell in cells:
        if cell.week in totals:
            totals[cell.week] = totals[cell.week].add(cell)
    return [(monday, totals[monday]) for monday in mondays]


def class_breaks(values: Iterable[float], classes: int = len(PALETTE)) -> list[float]:
    """Upper bounds of up to ``classes`` classes (quantiles of the values, distinct, ascending);
    the last bound is the maximum, so every value falls in a class. Empty: no values."""
    ordered = sorted(values)
    if not ordered:
        return []
    bounds: list[float] = []
    for i in range(1, classes + 1):
        index = max(0, min(len(ordered) - 1, round(i * len(ordered) / classes) - 1))
        bound = ordered[index]
        if not bounds or bound > bounds[-1]:
            bounds.append(bound)
    if bounds[-1] < ordered[-1]:
        bounds.append(ordered[-1])
    return bounds


def classify(amount: float | None, breaks: Sequence[float]) -> int | None:
    """The class of ``amount``: the first break it does not exceed. None: no value."""
    if amount is None or not breaks:
        return None
    for index, bound in enumerate(breaks):
        if amount <= bound:
            return index
    return len(breaks) - 1


def colour(index: int | None, breaks: Sequence[float]) -> str:
    """Colours spread over the palette when there are fewer classes than colours."""
    if index is None:
        return NO_DATA
    if len(breaks) <= 1:
        return PALETTE[-1]
    return PALETTE[round(index * (len(PALETTE) - 1) / (len(breaks) - 1))]


def show(kind: KpiKind, amount: float | None) -> str:
    """How a value reads on the page (French decimals)."""
    if amount is None:
        return "—"
    if kind == "count":
        return f"{amount:.0f}"
    if kind == "share":
        return f"{amount * 100:.1f} %".replace(".", ",")
    return f"{amount:.1f} km".replace(".", ",")


def export_value(kind: KpiKind, amount: float | None) -> str:
    """How a value reads in the CSV: a dot decimal, a share as a fraction, empty when none."""
    if amount is None:
        return ""
    if kind == "count":
        return f"{amount:.0f}"
    if kind == "share":
        return f"{amount:.4f}"
    return f"{amount:.2f}"


@dataclass(frozen=True, slots=True)
class LegendClass:
    colour: str
    low: str
    high: str

    @property
    def text(self) -> str:
        return self.high if self.low == self.high else f"{self.low} à {self.high}"


def legend(kind: KpiKind, breaks: Sequence[float], lowest: float | None) -> list[LegendClass]:
    classes: list[LegendClass] = []
    previous = lowest
    for index, bound in enumerate(breaks):
        low = show(kind, previous) if index == 0 else f"> {show(kind, previous)}"
        classes.append(LegendClass(colour(index, breaks), low, show(kind, bound)))
        previous = bound
    return classes


CSV_HEADER: tuple[str, ...] = (
    "kpi",
    "departement",
    "departement_nom",
    "semaine",
    "numerateur",
    "denominateur",
    "valeur",
)


def csv_rows(kpi: Kpi, cells: Iterable[Cell], names: Mapping[str, str]) -> list[tuple[str, ...]]:
    """One row per département and week that has a cell, sorted; ``semaine`` is the Monday."""
    rows: list[tuple[str, ...]] = [CSV_HEADER]
    for cell in sorted(cells, key=lambda c: (c.departement, c.week)):
        measure = Measure(cell.num, cell.den)
        numerator = f"{cell.num:.0f}" if kpi.kind != "mean" else f"{cell.num:.2f}"
        rows.append(
            (
                kpi.code,
                cell.departement,
                names.get(cell.departement, ""),
                cell.week.isoformat(),
                numerator,
                str(cell.den),
                export_value(kpi.kind, value(kpi.kind, measure)),
            )
        )
    return rows


def decline_series(
    rows: Iterable[tuple[date, str, int]], mondays: Sequence[date]
) -> list[tuple[date, dict[str, int]]]:
    """Declines per week and reason, every reason present (zero when none)."""
    table: dict[date, dict[str, int]] = {
        monday: dict.fromkeys(DECLINE_LABELS, 0) for monday in mondays
    }
    for week, reason, count in rows:
        if week in table:
            key = reason if reason in DECLINE_LABELS else "other"
            table[week][key] += count
    return [(monday, table[monday]) for monday in mondays]
