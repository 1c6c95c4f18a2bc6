"""The stack's Prometheus side, for real: promtool on the repo's files, then a real Prometheus
scraping a real `lwsobs serve --demo`, and every dashboard query and alert rule run against it.

Prometheus and promtool come from Debian's `prometheus` package (.ci/run installs it). The
Prometheus here uses deploy/prometheus.yml with only the target, the intervals and the rule
file's path changed; both processes listen on 127.0.0.1 and are stopped with SIGTERM.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import free_port
from tests.stack import (
    ALERTS_TEST_YML,
    ALERTS_YML,
    PROMETHEUS_YML,
    ROOT,
    alert_rules,
    load_yaml,
    metric_names,
    panel_queries,
    substitute,
)

SCRAPE = "1s"
# $__rate_interval and $__interval: what Grafana computes for the stack's 5 s scrapes (4 of
# them); here it spans 20 scrapes, and the demo's recorded lws stream, replayed every 15 s,
# is always inside it
WINDOW = "20s"
RANGE = "1m"  # $__range
READY_TIMEOUT_S = 20.0
# Generous: the demo resolves its first idle suspect about 16 s after it starts, and two shared
# cores under parallel test load can slow scrapes down. A guard against hanging, not a measure.
DATA_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tool(name: str) -> str:
    path = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
    if path is None:
        pytest.fail(f"{name} not found: apt-get install prometheus (scripts/system-deps)")
    return path


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_tool("promtool"), *args], capture_output=True, text=True, timeout=60, check=False
    )


def _adapted_config(target: str, rule_file: Path) -> dict[str, Any]:
    """deploy/prometheus.yml for this test: same job and path, local target and rule file."""
    config: dict[str, Any] = load_yaml(PROMETHEUS_YML)
    config["global"]["scrape_interval"] = SCRAPE
    config["global"]["evaluation_interval"] = SCRAPE
    config["rule_files"] = [str(rule_file)]
    jobs = [job for job in config["scrape_configs"] if job["job_name"] == "lwsobs"]
    assert len(jobs) == 1, "deploy/prometheus.yml has no job lwsobs"
    config["scrape_configs"] = jobs
    jobs[0]["static_configs"] = [{"targets": [target]}]
    return config


# -- promtool --------------------------------------------------------------------------------------


def test_promtool_checks_the_config_with_the_repo_rules(tmp_path: Path) -> None:
    # the compose file mounts alerts.yml where rule_files says; here it is read from the repo
    config = load_yaml(PROMETHEUS_YML)
    config["rule_files"] = [str(ALERTS_YML)]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    done = _promtool("check", "config", str(path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_promtool_checks_the_rules() -> None:
    done = _promtool("check", "rules", str(ALERTS_YML))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in done.stdout


def test_promtool_unit_tests_of_the_rules_pass() -> None:
    done = _promtool("test", "rules", str(ALERTS_TEST_YML))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_promtool_unit_tests_can_fail(tmp_path: Path) -> None:
    """The rule tests are not vacuous: a rule that never fires makes them fail."""
    rules = load_yaml(ALERTS_YML)
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule["expr"] = "vector(1) unless vector(1)"
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(rules))
    shutil.copy(ALERTS_TEST_YML, tmp_path / "alerts.test.yml")
    done = _promtool("test", "rules", str(tmp_path / "alerts.test.yml"))
    assert done.returncode != 0
    for rule in alert_rules():
        assert f"alertname: {rule['alert']}," in done.stdout + done.stderr, rule["alert"]


# -- a real Prometheus scraping a real lwsobs ------------------------------------------------------


@dataclass
class Stack:
    prometheus: str  # base URL
    lwsobs: str

    def api(self, path: str, **params: str) -> Any:
        url = f"{self.prometheus}{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                body = json.load(resp)
        except urllib.error.HTTPError as exc:  # 400 bad_data: the expression did not parse
            body = json.load(exc)
        return body

    def query(self, expr: str) -> dict[str, Any]:
        result = self.api("/api/v1/query", query=expr)
        assert isinstance(result, dict)
        return result


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return int(resp.status)
    except (OSError, urllib.error.URLError):
        return 0


def _wait(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not reached within {timeout_s:.0f} s")
        time.sleep(0.2)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("stack")
    lwsobs_port, prom_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "LWSOBS_"))}
    env["LWSOBS_LOG_LEVEL"] = "WARNING"
    lwsobs_log = (tmp / "lwsobs.log").open("wb")
    # a real UDP port: the demo replays its recorded lws stream through it
    listen = ["--port", str(lwsobs_port), "--udp", f"127.0.0.1:{_free_udp_port()}"]
    lwsobs = subprocess.Popen(
        [sys.executable, "-m", "lwsobs", "serve", "--demo", "--host", "127.0.0.1", *listen],
        env=env,
        stdout=lwsobs_log,
        stderr=subprocess.STDOUT,
    )
    config = _adapted_config(f"127.0.0.1:{lwsobs_port}", ALERTS_YML)
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    prom_log = (tmp / "prometheus.log").open("wb")
    prometheus = subprocess.Popen(
        [
            _tool("prometheus"),
            f"--config.file={tmp / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp / 'data'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
            "--enable-feature=exemplar-storage",
            "--log.level=warn",
        ],
        stdout=prom_log,
        stderr=subprocess.STDOUT,
    )
    try:
        stack = Stack(f"http://127.0.0.1:{prom_port}", f"http://127.0.0.1:{lwsobs_port}")
        _wait(lambda: _get(f"{stack.lwsobs}/healthz") == 200, READY_TIMEOUT_S, "lwsobs up")
        _wait(lambda: _get(f"{stack.prometheus}/-/ready") == 200, READY_TIMEOUT_S, "prometheus")
        yield stack
    finally:
        _stop(prometheus)
        _stop(lwsobs)
        lwsobs_log.close()
        prom_log.close()
    for name in ("lwsobs.log", "prometheus.log"):
        text = (tmp / name).read_text(errors="replace")
        assert "Traceback" not in text, f"{name}:\n{text}"


def _series(stack: Stack, expr: str) -> list[dict[str, Any]] | str:
    """The result of an instant query, or the error text when it failed."""
    body = stack.query(expr)
    if body.get("status") != "success":
        return f"{body.get('errorType')}: {body.get('error')}"
    data = body["data"]
    if data["resultType"] == "scalar":
        return [{"value": data["result"]}]
    result: list[dict[str, Any]] = data["result"]
    return result


def test_every_dashboard_query_returns_series(stack: Stack) -> None:
    queries = panel_queries()
    assert len(queries) >= 20
    exprs = {q: substitute(q.expr, window=WINDOW, range_=RANGE) for q in queries}
    empty: list[str] = []

    def all_have_series() -> bool:
        empty.clear()
        for q, expr in exprs.items():
            got = _series(stack, expr)
            if isinstance(got, str):  # a parse or evaluation error never heals: fail now
                pytest.fail(f"{q}: {expr}\n{got}")
            if not got:
                empty.append(f"{q}: {expr}")
        return not empty

    deadline = time.monotonic() + DATA_TIMEOUT_S
    while not all_have_series():
        if time.monotonic() > deadline:
            pytest.fail("panel queries with no series:\n" + "\n".join(empty))
        time.sleep(1.0)


def test_the_source_variable_lists_sources_and_every_form_of_it_parses(stack: Stack) -> None:
    # label_values(lwsobs_wsi_live, source), as Grafana asks it
    _wait(
        lambda: (
            "lwsobs"
            in stack.api("/api/v1/label/source/values", **{"match[]": "lwsobs_wsi_live"})["data"]
        ),
        DATA_TIMEOUT_S,
        "source label values",
    )
    # one value, several (Grafana's regex form of a multi-value variable), and All
    for value in ("lwsobs", "(lwsobs|lws-demo)", ".*"):
        for q in panel_queries():
            expr = substitute(q.expr, window=WINDOW, range_=RANGE, source=value)
            got = _series(stack, expr)
            assert not isinstance(got, str), f"{q} with source={value}: {expr}\n{got}"
    # a single source really filters: another source's name selects none of lwsobs' wsis
    live = _series(stack, 'sum by (source) (lwsobs_wsi_live{source=~"lwsobs"})')
    assert isinstance(live, list) and [s["metric"] for s in live] == [{"source": "lwsobs"}]
    assert _series(stack, 'lwsobs_wsi_live{source=~"no-such-source"}') == []


def test_alert_rules_load_and_every_metric_they_read_has_series(stack: Stack) -> None:
    expected = {rule["alert"]: rule for rule in alert_rules()}

    def rules_evaluated() -> bool:
        groups = stack.api("/api/v1/rules")["data"]["groups"]
        loaded = {r["name"]: r for g in groups for r in g["rules"] if r["type"] == "alerting"}
        return set(loaded) == set(expected) and all(
            r["health"] != "unknown" for r in loaded.values()
        )

    _wait(rules_evaluated, DATA_TIMEOUT_S, "every alert rule evaluated once")
    groups = stack.api("/api/v1/rules")["data"]["groups"]
    for rule in (r for g in groups for r in g["rules"]):
        assert rule["health"] == "ok", f"{rule['name']}: {rule.get('lastError')}"
        assert rule["query"], rule["name"]
    missing: list[str] = []

    def every_metric_has_series() -> bool:
        missing.clear()
        for name, rule in expected.items():
            for metric in sorted(metric_names(rule["expr"])):
                # a series within the last minute (a departed lws source's zero series ends)
                got = _series(stack, f'count(last_over_time({{__name__="{metric}"}}[1m]))')
                if not got:
                    missing.append(f"{name}: {metric}")
        return not missing

    deadline = time.monotonic() + DATA_TIMEOUT_S
    while not every_metric_has_series():
        if time.monotonic() > deadline:
            pytest.fail("metrics read by alert rules with no series:\n" + "\n".join(missing))
        time.sleep(1.0)


def test_exemplars_with_trace_ids_are_stored(stack: Stack) -> None:
    """OpenMetrics was negotiated and exemplar storage is on: the dashboards' trace links work."""
    found: list[dict[str, Any]] = []

    def have_exemplars() -> bool:
        now = time.time()
        body = stack.api(
            "/api/v1/query_exemplars",
            query="lwsobs_transaction_duration_seconds_bucket",
            start=str(now - 120),
            end=str(now),
        )
        found[:] = [ex for series in body.get("data") or [] for ex in series["exemplars"]]
        return bool(found)

    _wait(have_exemplars, DATA_TIMEOUT_S, "exemplars of lwsobs_transaction_duration_seconds")
    assert all(re.fullmatch(r"[0-9a-f]{32}", ex["labels"]["trace_id"]) for ex in found)
    scraped = _series(stack, 'up{job="lwsobs"}')
    assert isinstance(scraped, list) and scraped[0]["value"][1] == "1"


def test_the_adapted_config_keeps_the_repo_job(tmp_path: Path) -> None:
    config = _adapted_config("127.0.0.1:1", ALERTS_YML)
    original = load_yaml(PROMETHEUS_YML)
    job = next(j for j in original["scrape_configs"] if j["job_name"] == "lwsobs")
    assert config["scrape_configs"][0]["metrics_path"] == job["metrics_path"]
    assert Path(config["rule_files"][0]).resolve() == (ROOT / "deploy" / "alerts.yml").resolve()
