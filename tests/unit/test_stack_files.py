"""The docker-compose stack's files agree with the Compose Specification, with the repository,
with each other, and with lwsobs' own configuration (no Docker engine needed).

What runs for real is in tests/integration/test_stack_prometheus.py (Prometheus, promtool) and
tests/integration/test_stack_demo_scripts.py (the lws-demo and traffic scripts).
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest

from lwsobs.app.cli import _parser
from lwsobs.app.service import build_app
from lwsobs.config import Config, parse_udp
from lwsobs.observer import Observer
from tests.stack import (
    ALERTS_TEST_YML,
    ALERTS_YML,
    COMPOSE,
    COMPOSE_SCHEMA,
    DASHBOARDS,
    GRAFANA_PROVISIONING,
    PROMETHEUS_YML,
    ROOT,
    alert_rules,
    compose,
    dashboards,
    load_yaml,
    panel_queries,
    panels,
)

SERVICES = ("lwsobs", "lws-demo", "traffic", "prometheus", "grafana", "jaeger")


def service(name: str) -> dict[str, Any]:
    svc: dict[str, Any] = compose()["services"][name]
    return svc


def env(name: str) -> dict[str, str]:
    raw = service(name).get("environment", {})
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    return {k: str(v) for k, v in raw.items()}


def bind_mounts(name: str) -> dict[str, str]:
    """{container path: host path} of a service's bind mounts (short syntax)."""
    mounts = {}
    for volume in service(name).get("volumes", []):
        source, target = volume.split(":")[:2]
        mounts[target] = source
    return mounts


def published(name: str) -> set[tuple[int, int, str]]:
    """(host port, container port, protocol) of every published port."""
    ports = set()
    for spec in service(name).get("ports", []):
        proto = "tcp"
        if "/" in spec:
            spec, proto = spec.split("/")
        host, container = spec.rsplit(":", 1)
        ports.add((int(host.rsplit(":", 1)[-1]), int(container), proto))
    return ports


def dockerfile(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    lines: list[tuple[str, str]] = []
    text = re.sub(r"\\\n", " ", path.read_text())
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            lines.append((word.upper(), rest.strip()))
    return lines


def lwsobs_command() -> Any:
    return _parser().parse_args(service("lwsobs")["command"])


# -- compose: schema and repository ----------------------------------------------------------------


def test_compose_validates_against_the_compose_specification() -> None:
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    validator = jsonschema.Draft7Validator(schema)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(compose())]
    assert errors == []
    # the validator is strict enough to notice a misspelt key
    broken = compose()
    broken["services"]["lwsobs"]["portz"] = ["1:1"]
    assert list(validator.iter_errors(broken))


def test_compose_has_the_stack() -> None:
    assert set(compose()["services"]) == set(SERVICES)


def test_everything_compose_builds_from_or_mounts_exists() -> None:
    for name, svc in compose()["services"].items():
        build = svc.get("build")
        if build:
            context = (COMPOSE.parent / build["context"]).resolve()
            assert context.is_dir(), name
            assert (context / build.get("dockerfile", "Dockerfile")).is_file(), name
        for target, source in bind_mounts(name).items():
            assert source.startswith("./"), f"{name}: {source} is not a repository path"
            assert (COMPOSE.parent / source).exists(), f"{name}: {source} for {target}"
        assert "image" in svc or build, name


def _ignored(path: str, patterns: list[str]) -> bool:
    parts = Path(path).parts
    for pattern in patterns:
        for i in range(1, len(parts) + 1):
            prefix = "/".join(parts[:i])
            if fnmatch.fnmatch(prefix, pattern) or fnmatch.fnmatch(prefix, f"**/{pattern}"):
                return True
            if pattern.startswith("**/") and fnmatch.fnmatch(parts[i - 1], pattern[3:]):
                return True
    return False


def test_every_file_a_dockerfile_copies_is_in_the_build_context() -> None:
    ignore = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for name, svc in compose()["services"].items():
        if "build" not in svc:
            continue
        context = (COMPOSE.parent / svc["build"]["context"]).resolve()
        for word, args in dockerfile(context / svc["build"]["dockerfile"]):
            if word != "COPY" or args.startswith("--from"):
                continue
            *sources, _ = shlex.split(args)
            for source in sources:
                assert (context / source).exists(), f"{name}: COPY {source}"
                assert not _ignored(source, ignore), f"{name}: COPY {source} is .dockerignored"


# -- the lwsobs service ----------------------------------------------------------------------------


def test_the_lwsobs_image_runs_the_compose_command_as_a_non_root_user() -> None:
    instructions = dockerfile(ROOT / "Dockerfile")
    assert instructions[0][0] == "FROM" and "python:3.1" in instructions[0][1]
    assert "slim" in instructions[0][1]
    users = [args for word, args in instructions if word == "USER"]
    assert users and users[-1] not in ("0", "root")
    cmd = next(json.loads(args) for word, args in reversed(instructions) if word == "CMD")
    assert cmd == service("lwsobs")["command"]
    entry = next(json.loads(args) for word, args in instructions if word == "ENTRYPOINT")
    assert entry == ["lwsobs"]
    args = lwsobs_command()
    assert args.command == "serve" and args.host == "0.0.0.0"
    exposed = " ".join(args for word, args in instructions if word == "EXPOSE").split()
    udp = parse_udp(args.udp, "--udp")
    assert udp is not None
    assert set(exposed) == {f"{args.port}/tcp", f"{udp.port}/udp"}


def test_the_healthcheck_asks_healthz_without_curl() -> None:
    instructions = dockerfile(ROOT / "Dockerfile")
    check = next(args for word, args in instructions if word == "HEALTHCHECK")
    assert "curl" not in check and "urllib" in check
    assert f"127.0.0.1:{lwsobs_command().port}/healthz" in check
    assert "/healthz" in _routes()


def _routes() -> set[str]:
    observer = Observer(Config(spans=False, udp=None))
    try:
        app = build_app(observer, ingest=False)
        return {r.resource.canonical for r in app.router.routes() if r.resource is not None}
    finally:
        observer.close()


def test_ports_agree_with_the_lwsobs_command() -> None:
    args = lwsobs_command()
    udp = parse_udp(args.udp, "--udp")
    assert udp is not None and udp.host == "0.0.0.0"
    assert (args.port, args.port, "tcp") in published("lwsobs")
    assert (udp.port, udp.port, "udp") in published("lwsobs")


def test_the_environment_is_made_of_settings_lwsobs_reads() -> None:
    variables = env("lwsobs")
    Config.from_env(variables)  # every value is accepted
    sources = "\n".join(p.read_text() for p in (ROOT / "lwsobs").rglob("*.py"))
    readme = (ROOT / "README.md").read_text()  # OTEL_SERVICE_NAME: read by the OTel SDK
    for key in variables:
        read = f'"{key}"' in sources or f"'{key}'" in sources or f"`{key}`" in readme
        assert read, f"lwsobs never reads {key}"
    config = Config.from_env(variables)
    assert config.otlp


def test_spans_go_to_jaeger_over_otlp_http() -> None:
    endpoint = urlsplit(env("lwsobs")["OTEL_EXPORTER_OTLP_ENDPOINT"])
    assert endpoint.scheme == "http"
    assert endpoint.hostname == "jaeger" and endpoint.port == 4318
    jaeger = service("jaeger")
    assert re.fullmatch(r"jaegertracing/jaeger:2\.\d+\.\d+", jaeger["image"])
    assert {(4317, 4317, "tcp"), (4318, 4318, "tcp"), (16686, 16686, "tcp")} <= published("jaeger")
    assert env("jaeger")["JAEGER_LISTEN_HOST"] == "0.0.0.0"


# -- Prometheus ------------------------------------------------------------------------------------


def test_prometheus_scrapes_the_lwsobs_service_and_loads_the_rules() -> None:
    config = load_yaml(PROMETHEUS_YML)
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "lwsobs")
    assert job["metrics_path"] == "/metrics" and "/metrics" in _routes()
    targets = [t for c in job["static_configs"] for t in c["targets"]]
    assert targets == [f"lwsobs:{lwsobs_command().port}"]
    command = service("prometheus")["command"]
    assert "--enable-feature=exemplar-storage" in command
    config_path = next(c.split("=", 1)[1] for c in command if c.startswith("--config.file="))
    mounts = bind_mounts("prometheus")
    assert (ROOT / mounts[config_path]).resolve() == PROMETHEUS_YML.resolve()
    assert [(ROOT / mounts[f]).resolve() for f in config["rule_files"]] == [ALERTS_YML.resolve()]
    assert service("prometheus")["image"].startswith("prom/prometheus:v2.")


# -- the lws demo and the traffic generator --------------------------------------------------------


def test_lws_producers_send_to_the_lwsobs_udp_port() -> None:
    udp = parse_udp(lwsobs_command().udp, "--udp")
    assert udp is not None
    for name in ("lws-demo", "traffic"):
        assert env(name)["LWSOBS_ENDPOINT"] == f"udp://lwsobs:{udp.port}", name
    assert env("lws-demo")["LWSOBS_SOURCE"] == "lws-demo"


def test_the_traffic_generator_reaches_lws_demo_and_lwsobs() -> None:
    traffic = env("traffic")
    assert service("traffic")["network_mode"] == "service:lws-demo"  # lws-demo binds loopback
    demo = env("lws-demo")
    assert traffic["TRAFFIC_LWS_HTTP"] == f"127.0.0.1:{demo['LWS_DEMO_HTTP_PORT']}"
    assert traffic["TRAFFIC_LWS_TLS"] == f"127.0.0.1:{demo['LWS_DEMO_TLS_PORT']}"
    assert traffic["TRAFFIC_LWSOBS"] == f"lwsobs:{lwsobs_command().port}"
    health = " ".join(service("lws-demo")["healthcheck"]["test"])
    assert f"/dev/tcp/127.0.0.1/{demo['LWS_DEMO_HTTP_PORT']}" in health
    # the idle connections outlast lwsobs' idle limit, so they become suspects
    limits = Config.from_env(env("lwsobs")).idle_limits
    hold = float(traffic["TRAFFIC_IDLE_HOLD_SECONDS"])
    assert any(limit is not None and limit < hold for limit in limits.values())


def test_the_lws_demo_image_builds_the_shim_and_the_app() -> None:
    instructions = dockerfile(ROOT / "deploy" / "lws-demo" / "Dockerfile")
    assert instructions[0] == ("FROM", "debian:bookworm-slim")
    runs = " ".join(args for word, args in instructions if word == "RUN")
    for needed in ("libwebsockets-dev", "gcc", "make -C shim", "make -C tests/lws", "openssl req"):
        assert needed in runs, needed
    users = [args for word, args in instructions if word == "USER"]
    assert users and users[-1] not in ("0", "root")


# -- Grafana ---------------------------------------------------------------------------------------


def _datasources() -> list[dict[str, Any]]:
    found = []
    for path in (GRAFANA_PROVISIONING / "datasources").glob("*.yml"):
        found.extend(load_yaml(path)["datasources"])
    return found


def test_grafana_is_provisioned_with_anonymous_viewers() -> None:
    variables = env("grafana")
    assert variables["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert variables["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    mounts = bind_mounts("grafana")
    assert (ROOT / mounts["/etc/grafana/provisioning"]).resolve() == GRAFANA_PROVISIONING
    providers = load_yaml(GRAFANA_PROVISIONING / "dashboards" / "dashboards.yml")["providers"]
    paths = [p["options"]["path"] for p in providers]
    assert len(paths) == 1 and (ROOT / mounts[paths[0]]).resolve() == DASHBOARDS.resolve()
    home = variables["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(paths[0] + "/")
    assert (DASHBOARDS / home.removeprefix(paths[0] + "/")).is_file()


def test_data_sources_point_at_the_compose_services_and_exemplars_at_jaeger() -> None:
    sources = {ds["uid"]: ds for ds in _datasources()}
    assert {ds["type"] for ds in sources.values()} == {"prometheus", "jaeger"}
    prometheus = next(ds for ds in sources.values() if ds["type"] == "prometheus")
    jaeger = next(ds for ds in sources.values() if ds["type"] == "jaeger")
    assert prometheus["url"] == "http://prometheus:9090"
    assert (9090, 9090, "tcp") in published("prometheus")
    assert jaeger["url"] == "http://jaeger:16686"
    links = prometheus["jsonData"]["exemplarTraceIdDestinations"]
    assert links == [{"name": "trace_id", "datasourceUid": jaeger["uid"]}]


# -- dashboards ------------------------------------------------------------------------------------


def test_every_panel_uses_a_provisioned_data_source() -> None:
    uids = {ds["uid"] for ds in _datasources()}
    for name, dashboard in dashboards().items():
        for panel in panels(dashboard):
            assert panel["datasource"]["uid"] in uids, f"{name}: {panel['title']}"
            for target in panel["targets"]:
                assert target["datasource"]["uid"] in uids, f"{name}: {panel['title']}"
        for variable in dashboard["templating"]["list"]:
            if "datasource" in variable:
                assert variable["datasource"]["uid"] in uids, variable["name"]


def test_every_panel_query_is_filtered_by_the_source_variable() -> None:
    queries = panel_queries()
    assert queries
    for q in queries:
        assert q.expr.strip(), str(q)
        # `$source|` where the metric has no source label (span export, transports)
        assert re.search(r'source=~"\$source\|?"', q.expr), f"{q}: {q.expr}"


def test_the_source_variable_lists_the_sources_with_all_and_multi() -> None:
    for name, dashboard in dashboards().items():
        variables = {v["name"]: v for v in dashboard["templating"]["list"]}
        source = variables["source"]
        query = source["query"]
        text = query["query"] if isinstance(query, dict) else query
        assert text == "label_values(lwsobs_wsi_live, source)", name
        assert source["multi"] and source["includeAll"] and source["allValue"] == ".*"


WANTED = {
    "live wsis by role (stacked)": ("lwsobs_wsi_live", "by (role)"),
    "create rate by role": ("rate(lwsobs_wsi_created_total", "by (role)"),
    "destroy rate by role": ("rate(lwsobs_wsi_destroyed_total", "by (role)"),
    "lifetime percentiles": ("histogram_quantile(0.99", "lwsobs_wsi_lifetime_seconds_bucket"),
    "transactions per wsi": ("lwsobs_wsi_transactions_bucket", "histogram_quantile"),
    "transaction rate by role and code class": ("by (role, code_class)", "lwsobs_transactions"),
    "latency by role": ("lwsobs_transaction_duration_seconds_bucket", "by (le, role)"),
    "leak rate by rule": ("rate(lwsobs_wsi_leaked_total", "by (rule)"),
    "leaked wsis table": ("by (source, role, rule)", "lwsobs_wsi_leaked_total"),
    "live sources": ("lwsobs_ingest_sources", ""),
    "lost events": ("lwsobs_ingest_lost_total", ""),
    "rejected lines": ("lwsobs_ingest_rejected_total", ""),
    "span export health": ("lwsobs_spans_dropped_total", "by (reason)"),
}


@pytest.mark.parametrize("what", sorted(WANTED))
def test_the_wsi_lifecycle_dashboard_has(what: str) -> None:
    dashboard = dashboards()["wsi-lifecycle.json"]
    first, second = WANTED[what]
    exprs = [t["expr"] for p in panels(dashboard) for t in p["targets"]]
    assert any(first in e and second in e for e in exprs), what


def test_lifetime_has_a_heatmap_and_live_wsis_are_stacked() -> None:
    dashboard = dashboards()["wsi-lifecycle.json"]
    by_title = {p["title"]: p for p in panels(dashboard)}
    heatmaps = [p for p in by_title.values() if p["type"] == "heatmap"]
    assert any("lwsobs_wsi_lifetime_seconds_bucket" in p["targets"][0]["expr"] for p in heatmaps)
    assert all(p["targets"][0]["format"] == "heatmap" for p in heatmaps)
    live = by_title["Live wsis by role"]
    assert live["fieldConfig"]["defaults"]["custom"]["stacking"]["mode"] == "normal"


def test_latency_and_lifetime_panels_show_exemplars_and_leaks_link_to_traces() -> None:
    dashboard = dashboards()["wsi-lifecycle.json"]
    exemplar_exprs = [
        t["expr"] for p in panels(dashboard) for t in p["targets"] if t.get("exemplar")
    ]
    assert any("lwsobs_transaction_duration_seconds_bucket" in e for e in exemplar_exprs)
    assert any("lwsobs_wsi_lifetime_seconds_bucket" in e for e in exemplar_exprs)
    table = next(p for p in panels(dashboard) if p["type"] == "table")
    links = table["fieldConfig"]["defaults"]["links"]
    url = links[0]["url"]
    for field in ("source", "role", "rule"):
        assert "${__data.fields." + field + "}" in url
    assert url.startswith("${jaeger_ui}/search?service=lwsobs&")
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    jaeger_ui = urlsplit(variables["jaeger_ui"]["query"])
    assert jaeger_ui.port in {host for host, _, _ in published("jaeger")}


def test_panel_ids_are_unique_and_panels_fit_the_grid() -> None:
    for name, dashboard in dashboards().items():
        nested = [p for row in dashboard["panels"] for p in row.get("panels", [])]
        ids = [p["id"] for p in dashboard["panels"] + nested]
        assert len(ids) == len(set(ids)), name
        for panel in dashboard["panels"]:
            pos = panel["gridPos"]
            assert pos["x"] + pos["w"] <= 24, f"{name}: {panel['title']}"


# -- alert rules -----------------------------------------------------------------------------------


def test_the_required_alerts_exist_and_each_has_firing_and_quiet_test_cases() -> None:
    names = {rule["alert"] for rule in alert_rules()}
    assert {
        "LwsobsWsiLeaked",
        "LwsobsLeakSuspectsGrowing",
        "LwsobsIngestLosingEvents",
        "LwsobsSourceSilent",
        "LwsobsSpanExportFailing",
    } <= names
    tests = load_yaml(ALERTS_TEST_YML)
    assert tests["rule_files"] == [ALERTS_YML.name]
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in tests["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check["exp_alerts"] else quiet).add(check["alertname"])
    assert firing == names
    assert quiet == names
