"""The monitoring profile (docker/prometheus/, docker/grafana/, the `prometheus` and `grafana` services of
docker/compose.yaml), checked by the tools that will read it, without Docker and without the network.

- Prometheus's own `promtool` validates prometheus.yml (`check config`, which also loads the rule file and
  wants the bearer-token file to exist), the rules (`check rules`), every dashboard query (as rules: PromQL's
  parser), and plays the alerts and recording rules on synthetic series (`test rules`).
- The alerts mirror the watchdog: exactly one per check of trading_platform/watchdog/checks.py's SPECS, with
  the check's severity.
- Every metric the rules and the dashboard name is in the /metrics catalogue, with its labels and its type
  (rate() of counters and histogram buckets only; timestamps shown as `time() - ...`).
- Debian's docker-compose 1.29.2 accepts compose.yaml with and without `--profile monitoring`.
- No URL, token or password literal in the monitoring files.

The catalogue is the exporter's own (trading_platform/faces/metrics.py's CATALOGUE). No mocks and no skips:
without promtool or docker-compose the tests fail and say how to install them.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

from trading_platform.faces.metrics import CATALOGUE as EXPORTED
from trading_platform.store.migrations import LATENCY_BOUNDS as LIVE_LATENCY_BUCKETS  # the latency buckets
from trading_platform.watchdog.checks import CHECK_NAMES, SPECS

from test_deploy_config import _docker_compose, _mounts, _walk  # the tests directory is on the path

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "compose.yaml"
ENV_EXAMPLE = DOCKER / ".env.example"
PROMETHEUS_YML = DOCKER / "prometheus" / "prometheus.yml"
RULES_YML = DOCKER / "prometheus" / "rules.yml"
GRAFANA = DOCKER / "grafana"
DATASOURCE_YML = GRAFANA / "provisioning" / "datasources" / "prometheus.yml"
DASHBOARDS_YML = GRAFANA / "provisioning" / "dashboards" / "dashboards.yml"
DASHBOARD_JSON = GRAFANA / "dashboards" / "trading_platform.json"

MONITORING = {"prometheus", "grafana"}
SEVERITIES = {"ERROR": "error", "WARN": "warn"}  # the watchdog's severity -> the alert's `severity` label
PLATFORM_ALERTS = {"TPLiveLatencyP99High", "TPMetricsCollectorErrors", "TPScrapeDown"}

# The /metrics catalogue of `tp serve`, from the exporter itself: name -> (type, labels)
CATALOGUE: dict[str, tuple[str, tuple[str, ...]]] = {
    name: (kind, tuple(labels)) for name, (kind, labels, *_) in EXPORTED.items()}
TARGET_LABELS = ("job", "instance")  # what Prometheus adds to every scraped series
BUILTIN = {"up": ("gauge", ())}      # Prometheus's own series of a scrape


# ---- tools ------------------------------------------------------------------------------------------------

def _promtool() -> str:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.fail("promtool is not installed: these tests validate docker/prometheus/ with Prometheus's own "
                    "promtool, from Debian's `prometheus` package (`DEBIAN_FRONTEND=noninteractive apt-get install "
                    "-y --no-install-recommends prometheus`, as CI does); install it the same way to run them here")
    return exe


def _run_promtool(*args, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([_promtool(), *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=60)


def _compose(*args, env_file: Path = ENV_EXAMPLE, profiles=()) -> subprocess.CompletedProcess:
    """`docker-compose [--profile P]... -f compose.yaml --env-file E ARGS` in a clean environment (the shell's
    variables would override the env file's), as tests/test_deploy_config.py runs it."""
    cmd = [_docker_compose()]
    for p in profiles:
        cmd += ["--profile", p]
    cmd += ["-f", str(COMPOSE), "--env-file", str(env_file), *args]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp"), "LANG": "C.UTF-8"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)


def _config(env_file: Path = ENV_EXAMPLE, profiles=()) -> dict:
    r = _compose("config", env_file=env_file, profiles=profiles)
    assert r.returncode == 0, f"docker-compose rejected compose.yaml (profiles {list(profiles)}):\n{r.stderr}"
    return yaml.safe_load(r.stdout)


@pytest.fixture(scope="module")
def config() -> dict:
    return _config(profiles=("monitoring",))


# ---- the files --------------------------------------------------------------------------------------------

def _prometheus() -> dict:
    return yaml.safe_load(PROMETHEUS_YML.read_text())


def _rules() -> list[dict]:
    return [r for g in yaml.safe_load(RULES_YML.read_text())["groups"] for r in g["rules"]]


def _alerts() -> dict[str, dict]:
    alerts = [r for r in _rules() if "alert" in r]
    names = [a["alert"] for a in alerts]
    assert len(names) == len(set(names)), f"alert names repeat: {sorted(names)}"
    return {a["alert"]: a for a in alerts}


def _recording() -> dict[str, str]:
    rec = [r for r in _rules() if "record" in r]
    names = [r["record"] for r in rec]
    assert len(names) == len(set(names)), f"recording rules repeat: {sorted(names)}"
    return {r["record"]: r["expr"] for r in rec}


def _dashboard() -> dict:
    return json.loads(DASHBOARD_JSON.read_text())


def _panels(dash: dict) -> list[dict]:
    """Every panel, those of collapsed rows included; rows themselves hold no query."""
    out = []
    for p in dash["panels"]:
        out.extend(p.get("panels", []) if p.get("type") == "row" else [p])
    return out


def _dashboard_exprs() -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in _panels(_dashboard()) for t in p.get("targets", []) if t.get("expr")]


# ---- a small PromQL reader: the metrics, labels and functions an expression names ---------------------------

_AGGREGATIONS = {"sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile",
                 "count_values", "group"}
_FUNCTIONS = _AGGREGATIONS | {
    "abs", "absent", "absent_over_time", "avg_over_time", "ceil", "changes", "clamp", "clamp_max", "clamp_min",
    "count_over_time", "delta", "deriv", "floor", "histogram_quantile", "idelta", "increase", "irate",
    "label_replace", "last_over_time", "max_over_time", "min_over_time", "predict_linear", "rate", "resets",
    "round", "scalar", "sort", "sort_desc", "sum_over_time", "time", "timestamp", "vector"}
_GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
_KEYWORDS = {"and", "or", "unless", "bool", "offset"}
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_NUMBER = re.compile(r"\d[0-9A-Za-z_.]*")


def _read(expr: str) -> tuple[list[tuple[str, list[str]]], set[str], set[str]]:
    """(metric references with the label names of their selectors, the label names of by/without/on/ignoring
    clauses, the functions called) of a PromQL expression."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)   # string literals out
    s = re.sub(r"\[[^\]]*\]", "", s)                # range vectors and subqueries out
    refs, grouping, functions = [], set(), set()
    i = 0
    while i < len(s):
        num = _NUMBER.match(s, i)
        if num:
            i = num.end()
            continue
        m = _IDENT.match(s, i)
        if not m:
            i += 1
            continue
        name, i = m.group(), m.end()
        rest = s[i:].lstrip()
        if name in _GROUPING:
            if rest.startswith("("):
                start = s.index("(", i)
                end = s.index(")", start)
                grouping |= {x.strip() for x in s[start + 1:end].split(",") if x.strip()}
                i = end + 1
            continue
        if name in _KEYWORDS:
            continue
        if name in _AGGREGATIONS or rest.startswith("("):
            functions.add(name)
            continue
        labels = []
        if rest.startswith("{"):
            start = s.index("{", i)
            end = s.index("}", start)
            labels = re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)", s[start + 1:end])
            i = end + 1
        refs.append((name, labels))
    return refs, grouping, functions


def _metric(name: str) -> tuple[str, str, tuple[str, ...]] | None:
    """(catalogue name, type, labels) of an exported series name (a histogram's _bucket/_sum/_count too)."""
    if name in CATALOGUE:
        return (name, *CATALOGUE[name])
    if name in BUILTIN:
        return (name, *BUILTIN[name])
    for suffix in ("_bucket", "_sum", "_count"):
        base = name[: -len(suffix)]
        if name.endswith(suffix) and CATALOGUE.get(base, ("",))[0] == "histogram":
            labels = CATALOGUE[base][1] + (("le",) if suffix == "_bucket" else ())
            return (base, "histogram", labels)
    return None


def _labels_of(name: str, recording: dict[str, str], seen=()) -> set[str]:
    """The label names a series (exported or recorded) may carry."""
    if name.startswith("tp:"):
        assert name not in seen, f"recording rules refer to each other in a cycle: {seen}"
        refs, grouping, _ = _read(recording[name])
        return set().union(*(_labels_of(n, recording, seen + (name,)) for n, _ in refs)) | grouping
    return set(_metric(name)[2]) | set(TARGET_LABELS)


def _problems(expr: str, recording: dict[str, str]) -> list[str]:
    """What is wrong in an expression against the catalogue (empty: nothing)."""
    out = []
    refs, grouping, functions = _read(expr)
    if not refs:
        out.append("names no metric")
    for fn in functions - _FUNCTIONS:
        out.append(f"unknown function {fn}()")
    for name, labels in refs:
        if name.startswith("tp:"):
            if name not in recording:
                out.append(f"{name} is no recording rule of rules.yml")
                continue
        elif _metric(name) is None:
            out.append(f"{name} is not in the /metrics catalogue")
            continue
        elif _metric(name)[1] == "histogram" and name == _metric(name)[0]:
            out.append(f"{name} is a histogram: name its _bucket, _sum or _count series")
        unknown = set(labels) - _labels_of(name, recording)
        if unknown:
            out.append(f"{name} has no label(s) {sorted(unknown)}")
    known = set().union(*(_labels_of(n, recording) for n, _ in refs if n in recording or _metric(n)))
    if grouping - known:
        out.append(f"groups by label(s) {sorted(grouping - known)} that none of its series has")
    blank = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    for fn, name in re.findall(r"\b(rate|irate|increase|resets)\s*\(\s*([A-Za-z_:][A-Za-z0-9_:]*)", blank):
        m = _metric(name)
        if m and m[1] == "gauge":
            out.append(f"{fn}() of the gauge {name}")
    for name in re.findall(r"\b(tp_[a-z0-9_]+_timestamp_seconds)\b", blank):
        # a timestamp is shown as an age: `time() - X`, `time() - (X > 0)`
        if not re.search(r"time\(\)\s*-\s*\(*\s*" + name + r"\b", blank):
            out.append(f"{name} is a Unix timestamp: show it as time() - {name}")
    for name, _ in refs:
        if name.endswith("_bucket") and "le" not in grouping:
            out.append(f"{name} is aggregated without `le` (histogram_quantile needs it)")
    return out


def test_the_promql_reader_finds_what_is_wrong():
    """Proof that the catalogue checks below can fail."""
    rec = {"tp:x:rate5m": "sum by (consumer) (rate(tp_live_events_processed_total[5m]))"}
    assert _problems('sum by (consumer) (rate(tp_live_events_processed_total{consumer="a"}[5m]))', rec) == []
    assert _problems("histogram_quantile(0.99, sum by (consumer, le) (rate(tp_live_latency_seconds_bucket[5m])))",
                     rec) == []
    assert _problems("max by (consumer) (tp:x:rate5m) > 2", rec) == []
    assert _problems('up{job="trading_platform"} == 0', rec) == []
    assert _problems("tp_live_latency_total", rec) == ["tp_live_latency_total is not in the /metrics catalogue"]
    assert _problems('tp_paper_equity{symbol="x"}', rec) == ["tp_paper_equity has no label(s) ['symbol']"]
    assert _problems("sum by (symbol) (tp_paper_equity)", rec) == [
        "groups by label(s) ['symbol'] that none of its series has"]
    assert _problems("rate(tp_paper_equity[5m])", rec) == ["rate() of the gauge tp_paper_equity"]
    assert _problems("tp_collector_last_frame_timestamp_seconds", rec) == [
        "tp_collector_last_frame_timestamp_seconds is a Unix timestamp: show it as time() - "
        "tp_collector_last_frame_timestamp_seconds"]
    assert _problems("tp:y", rec) == ["tp:y is no recording rule of rules.yml"]
    assert _problems("tp_live_latency_seconds", rec) == [
        "tp_live_latency_seconds is a histogram: name its _bucket, _sum or _count series"]
    assert _problems("histogram_quantile(0.5, sum by (consumer) (rate(tp_live_latency_seconds_bucket[5m])))",
                     rec) == ["tp_live_latency_seconds_bucket is aggregated without `le` (histogram_quantile needs it)"]


# ---- the catalogue -------------------------------------------------------------------------------------

def test_the_catalogue_follows_prometheus_naming():
    for name, (kind, labels) in CATALOGUE.items():
        assert re.fullmatch(r"tp_[a-z0-9_]+", name), name
        assert kind in ("gauge", "counter", "histogram"), name
        assert name.endswith("_total") == (kind == "counter"), name
        assert "le" not in labels, name


# ---- promtool ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def prom_dir(tmp_path_factory) -> Path:
    """prometheus.yml and rules.yml as the container sees them (/etc/prometheus/...), moved into a folder of
    their own, with a dummy bearer-token file where the container writes the real one."""
    d = tmp_path_factory.mktemp("prometheus")
    text = PROMETHEUS_YML.read_text()
    assert "/etc/prometheus/" in text
    (d / "prometheus.yml").write_text(text.replace("/etc/prometheus/", f"{d}/"))
    shutil.copy(RULES_YML, d / "rules.yml")
    (d / "api_token").write_text("dummy-token-for-promtool\n")
    return d


def test_promtool_accepts_the_config(prom_dir):
    r = _run_promtool("check", "config", prom_dir / "prometheus.yml")
    assert r.returncode == 0, f"promtool check config:\n{r.stdout}\n{r.stderr}"
    assert "SUCCESS" in r.stdout and "rules found" in r.stdout, r.stdout  # the rule file was loaded with it


def test_promtool_refuses_a_config_without_its_token_file(prom_dir, tmp_path):
    """Proof that `check config` looks at the token file (and that the path substitution above matters)."""
    (tmp_path / "prometheus.yml").write_text(PROMETHEUS_YML.read_text().replace(
        "/etc/prometheus/rules.yml", str(prom_dir / "rules.yml")).replace(
        "/etc/prometheus/api_token", str(tmp_path / "missing_token")))
    r = _run_promtool("check", "config", tmp_path / "prometheus.yml")
    assert r.returncode != 0 and "missing_token" in (r.stdout + r.stderr), r.stdout + r.stderr


def test_promtool_accepts_the_rules():
    r = _run_promtool("check", "rules", RULES_YML)
    assert r.returncode == 0, f"promtool check rules:\n{r.stdout}\n{r.stderr}"
    assert f"SUCCESS: {len(_rules())} rules found" in r.stdout, r.stdout


def test_the_scrape_job():
    cfg = _prometheus()
    assert cfg["global"]["scrape_interval"] == "15s" and cfg["global"]["evaluation_interval"] == "15s"
    assert cfg["rule_files"] == ["/etc/prometheus/rules.yml"]
    [job] = cfg["scrape_configs"]
    assert job["job_name"] == "trading_platform"
    assert job.get("metrics_path", "/metrics") == "/metrics"
    assert job["authorization"] == {"type": "Bearer", "credentials_file": "/etc/prometheus/api_token"}
    assert job["static_configs"] == [{"targets": ["api:8000"]}]
    # on one line, so that a test run against a live `tp serve` can point it elsewhere
    assert '- targets: ["api:8000"]' in PROMETHEUS_YML.read_text()


def test_every_dashboard_query_is_promql(tmp_path):
    """promtool's PromQL parser on every panel's query, as recording rules of a throwaway file."""
    exprs = _dashboard_exprs()
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{i}", "expr": expr} for i, (_, expr) in enumerate(exprs)]}]}
    (tmp_path / "dashboard_rules.yml").write_text(yaml.safe_dump(rules, sort_keys=False))
    r = _run_promtool("check", "rules", tmp_path / "dashboard_rules.yml")
    assert r.returncode == 0, f"a dashboard query is not PromQL:\n{r.stdout}\n{r.stderr}"


# ---- the alerts mirror the watchdog -------------------------------------------------------------------------

def _watchdog_alerts() -> dict[str, list[dict]]:
    """check -> the alerts firing on `tp_watchdog_check_failing{check="<check>"} == 1`."""
    out: dict[str, list[dict]] = {}
    for alert in _alerts().values():
        m = re.fullmatch(r'\s*tp_watchdog_check_failing\{check="([a-z_]+)"\}\s*==\s*1\s*', alert["expr"])
        if m:
            out.setdefault(m.group(1), []).append(alert)
    return out


def test_one_alert_per_watchdog_check_with_its_severity():
    by_check = _watchdog_alerts()
    assert set(by_check) == set(CHECK_NAMES), (
        f"watchdog checks without an alert: {sorted(set(CHECK_NAMES) - set(by_check))}; "
        f"alerts of no watchdog check: {sorted(set(by_check) - set(CHECK_NAMES))}")
    for check, alerts in by_check.items():
        assert len(alerts) == 1, (check, [a["alert"] for a in alerts])
        [alert] = alerts
        assert alert["labels"]["severity"] == SEVERITIES[SPECS[check][1]], (check, alert["labels"])
        # the watchdog decides (its thresholds, its debounce): the alert adds no delay of its own
        assert alert.get("for") in (None, "0s", "0m"), (check, alert.get("for"))
        assert "tp_watchdog_check_since_timestamp_seconds" in alert["annotations"]["since"], check
        assert check in alert["annotations"]["summary"], check
    # any other alert on tp_watchdog_* would be a second definition of a check
    others = [a["alert"] for a in _alerts().values()
              if "tp_watchdog_" in a["expr"] and a not in [x for v in by_check.values() for x in v]]
    assert not others, others


def test_the_platforms_own_alerts():
    alerts = _alerts()
    assert PLATFORM_ALERTS <= set(alerts), sorted(alerts)
    assert set(alerts) == PLATFORM_ALERTS | {a["alert"] for v in _watchdog_alerts().values() for a in v}
    for a in alerts.values():
        assert a["labels"]["severity"] in set(SEVERITIES.values()), (a["alert"], a["labels"])
        assert a["annotations"].get("summary"), a["alert"]
    p99 = alerts["TPLiveLatencyP99High"]
    assert re.fullmatch(r'tp:live_latency_seconds:p99_5m\{consumer="predictions"\}\s*>\s*20', p99["expr"].strip()), \
        p99["expr"]
    assert p99["for"] == "5m"
    assert 20 in LIVE_LATENCY_BUCKETS  # the target is a bucket boundary: p99 crosses it without interpolation
    assert re.fullmatch(r"increase\(tp_metrics_collect_errors_total\[10m\]\)\s*>\s*0",
                        alerts["TPMetricsCollectorErrors"]["expr"].strip())
    assert re.fullmatch(r'up\{job="trading_platform"\}\s*==\s*0', alerts["TPScrapeDown"]["expr"].strip())
    assert _recording()["tp:live_latency_seconds:p99_5m"].replace(" ", "") == (
        "histogram_quantile(0.99,sumby(consumer,le)(rate(tp_live_latency_seconds_bucket[5m])))")


SINCE = 1_700_000_000  # 2023-11-14 22:13:20 UTC
_T = {"job": "trading_platform", "instance": "api:8000"}


def _series(name: str, labels: dict, values: str) -> dict:
    inner = ", ".join(f'{k}="{v}"' for k, v in {**labels, **_T}.items())
    return {"series": f"{name}{{{inner}}}", "values": values}


def _static(annotations: dict) -> dict:
    return {k: v for k, v in annotations.items() if "{{" not in v}


def test_promtool_plays_the_alerts_and_recording_rules(tmp_path):
    """`promtool test rules` on synthetic series: each watchdog alert fires once its check fails (with the check's
    severity and its since), the latency target at p99 > 20 s for 5 minutes, the collection errors, the scrape."""
    alerts = _alerts()
    watchdog = {c: a for c, [a] in _watchdog_alerts().items()}
    series, cases = [], []
    for check in CHECK_NAMES:
        # passing for 2 minutes, then failing since SINCE
        series.append(_series("tp_watchdog_check_failing", {"check": check}, "0x7 1x12"))
        series.append(_series("tp_watchdog_check_since_timestamp_seconds", {"check": check}, f"{SINCE}x19"))
        a = watchdog[check]
        cases.append({"eval_time": "1m", "alertname": a["alert"], "exp_alerts": []})
        cases.append({"eval_time": "3m", "alertname": a["alert"], "exp_alerts": [{
            "exp_labels": {"severity": SEVERITIES[SPECS[check][1]], "check": check, **_T, **{
                k: v for k, v in a["labels"].items() if k != "severity"}},
            "exp_annotations": {**_static(a["annotations"]), "since": "2023-11-14 22:13:20 +0000 UTC"}}]})
    # live latency: consumer `predictions` (the one the target is for) observes 60 events per 15 s between 20 and 30 s (p99 29.9 s), `fast` between
    # 1 and 2 s (p99 1.99 s)
    for consumer, first in (("predictions", 30), ("paper", 2)):
        for le in (*LIVE_LATENCY_BUCKETS, "+Inf"):
            grows = le == "+Inf" or le >= first
            series.append(_series("tp_live_latency_seconds_bucket", {"consumer": consumer, "le": le},
                                  "0+60x80" if grows else "0x80"))
    p99 = alerts["TPLiveLatencyP99High"]
    cases.append({"eval_time": "4m", "alertname": "TPLiveLatencyP99High", "exp_alerts": []})
    cases.append({"eval_time": "10m", "alertname": "TPLiveLatencyP99High", "exp_alerts": [{
        "exp_labels": {"consumer": "predictions", **p99["labels"]},
        "exp_annotations": {**_static(p99["annotations"]),
                            "summary": "live p99 latency of predictions is 29.9s (target: 20 s)"}}]})
    # a collector that failed once, 2.5 minutes in
    series.append(_series("tp_metrics_collect_errors_total", {"collector": "paper"}, "0x9 1x100"))
    series.append(_series("tp_metrics_collect_errors_total", {"collector": "live"}, "0x110"))
    errors = alerts["TPMetricsCollectorErrors"]
    cases.append({"eval_time": "2m", "alertname": "TPMetricsCollectorErrors", "exp_alerts": []})
    cases.append({"eval_time": "5m", "alertname": "TPMetricsCollectorErrors", "exp_alerts": [{
        "exp_labels": {"collector": "paper", **_T, **errors["labels"]},
        "exp_annotations": {**_static(errors["annotations"]),
                            "summary": "metrics collector paper failed in the last 10 minutes",
                            "description": errors["annotations"]["description"].replace(
                                "{{ $labels.collector }}", "paper")}}]})
    cases.append({"eval_time": "25m", "alertname": "TPMetricsCollectorErrors", "exp_alerts": []})
    # the scrape fails from 75 s on
    series.append({"series": 'up{job="trading_platform", instance="api:8000"}', "values": "1x4 0x30"})
    down = alerts["TPScrapeDown"]
    cases.append({"eval_time": "2m", "alertname": "TPScrapeDown", "exp_alerts": []})
    cases.append({"eval_time": "4m", "alertname": "TPScrapeDown", "exp_alerts": [{
        "exp_labels": {**_T, **down["labels"]},
        "exp_annotations": {**_static(down["annotations"]),
                            "summary": "Prometheus cannot scrape api:8000 (/metrics of `tp serve`)"}}]})
    series.append(_series("tp_ohlcv_last_close_timestamp_seconds", {"symbol": "BTC/USDT", "timeframe": "1m"},
                          "-300x10"))
    promql = [
        {"expr": "tp:live_latency_seconds:p99_5m", "eval_time": "10m", "exp_samples": [
            {"labels": 'tp:live_latency_seconds:p99_5m{consumer="predictions"}', "value": 29.9},
            {"labels": 'tp:live_latency_seconds:p99_5m{consumer="paper"}', "value": 1.99}]},
        {"expr": "tp:live_latency_seconds:p50_5m", "eval_time": "10m", "exp_samples": [
            {"labels": 'tp:live_latency_seconds:p50_5m{consumer="predictions"}', "value": 25},
            {"labels": 'tp:live_latency_seconds:p50_5m{consumer="paper"}', "value": 1.5}]},
        # the test clock starts at Unix time 0: a close at -300 is 420 s old at 2 minutes
        {"expr": "tp:ohlcv_last_close:age_seconds", "eval_time": "2m", "exp_samples": [
            {"labels": 'tp:ohlcv_last_close:age_seconds{instance="api:8000", job="trading_platform", '
                       'symbol="BTC/USDT", timeframe="1m"}', "value": 420}]},
        {"expr": "tp:watchdog_checks_failing:sum", "eval_time": "3m", "exp_samples": [
            {"labels": "tp:watchdog_checks_failing:sum", "value": len(CHECK_NAMES)}]},
    ]
    shutil.copy(RULES_YML, tmp_path / "rules.yml")
    (tmp_path / "tests.yml").write_text(yaml.safe_dump({
        "rule_files": ["rules.yml"], "evaluation_interval": "15s",
        "tests": [{"interval": "15s", "input_series": series, "alert_rule_test": cases,
                   "promql_expr_test": promql}]}, sort_keys=False))
    r = _run_promtool("test", "rules", "tests.yml", cwd=tmp_path)
    assert r.returncode == 0, f"promtool test rules:\n{r.stdout}\n{r.stderr}"
    assert "SUCCESS" in r.stdout, r.stdout


# ---- every metric is in the catalogue -------------------------------------------------------------------------

def test_rules_name_only_catalogued_metrics():
    recording = _recording()
    for name in recording:
        assert re.fullmatch(r"tp:[a-z0-9_]+:[a-z0-9_]+", name), f"{name}: not level:metric:operations"
    problems = [f"{r.get('record') or r.get('alert')}: {p}" for r in _rules() for p in _problems(r["expr"], recording)]
    assert not problems, "\n".join(problems)


def test_dashboard_names_only_catalogued_metrics():
    recording = _recording()
    problems = [f"{title}: {p}" for title, expr in _dashboard_exprs() for p in _problems(expr, recording)]
    assert not problems, "\n".join(problems)


def test_the_dashboard_shows_every_metric():
    shown = {(_metric(n) or (n,))[0] for _, e in _dashboard_exprs() for n, _ in _read(e)[0]}
    recorded = {(_metric(n) or (n,))[0] for e in _recording().values() for n, _ in _read(e)[0]}
    assert not set(CATALOGUE) - (shown | recorded), f"no panel shows {sorted(set(CATALOGUE) - shown - recorded)}"


# ---- grafana ----------------------------------------------------------------------------------------------

def test_the_dashboard():
    dash = _dashboard()
    assert dash["uid"] and dash["title"] and isinstance(dash["schemaVersion"], int)
    panels = _panels(dash)
    ids = [p["id"] for p in dash["panels"]] + [p["id"] for r in dash["panels"] for p in r.get("panels", [])]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    assert panels
    for p in panels:
        assert p.get("title"), p
        targets = p.get("targets") or []
        assert any(isinstance(t.get("expr"), str) and t["expr"].strip() for t in targets), f"{p['title']}: no query"
        refs = [t["refId"] for t in targets]
        assert len(refs) == len(set(refs)), p["title"]
        for ds in [p.get("datasource"), *(t.get("datasource") for t in targets)]:
            assert ds in (None, {"type": "prometheus", "uid": "prometheus"}), (p["title"], ds)
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0, (p["title"], g)
    # what the issue asks to see
    shown = {(_metric(n) or (n,))[0] for _, e in _dashboard_exprs() for n, _ in _read(e)[0]}
    assert {"tp_live_backlog_events", "tp_live_latency_seconds", "tp_ohlcv_last_close_timestamp_seconds",
            "tp_collector_connected", "tp_collector_last_frame_timestamp_seconds", "tp_alerts_total",
            "tp_alert_deliveries_pending", "tp_paper_equity", "tp_watchdog_check_failing"} <= shown
    exprs = [e.replace(" ", "") for _, e in _dashboard_exprs()]
    for q in ("0.5", "0.99"):
        assert f"histogram_quantile({q},sumby(consumer,le)(rate(tp_live_latency_seconds_bucket[5m])))" in exprs, q
    assert "topk(20,time()-tp_ohlcv_last_close_timestamp_seconds)" in exprs
    assert "sumby(status)(rate(tp_alerts_total[5m]))" in exprs


def test_grafana_provisioning(config):
    [ds] = yaml.safe_load(DATASOURCE_YML.read_text())["datasources"]
    assert ds["uid"] == "prometheus" and ds["type"] == "prometheus" and ds["access"] == "proxy"
    # the compose service and the port Prometheus listens on
    assert ds["url"] == "http://prometheus:9090"
    assert "prometheus" in config["services"]
    assert any(re.search(r":9090(/tcp)?$", str(p)) for p in config["services"]["prometheus"]["ports"])
    [provider] = yaml.safe_load(DASHBOARDS_YML.read_text())["providers"]
    assert provider["type"] == "file"
    mounts = _mounts(config["services"]["grafana"])
    assert Path(mounts[provider["options"]["path"]]) == DASHBOARD_JSON.parent
    assert Path(mounts["/etc/grafana/provisioning"]) == GRAFANA / "provisioning"
    home = config["services"]["grafana"]["environment"].get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    if home:
        assert home == f"{provider['options']['path']}/{DASHBOARD_JSON.name}"


# ---- compose ----------------------------------------------------------------------------------------------

def test_compose_accepts_the_monitoring_profile():
    for profiles in ((), ("monitoring",)):
        r = _compose("config", "-q", profiles=profiles)
        assert r.returncode == 0, f"docker-compose rejected compose.yaml (profiles {list(profiles)}):\n{r.stderr}"
        assert r.stdout == ""


def test_the_monitoring_services_come_with_their_profile_only():
    """docker-compose 1.29's `config` lists every service whatever the profiles (Compose v2's filters): what
    `up` starts is decided by each service's `profiles` (none: always), which both read the same way."""
    plain, monitoring = _config(), _config(profiles=("monitoring",))
    assert plain["services"] == monitoring["services"]
    s = plain["services"]
    with_profile = {name for name, svc in s.items() if svc.get("profiles")}
    assert with_profile == MONITORING | {"backup"}, sorted(with_profile)  # backup: a one-shot of its own profile
    for name in MONITORING:
        assert s[name]["profiles"] == ["monitoring"], name
    enabled = lambda svc, active: not svc.get("profiles") or set(svc["profiles"]) & set(active)  # noqa: E731
    assert {n for n, svc in s.items() if enabled(svc, ())} == set(s) - with_profile
    assert {n for n, svc in s.items() if enabled(svc, ("monitoring",))} == set(s) - {"backup"}
    # a plain `up` must not need them
    for name, svc in s.items():
        if name not in MONITORING:
            assert not set(svc.get("depends_on") or {}) & MONITORING, name


def test_the_monitoring_services(config):
    s = config["services"]
    prom, graf = s["prometheus"], s["grafana"]
    for name, svc in (("prometheus", prom), ("grafana", graf)):
        image, _, tag = svc["image"].rpartition(":")
        assert image in ("prom/prometheus", "grafana/grafana") and re.fullmatch(r"v?\d+\.\d+\.\d+", tag), svc["image"]
        assert svc["restart"] == "unless-stopped" and svc["networks"].keys() == {"tp"}, name
        assert svc["healthcheck"]["test"][0] == "CMD", name
    # Prometheus reads its two files where prometheus.yml and its command say
    mounts = _mounts(prom)
    assert Path(mounts["/etc/prometheus/prometheus.yml"]) == PROMETHEUS_YML
    assert Path(mounts[_prometheus()["rule_files"][0]]) == RULES_YML
    assert "--config.file=/etc/prometheus/prometheus.yml" in " ".join(prom["entrypoint"] + prom["command"])
    # on the host: loopback only (Prometheus has no authentication)
    assert all(str(p).startswith("127.0.0.1:") for p in prom["ports"]), prom["ports"]
    # the scrape target is the api service, which `tp serve` runs on the port it names
    assert "api" in s and "--port" in s["api"]["command"]
    port = s["api"]["command"][s["api"]["command"].index("--port") + 1]
    assert _prometheus()["scrape_configs"][0]["static_configs"][0]["targets"] == [f"api:{port}"]
    assert prom["environment"]["TP_API_TOKEN"] == s["api"]["environment"]["TP_API_TOKEN"]
    # Grafana on 3001 (the Dagster UI has 3000), after Prometheus is healthy
    assert any(str(p).endswith(":3001:3000/tcp") or str(p).endswith(":3001:3000") for p in graf["ports"]), graf["ports"]
    assert graf["depends_on"]["prometheus"]["condition"] == "service_healthy"
    assert graf["environment"]["GF_AUTH_ANONYMOUS_ENABLED"] == "false"


def test_prometheus_writes_the_token_file_and_starts(tmp_path):
    """The prometheus service's command, run by a POSIX shell with /etc/prometheus and /bin/prometheus moved
    aside: the token from the environment lands, owner-only, in the file prometheus.yml names, and nowhere on
    a command line; Prometheus is then exec'd with the config."""
    prom = _config(profiles=("monitoring",))["services"]["prometheus"]
    assert prom["entrypoint"] == ["/bin/sh", "-c"]
    [script] = prom["command"]
    script = script.replace("$$", "$")  # `config` writes Compose's escape back; the container gets one `$`
    etc = tmp_path / "etc"
    etc.mkdir()
    fake = tmp_path / "prometheus"
    fake.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    fake.chmod(0o755)
    script = script.replace("/etc/prometheus/", f"{etc}/").replace("exec /bin/prometheus", f"exec {fake}")
    token = "tok-" + os.urandom(8).hex()
    r = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, timeout=30,
                       env={"PATH": "/usr/bin:/bin", "TP_API_TOKEN": token})
    assert r.returncode == 0, r.stderr
    credentials = Path(_prometheus()["scrape_configs"][0]["authorization"]["credentials_file"])
    written = etc / credentials.name
    assert written.read_text() == token
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    args = r.stdout.split()
    assert f"--config.file={etc}/prometheus.yml" in args and "--storage.tsdb.path=/prometheus" in args, args
    assert token not in r.stdout and token not in script


def test_the_grafana_password_comes_from_the_env_file(tmp_path):
    secret = "Gf" + os.urandom(8).hex()
    env_file = tmp_path / ".env"
    example = ENV_EXAMPLE.read_text()
    assert re.search(r"(?m)^GRAFANA_ADMIN_PASSWORD=change-me", example), "a placeholder, never a real one"
    env_file.write_text(re.sub(r"(?m)^GRAFANA_ADMIN_PASSWORD=.*$", f"GRAFANA_ADMIN_PASSWORD={secret}", example))
    s = _config(env_file=env_file, profiles=("monitoring",))["services"]
    assert s["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == secret
    for name, svc in s.items():
        if name != "grafana":
            assert secret not in json.dumps(svc), name
    assert secret not in " ".join(map(str, s["grafana"].get("command") or []))
    # left out (a deployment from before the monitoring profile): the rest still configures, and Grafana's own
    # start refuses, naming it
    env_file.write_text(re.sub(r"(?m)^(GRAFANA_ADMIN_PASSWORD|GRAFANA_ADMIN_USER|TP_GRAFANA_PORT|TP_PROMETHEUS_PORT)"
                               r"=.*$", "", example))
    for profiles in ((), ("monitoring",)):
        r = _compose("config", env_file=env_file, profiles=profiles)
        assert r.returncode == 0, r.stderr
    grafana = yaml.safe_load(r.stdout)["services"]["grafana"]
    start = " ".join(grafana["command"])
    assert grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == ""
    p = subprocess.run(["sh", "-c", start.replace("$$", "$").replace("exec /run.sh", "echo started")],
                       env={"GF_SECURITY_ADMIN_PASSWORD": "", "PATH": os.environ["PATH"]}, capture_output=True,
                       text=True)
    assert p.returncode == 1 and "set GRAFANA_ADMIN_PASSWORD in docker/.env" in p.stderr
    p = subprocess.run(["sh", "-c", start.replace("$$", "$").replace("exec /run.sh", "echo started")],
                       env={"GF_SECURITY_ADMIN_PASSWORD": "x", "PATH": os.environ["PATH"]}, capture_output=True,
                       text=True)
    assert p.returncode == 0 and p.stdout.strip() == "started"


# ---- no secret in the monitoring files ------------------------------------------------------------------

_SECRET_KEY = re.compile(r"pass(word)?|token|secret|credential|api_?key|bearer|auth(?!orization$)", re.I)
_REFERENCE = re.compile(r"\$__(env|file)\{[^}]+\}|\$\{[A-Za-z_][A-Za-z0-9_]*\}|/[^\s]+")  # env, file path
ALLOWED_URLS = {"http://prometheus:9090"}  # the compose network's Prometheus, the datasource


def _monitoring_files() -> list[Path]:
    files = [PROMETHEUS_YML, RULES_YML, *sorted(p for p in GRAFANA.rglob("*") if p.is_file())]
    assert DATASOURCE_YML in files and DASHBOARD_JSON in files and DASHBOARDS_YML in files
    return files


def test_no_secret_in_the_monitoring_files():
    placeholders = {v for k, v in (line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines()
                                   if "=" in line and not line.startswith("#"))
                    if _SECRET_KEY.search(k) and len(v) >= 6}
    for f in _monitoring_files():
        text = f.read_text()
        data = json.loads(text) if f.suffix == ".json" else yaml.safe_load(text)
        for path, value in _walk(data):
            if not isinstance(value, str) or not path:
                continue
            key = path[-1]
            if _SECRET_KEY.search(key) and key not in ("type",):
                assert _REFERENCE.fullmatch(value), f"{f.relative_to(ROOT)}: {'.'.join(path)} = {value!r}"
            assert not re.search(r"://[^/\s:@]+:[^@\s]+@", value), (f.name, path, "a password in a URL")
        urls = set(re.findall(r"[a-z][a-z0-9+.-]*://[^\s\"'`)]+", text))
        assert urls <= ALLOWED_URLS, f"{f.relative_to(ROOT)}: {sorted(urls - ALLOWED_URLS)}"
        for v in placeholders:
            assert v not in text, f"{f.relative_to(ROOT)} holds the value of a secret of .env.example: {v!r}"
        assert not re.search(r"(?i)\b(?:bearer|basic)[ \t]+[A-Za-z0-9+/=._-]{8,}", text), f.name


def test_the_env_example_sets_what_the_monitoring_services_read():
    env = {k: v for k, v in (line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines()
                             if "=" in line and not line.startswith("#"))}
    assert env["TP_GRAFANA_PORT"] == "3001"
    assert env["GRAFANA_ADMIN_PASSWORD"].startswith("change-me")
