"""The compose deployment's files parse and hold together, checked without a Docker engine.

The compose file against the Compose Specification's JSON schema, the Dockerfile through
Docker's own parser, every alert and panel expression through a PromQL parser, and the
references between them (mounts, scrape targets, data sources, labels) by hand.
tests/deploy/test_compose_node.py runs a node the way the compose file does.
"""

from __future__ import annotations

import fnmatch
import importlib.resources
import json
import re
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from node.base.config import parse_address
from tests.deploy import deployment as d

ONE_SHOT = "redis-cluster-create"
REDIS_SERVICES = [f"redis-{i}" for i in range(1, 7)]
SEVERITIES = {"critical", "warning", "info"}
# Rate-like functions read counters; the others only make sense on gauges.
COUNTER_FUNCTIONS = {"rate", "irate", "increase", "resets"}
GAUGE_FUNCTIONS = {"deriv", "delta", "idelta", "predict_linear", "changes"}
COUNTER_SUFFIXES = ("_total", "_bucket", "_count", "_sum")
# What the dashboard must show (issue 6): every family the nodes export for these areas.
DASHBOARD_FAMILIES = {
    "counters_http_requests_total",  # throughput by route, errors by status, per tenant
    "counters_http_request_duration_seconds_bucket",  # latency percentiles
    "counters_operations_total",
    "counters_idempotency_hits_total",
    "counters_rate_limited_total",
    "counters_quorum_failures_total",
    "counters_replication_frames_total",
    "counters_replication_frame_seconds_bucket",
    "counters_peer_last_heard_seconds",
    "counters_gossip_rounds_total",
    "counters_divergent_shards_total",
    "counters_repaired_keys_total",
    "counters_pending_handoffs",
    "counters_persistence_backlog",
    "counters_persistence_flush_seconds_bucket",
    "counters_persistence_flush_failures_total",
    "counters_history_lag_seconds",
    "counters_history_pending",
    "counters_ring_epoch",
    "counters_ring_checksum",
    "counters_ring_members",
    "counters_store_counters",
    "counters_node_ready",
    # the change feed (issue 14): published, sink lag and backlog, streams, dropped consumers
    "counters_events_published_total",
    "counters_events_sink_lag_seconds",
    "counters_events_sink_backlog",
    "counters_events_streams",
    "counters_events_consumers_dropped_total",
    "counters_events_stream_lag_seconds_bucket",
}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return d.compose()


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return dict(compose["services"])


@pytest.fixture(scope="module")
def variables() -> dict[str, str]:
    return d.env_example()


def _bind_mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Container path -> host path of the service's bind mounts (short syntax)."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith((".", "/")):
            mounts[target] = (d.COMPOSE_DIR / source).resolve()
    return mounts


def _host_path(service: dict[str, Any], container_path: str) -> Path | None:
    """Where a path inside the service's container comes from on this side, if mounted."""
    for target, source in _bind_mounts(service).items():
        if container_path == target:
            return source
        if container_path.startswith(target.rstrip("/") + "/"):
            return source / container_path[len(target.rstrip("/")) + 1 :]
    return None


# -- compose/docker-compose.yml ---------------------------------------------------------------


def test_compose_file_follows_the_compose_specification(compose: dict[str, Any]):
    vendor = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    schema = json.loads((vendor / "compose-spec.json").read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(compose)
    ]
    assert not errors, "\n".join(errors)


def test_env_example_sets_every_variable_the_compose_file_requires(variables: dict[str, str]):
    text = d.COMPOSE_FILE.read_text()
    missing = d.required_variables(text) - variables.keys()
    assert not missing, f"compose/.env.example lacks {sorted(missing)}"
    d.interpolate(text, variables)  # raises on a ${NAME:?} left empty
    for secret in ("COUNTERS_JWT_SECRET", "COUNTERS_CLUSTER_SECRET"):
        assert len(variables[secret]) >= 32, f"{secret}: HS256 wants 32 bytes or more"
    assert "compose/.env" in (d.REPO / ".gitignore").read_text().split(), (
        "secrets must stay out of git"
    )


def test_every_service_has_a_health_check_but_the_one_shot_step(services: dict[str, Any]):
    without = {name for name, service in services.items() if "healthcheck" not in service}
    assert without == {ONE_SHOT}
    for name, service in services.items():
        if name == ONE_SHOT:
            assert service.get("restart") == "no", "a one-shot step must not be restarted"
            continue
        check = service["healthcheck"]
        assert not check.get("disable"), name
        assert check["test"][0] in ("CMD", "CMD-SHELL"), f"{name}: {check['test']}"
        assert {"interval", "timeout", "retries"} <= check.keys(), name


def test_dependencies_wait_for_health_or_completion(services: dict[str, Any]):
    for name, service in services.items():
        for dependency, condition in (service.get("depends_on") or {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            wanted = condition["condition"]
            if wanted == "service_healthy":
                assert "healthcheck" in services[dependency], f"{dependency} has no health check"
            if wanted == "service_completed_successfully":
                assert services[dependency].get("restart") == "no", dependency


def test_nodes_build_from_the_dockerfile_and_wait_for_their_stores(services: dict[str, Any]):
    for name in d.NODE_SERVICES:
        node = services[name]
        context = (d.COMPOSE_DIR / node["build"]["context"]).resolve()
        assert context == d.REPO, f"{name} must build from the repository root"
        assert (context / node["build"]["dockerfile"]).resolve() == d.DOCKERFILE
        conditions = {dep: c["condition"] for dep, c in node["depends_on"].items()}
        assert conditions[ONE_SHOT] == "service_completed_successfully", name
        assert conditions["postgres"] == "service_healthy", name
    create = services[ONE_SHOT]
    assert {dep: c["condition"] for dep, c in create["depends_on"].items()} == {
        redis: "service_healthy" for redis in REDIS_SERVICES
    }
    script = " ".join(create["command"])
    assert "--cluster create" in script and "--cluster-replicas 1" in script
    assert "--cluster-yes" in script
    assert all(redis in script for redis in REDIS_SERVICES), "every Redis node joins"
    for redis in REDIS_SERVICES:
        assert services[redis]["command"][-2:] == ["--cluster-announce-hostname", redis]
        config = _host_path(services[redis], services[redis]["command"][1])
        assert config is not None and config.is_file(), f"{redis}: its redis.conf is not mounted"
        assert "cluster-enabled yes" in config.read_text()


def test_node_environments_name_each_other_and_the_stores(
    services: dict[str, Any], variables: dict[str, str]
):
    advertised = []
    for index, name in enumerate(d.NODE_SERVICES):
        env = d.service_environment(services[name], variables)
        assert env["COUNTERS_NODE_ID"] == name
        assert env["COUNTERS_ADVERTISE"] == f"{name}:7000"
        advertised.append(env["COUNTERS_ADVERTISE"])
        listen_port = parse_address(env["COUNTERS_LISTEN"])[1]
        assert services[name]["ports"] == [f"{7000 + index}:{listen_port}"]
        [image_check] = d.image_instructions("HEALTHCHECK")
        assert services[name]["healthcheck"]["test"] == list(image_check.value)
        redis_host = re.fullmatch(r"redis://([\w-]+):6379", env["COUNTERS_REDIS_CLUSTER_URL"])
        assert redis_host and redis_host[1] in REDIS_SERVICES
        assert re.fullmatch(
            r"postgresql://counters:[^@]+@postgres:5432/counters", env["COUNTERS_POSTGRES_URL"]
        )
        assert (
            env["COUNTERS_POSTGRES_URL"].split(":")[2].split("@")[0]
            == variables["POSTGRES_PASSWORD"]
        )
        assert env["COUNTERS_JWT_SECRET"] == variables["COUNTERS_JWT_SECRET"]
        assert env["COUNTERS_CLUSTER_SECRET"] == variables["COUNTERS_CLUSTER_SECRET"]
        assert env["COUNTERS_OTLP_ENDPOINT"] == "http://jaeger:4318"
        assert env["COUNTERS_DATA_DIR"] in {v.split(":")[1] for v in services[name]["volumes"]}
    for name in d.NODE_SERVICES:
        env = d.service_environment(services[name], variables)
        assert env["COUNTERS_SEEDS"].split(",") == advertised


def test_bind_mounts_exist(services: dict[str, Any]):
    for name, service in services.items():
        for target, source in _bind_mounts(service).items():
            assert source.exists(), f"{name}: {source} (mounted at {target}) does not exist"


# -- compose/Dockerfile -------------------------------------------------------------------------


def test_dockerfile_runs_counters_node_as_a_non_root_user_with_a_health_check():
    final = d.dockerfile_stages()[-1]
    assert final[0].value[0] == "python:3.11-slim"
    users = d.image_instructions("USER")
    assert users and users[-1].value[0] not in ("root", "0"), "the node must not run as root"
    [health] = d.image_instructions("HEALTHCHECK")
    assert health.value[0] == "CMD" and health.value[1] == "python"
    assert re.search(r"/(readyz|healthz)\b", " ".join(health.value))
    command = d.image_command()
    assert command == ["counters", "node"]
    pyproject = tomllib.loads((d.REPO / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"][command[0]] == "node.cli:main"


def test_dockerfile_copies_only_what_exists_and_the_dockerignore_keeps():
    ignore = d.COMPOSE_DIR / "Dockerfile.dockerignore"
    patterns = [
        line.strip()
        for line in ignore.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def sent(path: str) -> bool:  # Docker's rule: the last matching pattern wins
        keep = True
        for pattern in patterns:
            negated = pattern.startswith("!")
            if fnmatch.fnmatch(path, pattern.lstrip("!").rstrip("/")):
                keep = negated
        return keep

    sources = [
        source
        for stage in d.dockerfile_stages()
        for command in stage
        if command.cmd in ("COPY", "ADD")
        and not any(f.startswith("--from=") for f in command.flags)
        for source in command.value[:-1]
    ]
    assert sources
    for source in sources:
        assert (d.REPO / source).exists(), f"COPY {source}: no such file in the build context"
        assert sent(source), f"COPY {source}: Dockerfile.dockerignore leaves it out of the context"
    assert not sent(".venv") and not sent(".git"), "the context must not carry the venv or history"


# -- Prometheus ---------------------------------------------------------------------------------


def test_prometheus_scrapes_every_node_and_loads_its_rules(
    services: dict[str, Any], variables: dict[str, str]
):
    config = d.load_yaml(d.PROMETHEUS_CONFIG)
    [job] = [job for job in config["scrape_configs"] if job["job_name"] == "counters"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    targets = [t for static in job["static_configs"] for t in static["targets"]]
    nodes = [
        d.service_environment(services[n], variables)["COUNTERS_ADVERTISE"] for n in d.NODE_SERVICES
    ]
    assert sorted(targets) == sorted(nodes)

    prometheus = services["prometheus"]
    [config_flag] = [f for f in prometheus["command"] if f.startswith("--config.file=")]
    container_config = config_flag.partition("=")[2]
    assert _host_path(prometheus, container_config) == d.PROMETHEUS_CONFIG
    assert d.rule_files(), "no rule_files in prometheus.yml"
    for path in d.rule_files():
        assert path.is_file(), f"rule file {path} does not exist"
        in_container = str(
            Path(container_config).parent / path.relative_to(d.PROMETHEUS_CONFIG.parent)
        )
        assert _host_path(prometheus, in_container) == path, (
            f"{path.name} is not mounted at {in_container}"
        )


def test_every_alert_is_complete_and_names_labels_its_result_has():
    rules = d.alert_rules()
    names = [rule.get("alert") for rule in rules]
    assert all(names) and len(set(names)) == len(names), f"unnamed or repeated alerts: {names}"
    for rule in rules:
        where = f"alert {rule['alert']}"
        assert {"expr", "for", "labels", "annotations"} <= rule.keys(), where
        assert re.fullmatch(r"(\d+[smhd])+", rule["for"]), f"{where}: for {rule['for']!r}"
        assert rule["labels"].get("severity") in SEVERITIES, where
        assert {"summary", "description"} <= rule["annotations"].keys(), where
        result = d.output_labels(d.promql.parse(rule["expr"]))
        for text in rule["annotations"].values():
            assert text.count("{{") == text.count("}}"), f"{where}: unbalanced template {text!r}"
            if result is not None:
                unknown = d.template_labels(text) - result
                assert not unknown, f"{where}: the result has no label {sorted(unknown)}"


def test_every_alert_has_a_promtool_case_that_fires_it():
    """compose/prometheus/alerts_test.yml runs with `promtool test rules` (not here: no
    promtool); this keeps it in step with the rules."""
    cases = d.load_yaml(d.PROMETHEUS_CONFIG.parent / "alerts_test.yml")
    assert [d.PROMETHEUS_CONFIG.parent / name for name in cases["rule_files"]] == d.rule_files()
    fired = {
        check["alertname"]
        for case in cases["tests"]
        for check in case.get("alert_rule_test", [])
        if check["exp_alerts"]
    }
    assert fired == {rule["alert"] for rule in d.alert_rules()}
    for case in cases["tests"]:
        for series in case["input_series"]:
            d.promql.parse(series["series"])


def test_alerts_cover_what_an_operator_must_hear_about():
    metrics = set().union(*(d.metric_names(d.promql.parse(r["expr"])) for r in d.alert_rules()))
    assert {
        "up",
        "counters_quorum_failures_total",
        "counters_http_requests_total",
        "counters_http_request_duration_seconds_bucket",
        "counters_persistence_backlog",
        "counters_persistence_flush_failures_total",
        "counters_history_lag_seconds",
        "counters_ring_checksum",
        "counters_gossip_rounds_total",
        "counters_peer_last_heard_seconds",
    } <= metrics


# -- every PromQL expression --------------------------------------------------------------------


@pytest.mark.parametrize("query", d.queries(), ids=lambda q: q.where)
def test_expression_parses_and_reads_metrics_the_right_way(query: d.Query):
    try:
        expr = query.parsed()
    except ValueError as error:
        raise AssertionError(f"{query.where}: {error}\n  {query.expr}") from None
    foreign = {n for n in d.metric_names(expr) if not n.startswith("counters_")}
    assert foreign <= d.PROMETHEUS_OWN, f"{query.where}: no node exports {sorted(foreign)}"
    for call in d.calls(expr):
        read = {s.name for s in d.selectors(call)}
        if call.func.name in COUNTER_FUNCTIONS:
            bad = {n for n in read if not n.endswith(COUNTER_SUFFIXES)}
            assert not bad, f"{query.where}: {call.func.name}() over gauges {bad}"
        if call.func.name in GAUGE_FUNCTIONS:
            bad = {n for n in read if n.endswith(COUNTER_SUFFIXES)}
            assert not bad, f"{query.where}: {call.func.name}() over counters {bad}"
        if call.func.name == "histogram_quantile":
            assert all(n.endswith("_bucket") for n in read), f"{query.where}: not a histogram"
    for selector in d.selectors(expr):
        for matcher in selector.matchers.matchers:
            if matcher.name == "job" and matcher.op == d.promql.MatchOp.Equal:
                jobs = {j["job_name"] for j in d.load_yaml(d.PROMETHEUS_CONFIG)["scrape_configs"]}
                assert matcher.value in jobs, f"{query.where}: no scrape job {matcher.value!r}"
    result = d.output_labels(expr)
    if result is not None:
        unknown = d.template_labels(query.legend) - result
        assert not unknown, f"{query.where}: legend names {sorted(unknown)}, not in the result"


# -- Grafana ------------------------------------------------------------------------------------


def _provisioning(kind: str) -> list[dict[str, Any]]:
    folder = d.GRAFANA_DIR / "provisioning" / kind
    files = sorted(folder.glob("*.yml")) + sorted(folder.glob("*.yaml"))
    assert files, f"no {kind} provisioning files"
    return [d.load_yaml(path) for path in files]


def test_grafana_provisioning_points_at_prometheus_and_the_dashboards(services: dict[str, Any]):
    grafana = services["grafana"]
    assert _host_path(grafana, "/etc/grafana/provisioning") == d.GRAFANA_DIR / "provisioning"
    sources = [s for f in _provisioning("datasources") for s in f["datasources"]]
    [prometheus] = [s for s in sources if s["type"] == "prometheus"]
    assert prometheus["url"] == "http://prometheus:9090" and "prometheus" in services
    assert "9090:9090" in services["prometheus"]["ports"]
    [jaeger] = [s for s in sources if s["type"] == "jaeger"]
    assert jaeger["url"] == "http://jaeger:16686" and "16686:16686" in services["jaeger"]["ports"]

    providers = [p for f in _provisioning("dashboards") for p in f["providers"]]
    assert providers
    for provider in providers:
        folder = _host_path(grafana, provider["options"]["path"])
        assert folder is not None and folder.is_dir(), f"provider {provider['name']}: not mounted"
        assert d.dashboards() and sorted(folder.glob("*.json")) == d.dashboards()
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert _host_path(grafana, home) in d.dashboards()

    uids = {s["uid"] for s in sources} | {"-- Grafana --"}
    for path in d.dashboards():
        text = path.read_text()
        used = set(re.findall(r'"uid":\s*"([^"]+)"', text)) - {json.loads(text)["uid"]}
        assert used <= uids, f"{path.name} names data sources {sorted(used - uids)}"


@pytest.mark.parametrize("path", d.dashboards(), ids=lambda p: p.name)
def test_dashboard_panels_have_targets_and_fit_the_grid(path: Path):
    dashboard = json.loads(path.read_text())
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    panels = list(d.dashboard_panels(dashboard))
    ids = [panel["id"] for panel in panels]
    assert len(set(ids)) == len(ids), "panel ids repeat"
    defined = {v["name"] for v in dashboard["templating"]["list"]} | set(d.GRAFANA_BUILTINS)
    taken: set[tuple[int, int]] = set()
    for panel in panels:
        where = f"panel {panel.get('title')!r}"
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24, f"{where} is off the grid"
        cells = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & taken, f"{where} overlaps another panel"
        taken |= cells
        if panel["type"] == "row":
            continue
        assert panel.get("targets"), f"{where} has no targets"
        assert panel["datasource"]["uid"] == "prometheus", where
        refs = [t["refId"] for t in panel["targets"]]
        assert len(set(refs)) == len(refs), f"{where}: refIds repeat"
        for target in panel["targets"]:
            assert target["expr"].strip(), f"{where} target {target['refId']} is empty"
            used = {a or b for a, b in re.findall(r"\$\{(\w+)[^}]*\}|\$(\w+)", target["expr"])}
            assert used <= defined, f"{where}: undefined variables {sorted(used - defined)}"


def test_dashboard_shows_every_area_of_the_issue():
    used: set[str] = set()
    for query in d.queries():
        if not query.where.startswith("alert "):
            used |= d.metric_names(query.parsed())
    missing = DASHBOARD_FAMILIES - used
    assert not missing, f"no panel shows {sorted(missing)}"
