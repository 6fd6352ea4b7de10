"""Server-side SVG for the operator console: the map of metropolitan France by département and
the weekly bar charts. Pure: the GeoJSON comes in parsed, text comes out (escaped).

Projection: equirectangular, longitudes scaled by cos(46.5°) (the middle of metropolitan France)
so that shapes keep their proportions at the country's scale; y grows southwards. The geometry is
built once (``build_geometry``) and only fills and titles change per request. Overseas
départements are not in the simplified GeoJSON: they are drawn as labelled squares beside it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

COS_LAT = math.cos(math.radians(46.5))
OVERSEAS: tuple[str, ...] = ("971", "972", "973", "974", "976")


def project(lon: float, lat: float) -> tuple[float, float]:
    """Unscaled plane coordinates (x east, y south), in degrees of latitude."""
    return lon * COS_LAT, -lat


@dataclass(frozen=True, slots=True)
class MapGeometry:
    width: float
    height: float
    paths: dict[str, str]  # département code -> SVG path data
    names: dict[str, str]


def _rings(geometry: Mapping[str, Any]) -> list[list[list[float]]]:
    if geometry["type"] == "Polygon":
        return list(geometry["coordinates"])
    if geometry["type"] == "MultiPolygon":
        return [ring for polygon in geometry["coordinates"] for ring in polygon]
    return []


def build_geometry(geojson: Mapping[str, Any], width: float = 560.0) -> MapGeometry:
    """Every feature's rings projected and scaled into ``width`` (height follows), one path per
    département (its polygons as subpaths), coordinates to a tenth of a pixel."""
    features = [f for f in geojson["features"] if f.get("geometry")]
    projected: dict[str, list[list[tuple[float, float]]]] = {}
    names: dict[str, str] = {}
    for feature in features:
        code = str(feature["properties"]["code"])
        names[code] = str(feature["properties"]["nom"])
        projected[code] = [
            [project(float(p[0]), float(p[1])) for p in ring]
            for ring in _rings(feature["geometry"])
        ]
    points = [p for rings in projected.values() for ring in rings for p in ring]
    min_x = min(p[0] for p in points)
    max_x = max(p[0] for p in points)
    min_y = min(p[1] for p in points)
    max_y = max(p[1] for p in points)
    scale = width / (max_x - min_x)
    height = round((max_y - min_y) * scale, 1)
    paths: dict[str, str] = {}
    for code, rings in projected.items():
        parts = []
        for ring in rings:
            coords = " ".join(
                f"{(x - min_x) * scale:.1f},{(y - min_y) * scale:.1f}" for x, y in ring
            )
            parts.append(f"M{coords}Z")
        paths[code] = "".join(parts)
    return MapGeometry(width, height, dict(sorted(paths.items())), names)


@dataclass(frozen=True, slots=True)
class Shade:
    fill: str
    title: str  # the département's name and value, read by screen readers and on hover


def render_map(
    geometry: MapGeometry,
    shades: Mapping[str, Shade],
    overseas: Sequence[tuple[str, Shade]],
    caption: str,
    no_data: str,
) -> str:
    """The map: one ``<path>`` per metropolitan département with a ``<title>``, then a column of
    squares for the overseas départements."""
    inset = 70.0
    width = geometry.width + inset
    height = max(geometry.height, 40.0 * len(overseas) + 10)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width:.0f} {height:.0f}" '
        f'class="console-map" role="img" aria-labelledby="carte-titre">',
        f'<title id="carte-titre">{escape(caption)}</title>',
        '<g stroke="#666" stroke-width="0.5">',
    ]
    for code, data in geometry.paths.items():
        shade = shades.get(code, Shade(no_data, geometry.names.get(code, code)))
        out.append(
            f'<path d="{data}" fill="{escape(shade.fill)}" data-departement="{escape(code)}">'
            f"<title>{escape(shade.title)}</title></path>"
        )
    out.append("</g>")
    for index, (code, shade) in enumerate(overseas):
        x, y = geometry.width + 15, 10 + index * 40.0
        out.append(
            f'<g data-departement="{escape(code)}"><title>{escape(shade.title)}</title>'
            f'<rect x="{x:.0f}" y="{y:.0f}" width="30" height="30" fill="{escape(shade.fill)}" '
            f'stroke="#666" stroke-width="0.5"/>'
            f'<text x="{x + 15:.0f}" y="{y + 19:.0f}" text-anchor="middle" font-size="10" '
            f'fill="#161616">{escape(code)}</text></g>'
        )
    out.append("</svg>")
    return "".join(out)


@dataclass(frozen=True, slots=True)
class Bar:
    label: str  # under the bar (a week)
    parts: tuple[tuple[float, str], ...]  # stacked (value, colour), bottom first
    title: str


def bar_chart(bars: Sequence[Bar], caption: str, *, height: float = 180.0) -> str:
    """Bars (stacked when several parts) over the weeks; each bar has a ``<title>`` with its
    numbers; the page shows the same numbers in a table."""
    left, bottom, top = 40.0, 30.0, 10.0
    step = max(8.0, min(40.0, 560.0 / max(len(bars), 1)))
    width = left + step * len(bars) + 10
    peak = max((sum(v for v, _ in bar.parts) for bar in bars), default=0.0)
    top_value = _nice(peak)
    plot = height - bottom - top
    out = [
        # Drawn at its own size (at most the page's width): a few weeks make a small chart.
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width:.0f} {height:.0f}" '
        f'width="{width * 1.5:.0f}" height="{height * 1.5:.0f}" style="max-width: 100%; '
        f'height: auto;" class="console-chart" role="img" aria-labelledby="{_id(caption)}">',
        f'<title id="{_id(caption)}">{escape(caption)}</title>',
        f'<line x1="{left}" y1="{height - bottom}" x2="{width - 5:.0f}" y2="{height - bottom}" '
        'stroke="#666"/>',
        f'<text x="{left - 4}" y="{top + 4}" text-anchor="end" font-size="9">'
        f"{escape(_short(top_value))}</text>",
        f'<text x="{left - 4}" y="{height - bottom}" text-anchor="end" font-size="9">0</text>',
    ]
    label_every = max(1, math.ceil(len(bars) / 13))
    for index, bar in enumerate(bars):
        x = left + index * step + step * 0.15
        y = height - bottom
        out.append(f"<g><title>{escape(bar.title)}</title>")
        for amount, fill in bar.parts:
            h = plot * amount / top_value if top_value else 0.0
            y -= h
            out.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{step * 0.7:.1f}" height="{h:.1f}" '
                f'fill="{escape(fill)}"/>'
            )
        out.append("</g>")
        if index % label_every == 0:
            out.append(
                f'<text x="{x + step * 0.35:.1f}" y="{height - bottom + 12}" '
                f'text-anchor="middle" font-size="8">{escape(bar.label)}</text>'
            )
    out.append("</svg>")
    return "".join(out)


def _nice(peak: float) -> float:
    """A round top for the axis (1, 2 or 5 times a power of ten), at least the peak."""
    if peak <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(peak))
    for factor in (1, 2, 5, 10):
        if factor * power >= peak:
            return float(factor * power)
    return float(10 * power)


def _short(amount: float) -> str:
    return f"{amount:g}"


def _id(caption: str) -> str:
    return "graphe-" + "".join(ch if ch.isalnum() else "-" for ch in caption.lower())[:40]
