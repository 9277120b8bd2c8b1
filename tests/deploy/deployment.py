"""Reading the compose deployment the way Docker, Prometheus and Grafana would, without them.

compose/docker-compose.yml with its variables filled in as `docker compose` fills them (from
compose/.env.example here), the image's command and environment from compose/Dockerfile, and
every PromQL expression of the alert rules and the dashboard, parsed by promql-parser (a port
of Prometheus's own parser), with the metric names and result labels each one has.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dockerfile
import promql_parser as promql
import yaml
from prometheus_client.metrics_core import Metric

REPO = Path(__file__).resolve().parents[2]
COMPOSE_DIR = REPO / "compose"
COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yml"
DOCKERFILE = COMPOSE_DIR / "Dockerfile"
ENV_EXAMPLE = COMPOSE_DIR / ".env.example"
PROMETHEUS_CONFIG = COMPOSE_DIR / "prometheus" / "prometheus.yml"
GRAFANA_DIR = COMPOSE_DIR / "grafana"
NODE_SERVICES = ("node1", "node2", "node3")

# Grafana's own variables, replaced by a plausible value before parsing; a dashboard's own
# template variables (`$node`) become ".*", which every regex matcher they appear in accepts.
GRAFANA_BUILTINS = {"__rate_interval": "1m", "__interval": "1m", "__range": "1h"}
# Series Prometheus makes itself; every other name a query reads must come from the nodes.
PROMETHEUS_OWN = {"up", "ALERTS"}


def load_yaml(path: Path) -> Any:
    with path.open() as stream:
        return yaml.safe_load(stream)


def compose() -> dict[str, Any]:
    document: dict[str, Any] = load_yaml(COMPOSE_FILE)
    return document


def env_example() -> dict[str, str]:
    """KEY=VALUE lines of compose/.env.example; comments and blank lines skipped."""
    variables = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, sep, value = line.partition("=")
            assert sep, f"{ENV_EXAMPLE.name}: not KEY=VALUE: {line!r}"
            variables[name.strip()] = value.strip()
    return variables


_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_]\w*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_]\w*))"
)


class MissingVariable(LookupError):
    """A ${NAME:?message} whose NAME is unset or empty."""


def interpolate(text: str, variables: Mapping[str, str]) -> str:
    """Compose's interpolation: $$, $NAME, ${NAME}, ${NAME:-default}, ${NAME-default},
    ${NAME:?error} and ${NAME?error}."""

    def replace(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name = match["braced"] or match["bare"]
        value = variables.get(name)
        op, arg = match["op"], match["arg"] or ""
        unset = value is None or (op is not None and op.startswith(":") and value == "")
        if op in (":-", "-") and unset:
            return arg
        if op in (":?", "?") and unset:
            raise MissingVariable(f"{name}: {arg}")
        return value or ""

    return _VARIABLE.sub(replace, text)


def required_variables(text: str) -> set[str]:
    """Names the text requires with ${NAME:?...} or ${NAME?...}."""
    return {m["braced"] for m in _VARIABLE.finditer(text) if m["op"] in (":?", "?") and m["braced"]}


def service_environment(service: Mapping[str, Any], variables: Mapping[str, str]) -> dict[str, str]:
    """A service's `environment`, as a mapping or a list of NAME=VALUE, interpolated."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.partition("=")[::2] for item in raw)
    return {name: interpolate(str(value), variables) for name, value in raw.items()}


# -- compose/Dockerfile ---------------------------------------------------------------------


def dockerfile_stages() -> list[list[dockerfile.Command]]:
    """Instructions of each build stage, in order; the last stage is the image."""
    stages: list[list[dockerfile.Command]] = []
    for command in dockerfile.parse_file(str(DOCKERFILE)):
        if command.cmd == "FROM":
            stages.append([])
        assert stages, "a Dockerfile starts with FROM"
        stages[-1].append(command)
    return stages


def image_instructions(name: str) -> list[dockerfile.Command]:
    return [command for command in dockerfile_stages()[-1] if command.cmd == name]


def image_environment() -> dict[str, str]:
    """ENV of the final stage (ENV NAME=VALUE ...; the parser gives name, value pairs)."""
    environment = {}
    for command in image_instructions("ENV"):
        pairs = command.value
        environment.update(zip(pairs[::2], pairs[1::2], strict=True))
    return environment


def image_command() -> list[str]:
    """The image's CMD, which must be in exec (JSON) form to run without a shell."""
    [command] = image_instructions("CMD")
    assert command.json, 'CMD must use the exec form: CMD ["counters", "node"]'
    assert not image_instructions("ENTRYPOINT"), "an ENTRYPOINT would change what runs"
    return list(command.value)


# -- PromQL ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Query:
    where: str  # "alert CountersNodeDown" or "panel 'Request latency' target A"
    expr: str  # as written in the file
    legend: str = ""  # a Grafana target's legendFormat

    def parsed(self) -> promql.Expr:
        return promql.parse(grafana_substituted(self.expr))


def grafana_substituted(expr: str) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match[1] or match[2]
        return GRAFANA_BUILTINS.get(name, ".*")

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", replace, expr)


def alert_rules() -> list[dict[str, Any]]:
    """Every rule of every group in every rule file Prometheus loads."""
    rules = []
    for path in rule_files():
        for group in load_yaml(path)["groups"]:
            rules.extend(group["rules"])
    return rules


def rule_files() -> list[Path]:
    config = load_yaml(PROMETHEUS_CONFIG)
    return [PROMETHEUS_CONFIG.parent / name for name in config.get("rule_files", [])]


def dashboards() -> list[Path]:
    return sorted((GRAFANA_DIR / "dashboards").glob("*.json"))


def dashboard_panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those inside collapsed rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def queries() -> list[Query]:
    """Every PromQL expression of the alert rules and the dashboards."""
    found = [Query(f"alert {rule['alert']}", rule["expr"]) for rule in alert_rules()]
    for path in dashboards():
        dashboard = json.loads(path.read_text())
        for panel in dashboard_panels(dashboard):
            for target in panel.get("targets", []):
                where = f"{path.name}: panel {panel['title']!r} target {target.get('refId')}"
                found.append(Query(where, target["expr"], target.get("legendFormat", "")))
        for variable in dashboard.get("templating", {}).get("list", []):
            if variable.get("type") == "query":
                query = variable["query"]
                text = query["query"] if isinstance(query, dict) else query
                # label_values(SELECTOR, LABEL): the selector is PromQL
                match = re.fullmatch(r"\s*label_values\((.*),\s*\w+\)\s*", text)
                found.append(
                    Query(f"{path.name}: variable {variable['name']}", match[1] if match else text)
                )
    return found


def selectors(expr: promql.Expr) -> list[promql.VectorSelector]:
    found: list[promql.VectorSelector] = []

    def visit(node: Any) -> None:
        if isinstance(node, promql.VectorSelector):
            found.append(node)

    promql.walk(expr, visit)
    return found


def calls(expr: promql.Expr) -> list[promql.Call]:
    found: list[promql.Call] = []

    def visit(node: Any) -> None:
        if isinstance(node, promql.Call):
            found.append(node)

    promql.walk(expr, visit)
    return found


def metric_names(expr: promql.Expr) -> set[str]:
    return {selector.name for selector in selectors(expr) if selector.name}


def output_labels(expr: Any) -> frozenset[str] | None:
    """The labels the expression's result series can carry; None where that is whatever the
    selected series carry (not known without the data)."""
    if isinstance(expr, promql.VectorSelector | promql.MatrixSelector):
        return None
    if isinstance(expr, promql.NumberLiteral | promql.StringLiteral):
        return frozenset()
    if isinstance(expr, promql.ParenExpr | promql.UnaryExpr | promql.SubqueryExpr):
        return output_labels(expr.expr)
    if isinstance(expr, promql.AggregateExpr):
        return _aggregate_labels(expr)
    if isinstance(expr, promql.Call):
        return _call_labels(expr)
    if isinstance(expr, promql.BinaryExpr):
        return _binary_labels(expr)
    raise TypeError(f"unknown PromQL node {type(expr).__name__}")


def _aggregate_labels(expr: promql.AggregateExpr) -> frozenset[str] | None:
    inner = output_labels(expr.expr)
    op = str(expr.op)
    if op in ("topk", "bottomk", "limitk", "limit_ratio"):
        return inner  # these pick series, they keep their labels
    modifier = expr.modifier
    kept: frozenset[str] | None
    if modifier is None:
        kept = frozenset()
    elif modifier.type == promql.AggModifierType.By:
        kept = frozenset(modifier.labels)
    else:
        kept = None if inner is None else inner - set(modifier.labels)
    if op == "count_values" and kept is not None:
        kept |= {expr.param.val}
    return kept


def _call_labels(expr: promql.Call) -> frozenset[str] | None:
    name = expr.func.name
    if name in ("vector", "scalar", "time"):
        return frozenset()
    if name == "histogram_quantile":
        inner = output_labels(expr.args[1])
        return None if inner is None else inner - {"le"}
    if name in ("label_replace", "label_join"):
        return None
    arguments = [
        a for a in expr.args if not isinstance(a, promql.NumberLiteral | promql.StringLiteral)
    ]
    return output_labels(arguments[0]) if arguments else frozenset()


def _binary_labels(expr: promql.BinaryExpr) -> frozenset[str] | None:
    left, right = output_labels(expr.lhs), output_labels(expr.rhs)
    if _is_scalar(expr.lhs):
        return right
    if _is_scalar(expr.rhs):
        return left
    modifier = expr.modifier
    if modifier is not None and modifier.card == promql.VectorMatchCardinality.OneToMany:
        return None if right is None else right | set(modifier.group_labels or ())
    if modifier is not None and modifier.card == promql.VectorMatchCardinality.ManyToOne:
        return None if left is None else left | set(modifier.group_labels or ())
    return left


def _is_scalar(expr: Any) -> bool:
    if isinstance(expr, promql.ParenExpr | promql.UnaryExpr):
        return _is_scalar(expr.expr)
    if isinstance(expr, promql.NumberLiteral):
        return True
    return isinstance(expr, promql.Call) and expr.func.name in ("scalar", "time")


def template_labels(text: str) -> set[str]:
    """Labels a Prometheus annotation ({{ $labels.x }}) or a Grafana legend ({{x}}) names."""
    names = set(re.findall(r"\$labels\.(\w+)", text))
    names |= set(re.findall(r"\{\{\s*([A-Za-z_]\w*)\s*\}\}", text))
    return names


def sample_names(family_name: str, family_type: str) -> set[str]:
    """The sample names Prometheus stores for a family parsed by prometheus_client, whose
    parser strips `_total` from counter families."""
    if family_type == "counter":
        return {family_name + "_total"}
    if family_type == "histogram":
        return {family_name + suffix for suffix in ("_bucket", "_sum", "_count")}
    if family_type == "summary":
        return {family_name, family_name + "_sum", family_name + "_count"}
    return {family_name}


def unexported(families: Iterable[Metric]) -> dict[str, list[str]]:
    """Sample names the queries read that none of these families (a node's /metrics, parsed
    by prometheus_client) provides, each with where it is read."""
    exported = {name for f in families for name in sample_names(f.name, f.type)}
    missing: dict[str, list[str]] = defaultdict(list)
    for query in queries():
        for name in sorted(metric_names(query.parsed()) - exported - PROMETHEUS_OWN):
            missing[name].append(query.where)
    return dict(sorted(missing.items()))
