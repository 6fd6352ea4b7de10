"""The alert rules and the Grafana dashboard name only metrics (and labels) the services expose,
so that neither can drift from the code; and Prometheus' own tool accepts the rules and the
scrape configuration (Debian's ``prometheus`` package provides ``promtool``: without it this
fails, never skips)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

from aiguillage_common import metrics

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
SCRAPE = DEPLOY / "prometheus" / "prometheus.yml"
RULE_TESTS = DEPLOY / "prometheus" / "alerts_test.yml"
DASHBOARD = DEPLOY / "grafana" / "aiguillage-dashboard.json"

# What Prometheus itself adds: the ``up`` series of each target, and the target labels.
PROMETHEUS_SERIES = {"up": {"job", "instance"}}
TARGET_LABELS = {"job", "instance"}
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "bool", "offset", "inf", "nan",
}  # fmt: skip


def exposed() -> dict[str, set[str]]:
    """Every series name the services expose, with its label names: aiguillage's own families
    (whether or not they have a sample yet) and the default process/platform/gc collectors."""
    names: dict[str, set[str]] = dict(PROMETHEUS_SERIES)
    for family in metrics.FAMILIES:
        kind = family._type  # counter, gauge or histogram
        labels = set(family._labelnames) | TARGET_LABELS
        if kind == "histogram":
            labels.add("le")
        for suffix in SUFFIXES[kind]:
            names[family._name + suffix] = labels
    for collected in REGISTRY.collect():
        for sample in collected.samples:
            names.setdefault(sample.name, set(sample.labels) | TARGET_LABELS)
    return names


def used(expr: str) -> Iterator[tuple[str, set[str]]]:
    """The series names an expression reads, each with the label names it matches on."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # no identifier inside a string
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges and subqueries: [5m], [10m:1m]
    # by (...), without (...), on (...), ignoring (...), group_left (...): label lists.
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    for match in re.finditer(r"([A-Za-z_:][A-Za-z0-9_:]*)\s*(\{[^}]*\})?\s*(\()?", text):
        name, matchers, call = match.groups()
        if call or name in KEYWORDS or re.fullmatch(r"\d.*", name):
            continue  # a function (rate, sum, histogram_quantile, label_values…) or a keyword
        labels = set(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*[!=]~?", matchers or ""))
        yield name, labels


def alert_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def dashboard_exprs() -> list[str]:
    document = json.loads(DASHBOARD.read_text())
    found = [t["expr"] for p in document["panels"] for t in p.get("targets", [])]
    for variable in document["templating"]["list"]:
        # label_values(series, label): read as series{label=""}, so both are checked.
        series, label = re.fullmatch(
            r"label_values\((\w+),\s*(\w+)\)", variable["definition"]
        ).groups()
        found.append(f'{series}{{{label}=""}}')
    return found


def drift(exprs: list[str]) -> list[str]:
    names = exposed()
    problems = []
    for expr in exprs:
        for name, labels in used(expr):
            if name not in names:
                problems.append(f"unknown metric {name!r} in: {expr}")
            elif not labels <= names[name]:
                problems.append(f"{name} has no label {sorted(labels - names[name])}: {expr}")
    return problems


def test_every_alert_reads_metrics_the_services_expose() -> None:
    rules = alert_rules()
    assert {r["alert"] for r in rules} >= {
        "AiguillageConsumerLagGrowing",
        "AiguillageOutboxStuck",
        "AiguillageDeadLetters",
        "AiguillageDeliveriesFailing",
        "AiguillageCapacityStale",
    }
    assert drift([r["expr"] for r in rules]) == []
    for rule in rules:  # every alert explains itself in words and waits a while before firing
        assert rule["annotations"]["summary"], rule
        assert rule["annotations"]["description"], rule
        assert re.fullmatch(r"\d+[smh]", rule["for"]), rule


def test_every_dashboard_panel_reads_metrics_the_services_expose() -> None:
    exprs = dashboard_exprs()
    assert len(exprs) >= 10
    assert drift(exprs) == []
    document = json.loads(DASHBOARD.read_text())
    assert [i["name"] for i in document["__inputs"]] == ["DS_PROMETHEUS"]
    for panel in document["panels"]:
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]


def test_the_drift_check_catches_an_unknown_name_or_label() -> None:
    assert (
        drift(['sum by (topic) (rate(aiguillage_records_consumed_total{outcome="x"}[5m]))']) == []
    )
    assert drift(["rate(aiguillage_records_consumd_total[5m])"]) != []
    assert drift(['aiguillage_outbox_backlog{topic="x"}']) != []
    assert drift(["histogram_quantile(0.5, aiguillage_batch_handling_seconds_bucket)"]) == []


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool missing: apt-get install prometheus (see .ci/run)", pytrace=False)
    return found


@pytest.mark.parametrize(
    "args",
    [
        ("check", "rules", str(ALERTS)),
        ("check", "config", str(SCRAPE)),
        # Each alert fires on the series it is meant for, and not before its ``for``.
        ("test", "rules", str(RULE_TESTS)),
    ],
    ids=["rules", "config", "rule-tests"],
)
def test_promtool_accepts_the_files(args: tuple[str, ...]) -> None:
    result = subprocess.run(
        [promtool(), *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
