"""The monitoring assets under ``monitoring/``: the alert rules and their unit tests, the Grafana
dashboard and its provisioning, and their wiring into docker-compose.yml. Every metric an alert
or a panel reads is one the service exports (a misspelt name would leave an alert silent and a
panel empty forever), every alert links to a runbook entry that exists, and promtool accepts
the rules and passes their tests where it is installed."""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip(
    "yaml", reason="PyYAML is not installed: the rules cannot be parsed (pip install pyyaml)"
)

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "monitoring"
PROMETHEUS_CONFIG = MONITORING / "prometheus" / "prometheus.yml"
RULES = MONITORING / "prometheus" / "alerts.yml"
RULE_TESTS = MONITORING / "prometheus" / "alerts.test.yml"
DASHBOARD = MONITORING / "grafana" / "dashboards" / "recsys.json"
PROVISIONING = MONITORING / "grafana" / "provisioning"
RUNBOOK = ROOT / "docs" / "monitoring.md"
COMPOSE = ROOT / "docker-compose.yml"
PROMTOOL = shutil.which("promtool")

SEVERITIES = {"critical", "warning"}
# PromQL words that look like names but are not metrics.
KEYWORDS = {
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "atan2",
    "inf",
    "nan",
}
# Variables Grafana defines itself.
GRAFANA_BUILTINS = {"__rate_interval", "__interval", "__range", "__interval_ms", "__range_s"}
# The rows the dashboard is read by (docs/monitoring.md, "The dashboard").
ROWS = ["Traffic", "Ingestion", "Stream", "Models", "Drift", "Online quality", "Canary"]


# -- reading PromQL ---------------------------------------------------------------------------

STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
NAME_MATCHER = re.compile(r'__name__\s*=~?\s*"([^"]*)"')
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
IDENTIFIER = re.compile(r"(?<![\w:.$])([A-Za-z_:][\w:]*)(\s*\()?")
LABEL_VALUES = re.compile(r"^\s*label_values\((.*),\s*\w+\s*\)\s*$", re.DOTALL)


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: identifiers that are not functions (followed
    by a parenthesis), keywords, label names (inside matchers and grouping lists), durations or
    Grafana variables; plus the names given as ``{__name__=~"a|b"}``."""
    names: set[str] = set()
    for pattern in NAME_MATCHER.findall(expr):
        alternatives = pattern.split("|")
        assert all(re.fullmatch(r"[A-Za-z_:][\w:]*", name) for name in alternatives), pattern
        names.update(alternatives)
    text = re.sub(r"\$\{?\w+\}?", " ", STRING.sub('""', expr))
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    text = GROUPING.sub(" ", text)
    for name, call in IDENTIFIER.findall(text):
        if not call and name.lower() not in KEYWORDS:
            names.add(name)
    return names


def test_metric_names_are_read_from_promql() -> None:
    """The name reader behind the checks below: functions, label names, grouping lists,
    durations, strings, numbers and Grafana variables are not metrics; names in ``__name__``
    matchers are."""
    expr = (
        "histogram_quantile(0.99, sum by (handler, le) (rate(http_request_duration_seconds_bucket"
        '{job="recsys-api", handler=~"a|b"}[$__rate_interval])))\n'
        "  / on (instance) group_left (version) max without (pod) (recsys_model_info offset 5m)"
        " > bool 1e3 or vector(0) and up"
    )
    assert metric_names(expr) == {"http_request_duration_seconds_bucket", "recsys_model_info", "up"}
    assert metric_names('time() - max(recsys:monitor_staleness_seconds{window="$window"})') == {
        "recsys:monitor_staleness_seconds"
    }
    assert metric_names('count({__name__=~"recsys_online_lists|recsys_drift_psi"})') == {
        "recsys_online_lists",
        "recsys_drift_psi",
    }


# -- what the service exports -----------------------------------------------------------------


@functools.cache
def exported_metrics() -> frozenset[str]:
    """Every series name the API and the stream consumer can expose: the collectors in the
    default registry once the application is built and the consumer imported (collectors with
    no samples yet still report their names), expanded as the exposition format names them,
    plus ``up``, which Prometheus adds to every target."""
    from prometheus_client import REGISTRY

    import app.main
    import app.stream_consumer  # its collectors register on import
    from app.config import Settings

    app.main.create_app(Settings(_env_file=None))
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("", "_sum", "_count", "_created"),
        "info": ("_info",),
    }
    names = {"up"}
    for family in REGISTRY.collect():
        names.update(family.name + suffix for suffix in suffixes.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return frozenset(names)


def test_the_exported_set_holds_the_service_s_own_and_the_instrumentator_s_metrics() -> None:
    """The set the checks compare against is the real one: it names the HTTP series by their
    exposed names, the consumer's stream series and the monitor's gauges, and not a counter's
    bare family name."""
    exported = exported_metrics()
    assert {
        "http_requests_total",
        "http_request_duration_seconds_bucket",
        "recsys_stream_messages_total",
        "recsys_stream_consumer_lag_seconds",
        "recsys_drift_status",
        "recsys_monitor_last_run_timestamp_seconds",
        "up",
    } <= exported
    assert "http_requests" not in exported


# -- the rules --------------------------------------------------------------------------------


@functools.cache
def rules() -> tuple[dict[str, Any], ...]:
    document = yaml.safe_load(RULES.read_text())
    return tuple(rule for group in document["groups"] for rule in group["rules"])


def alerts() -> list[dict[str, Any]]:
    return [rule for rule in rules() if "alert" in rule]


def recorded_names() -> set[str]:
    return {rule["record"] for rule in rules() if "record" in rule}


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def all_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, including those folded inside collapsed rows."""
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", []))


def dashboard_expressions() -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable."""
    for panel in all_panels(dashboard()["panels"]):
        for target in panel.get("targets", []):
            yield f"panel {panel['id']} ({panel['title']}) {target['refId']}", target["expr"]
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            text = query["query"] if isinstance(query, dict) else query
            wrapped = LABEL_VALUES.match(text)
            yield f"variable {variable['name']}", wrapped.group(1) if wrapped else text


def test_rules_and_dashboard_read_only_metrics_the_service_exports() -> None:
    """Every metric named in a rule or a dashboard expression is exported by the API or the
    consumer (or is a recording rule defined in alerts.yml)."""
    known = exported_metrics() | recorded_names()
    unknown = []
    sources = [(rule.get("alert") or rule["record"], rule["expr"]) for rule in rules()]
    for where, expr in [*sources, *dashboard_expressions()]:
        names = metric_names(expr)
        assert names, f"{where}: no metric found in {expr!r}"
        unknown += [f"{where}: {name}" for name in sorted(names - known)]
    assert unknown == []


def test_every_recording_rule_is_read_by_an_alert() -> None:
    """A recording rule nothing reads only costs evaluations and storage."""
    read = set().union(*(metric_names(rule["expr"]) for rule in alerts()))
    assert recorded_names() - read == set()


def test_every_alert_has_a_duration_a_severity_and_its_annotations() -> None:
    """Each alert waits (`for`) before it fires, says how urgent it is, and carries a summary, a
    description and the link to its runbook entry; names are unique."""
    names = [rule["alert"] for rule in alerts()]
    assert len(names) == len(set(names))
    assert len(names) >= 12
    for rule in alerts():
        name = rule["alert"]
        assert re.fullmatch(r"\d+[smhd]", str(rule.get("for", ""))), f"{name}: no `for`"
        assert rule.get("labels", {}).get("severity") in SEVERITIES, name
        annotations = rule.get("annotations", {})
        for key in ("summary", "description", "runbook_url"):
            assert annotations.get(key), f"{name}: no {key}"


def runbook_anchors() -> set[str]:
    """The anchors GitHub gives the headings of docs/monitoring.md."""
    anchors = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*$", RUNBOOK.read_text(), re.MULTILINE):
        anchors.add(re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-"))
    return anchors


def test_every_alert_links_to_its_own_runbook_entry() -> None:
    """runbook_url points at docs/monitoring.md, at a heading that exists, one per alert."""
    anchors = runbook_anchors()
    assert {"the-dashboard", "alerts-and-runbook"} <= anchors
    for rule in alerts():
        url = rule["annotations"]["runbook_url"]
        page, _, anchor = url.partition("#")
        assert page == "docs/monitoring.md", url
        assert anchor == rule["alert"].lower(), url
        assert anchor in anchors, f"{rule['alert']}: docs/monitoring.md has no heading #{anchor}"


def test_every_alert_has_a_test_that_fires_it_and_one_that_keeps_it_quiet() -> None:
    """alerts.test.yml evaluates each alert at least once expecting it to fire and at least once
    expecting silence, and loads the rule file the Prometheus config loads."""
    document = yaml.safe_load(RULE_TESTS.read_text())
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    assert document["rule_files"] == config["rule_files"] == [RULES.name]
    fires: set[str] = set()
    quiet: set[str] = set()
    for test in document["tests"]:
        for check in test.get("alert_rule_test", []):
            (fires if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in alerts()}
    assert names - fires == set(), "never seen firing"
    assert names - quiet == set(), "never seen quiet"


requires_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool is not on PATH (Debian: apt-get install prometheus): rules not run",
)


def promtool(*args: str) -> None:
    assert PROMTOOL is not None
    result = subprocess.run(
        [PROMTOOL, *args], capture_output=True, text=True, check=False, timeout=120, cwd=ROOT
    )
    assert result.returncode == 0, f"promtool {' '.join(args)}:\n{result.stdout}{result.stderr}"


@requires_promtool
def test_promtool_accepts_the_config_and_the_rules() -> None:
    """The Prometheus config (with the rule file it loads) and the rules pass promtool's checks."""
    promtool("check", "config", str(PROMETHEUS_CONFIG.relative_to(ROOT)))
    promtool("check", "rules", str(RULES.relative_to(ROOT)))


@requires_promtool
def test_promtool_passes_the_alert_unit_tests() -> None:
    """Every alert fires on its series and stays quiet on the others (promtool test rules)."""
    promtool("test", "rules", str(RULE_TESTS.relative_to(ROOT)))


# -- the dashboard ----------------------------------------------------------------------------


def test_dashboard_panels_have_unique_ids_a_datasource_and_targets() -> None:
    """The dashboard parses, its panel ids are unique, and every panel other than a row reads
    Prometheus through the dashboard's datasource variable with at least one query."""
    board = dashboard()
    assert board["uid"]
    assert board["schemaVersion"] >= 39
    panels = list(all_panels(board["panels"]))
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids))
    for panel in panels:
        if panel["type"] == "row":
            continue
        where = f"panel {panel['id']} ({panel.get('title')})"
        assert panel.get("datasource") == {"type": "prometheus", "uid": "${datasource}"}, where
        assert panel.get("targets"), f"{where}: no target"
        for target in panel["targets"]:
            assert target.get("expr", "").strip(), f"{where}: empty query"
            assert target.get("datasource", panel["datasource"]) == panel["datasource"], where


def test_dashboard_variables_are_defined_and_rows_are_in_place() -> None:
    """The datasource and window variables exist, every `$variable` a query uses is one of them
    (or Grafana's own), the rows come in the documented order, and no two panels overlap."""
    board = dashboard()
    variables = {variable["name"]: variable for variable in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["window"]["type"] == "query"
    for where, expr in dashboard_expressions():
        for used in re.findall(r"\$\{?(\w+)", expr):
            assert used in variables or used in GRAFANA_BUILTINS, f"{where}: ${used}"

    titles = [panel["title"] for panel in board["panels"] if panel["type"] == "row"]
    assert [next(row for row in ROWS if title.startswith(row)) for title in titles] == ROWS

    cells: dict[tuple[int, int], int] = {}
    for panel in all_panels(board["panels"]):
        grid = panel["gridPos"]
        assert grid["x"] >= 0, panel["id"]
        assert grid["x"] + grid["w"] <= 24, panel["id"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"panels {cells.get((x, y))} and {panel['id']} overlap"
                cells[(x, y)] = panel["id"]


def test_grafana_provisioning_matches_the_compose_mounts() -> None:
    """The provisioned data source is Prometheus at the compose service's address under a
    fixed uid; the dashboard provider reads the folder compose mounts the dashboards into; the
    home dashboard compose names is that file; anonymous access is off unless asked for; and
    Prometheus gets the rule file at the path its config names."""
    (source,) = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())[
        "datasources"
    ]
    assert source["type"] == "prometheus"
    assert source["uid"]
    assert source["isDefault"]
    (provider,) = yaml.safe_load((PROVISIONING / "dashboards" / "recsys.yml").read_text())[
        "providers"
    ]
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    grafana, prometheus = services["grafana"], services["prometheus"]
    assert grafana["profiles"] == prometheus["profiles"] == ["monitoring"]
    assert source["url"] == "http://prometheus:9090"
    assert any(port.endswith(":9090") for port in prometheus["ports"])

    mounts = {}
    for volume in grafana["volumes"]:
        host, container, *mode = volume.split(":")
        mounts[container] = (host, mode)
    dashboards_dir = provider["options"]["path"]
    assert mounts[dashboards_dir] == ("./monitoring/grafana/dashboards", ["ro"])
    assert mounts["/etc/grafana/provisioning"] == ("./monitoring/grafana/provisioning", ["ro"])
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{dashboards_dir}/{DASHBOARD.name}"
    assert grafana["environment"]["GF_AUTH_ANONYMOUS_ENABLED"].endswith(":-false}")
    assert "GF_SECURITY_ADMIN_PASSWORD" not in grafana["environment"]  # from the env file
    assert "GF_SECURITY_ADMIN_PASSWORD=" in (ROOT / ".env.example").read_text()

    config_dir = "/etc/prometheus"
    rule_mounts = {
        volume.split(":")[1]: volume.split(":")[0]
        for volume in prometheus["volumes"]
        if volume.startswith("./")
    }
    for rule_file in yaml.safe_load(PROMETHEUS_CONFIG.read_text())["rule_files"]:
        assert rule_mounts[f"{config_dir}/{rule_file}"] == f"./monitoring/prometheus/{rule_file}"
