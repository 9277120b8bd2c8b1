"""loadtest/locustfile.py against a real cluster: every kind of request is served without a
failure, and the cluster holds exactly the increments Locust counted as acknowledged, those
the client users (loadtest/locust_client.py) made through counters_client included.

Locust runs as a subprocess: importing it here would monkey-patch this process with gevent.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from node.http.auth import READ
from tests.cluster.harness import REPO, Cluster
from tests.support import bearer, eventually

SECRET = "locust-test-secret-" * 4
TENANTS = ("acme", "globex")
NAMESPACE = "locust-test"
KEYS = 300  # every counter fits one listing page
BATCH_SIZE = 5
INCREMENT = "/v1/namespaces/{namespace}/counters/{name}/increment"
INCREMENTS = (f"{INCREMENT} (uniform)", f"{INCREMENT} (zipf)")
BATCH = "/v1/namespaces/{namespace}/batch"
READS = (
    "/v1/namespaces/{namespace}/counters/{name}",
    "/v1/namespaces/{namespace}/counters/{name}/history",
    "/v1/namespaces/{namespace}/rollups",
    "/v1/namespaces/{namespace}/top",
    "/v1/namespaces/{namespace}/aggregate",
    "/v1/namespaces/{namespace}/counters/{name}?window",
    "SSE connect",  # the feed listener's streams, and the changes they received
    "SSE change (lag)",
)
# The client users' calls (one sample per add(), once acknowledged), all for TENANTS[0].
CLIENT_INCREMENTS = ("add() -> acknowledged (zipf)", "incr() (zipf)")
CLIENT_READS = ("get() (zipf)", "get_many() (zipf)")


def _run_locust(host: str, workdir: Path) -> tuple[dict[str, dict[str, Any]], str]:
    """Locust's final statistics by request name, and what it printed."""
    command = [
        sys.executable, "-m", "locust", "-f", str(REPO / "loadtest" / "locustfile.py"),
        "--headless", "-u", "7", "-r", "7", "-t", "4s",  # 7: one user of each kind at least
        "--stop-timeout", "10",  # users finish their request: the counts below stay exact
        "--only-summary", "--json-file", str(workdir / "stats"), "--host", host,
        "--counters-namespace", NAMESPACE, "--counters-tenants", ",".join(TENANTS),
        "--counters-keys", str(KEYS), "--counters-batch-size", str(BATCH_SIZE),
    ]  # fmt: skip
    # Nothing from the caller's environment steers the run, only this secret.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOCUST_", "COUNTERS_"))}
    env["COUNTERS_JWT_SECRET"] = SECRET
    done = subprocess.run(  # run in workdir: no locust.conf or pyproject.toml is read
        command, cwd=workdir, env=env, capture_output=True, text=True, timeout=60
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    stats = json.loads((workdir / "stats.json").read_text())
    return {entry["name"]: entry for entry in stats}, output


def _bearer(tenant: str) -> dict[str, str]:
    return bearer(SECRET, tenant, [READ])


async def test_a_headless_locust_run_is_served_and_counted_exactly(cluster: Cluster, tmp_path):
    cluster.settings.update(
        COUNTERS_AUTH="jwt", COUNTERS_JWT_SECRET=SECRET, COUNTERS_HISTORY_FLUSH_INTERVAL_S="0.5"
    )
    nodes = await cluster.start(3)
    stats, output = await asyncio.to_thread(_run_locust, nodes[0].url, tmp_path)

    summary = {name: (e["num_requests"], e["num_failures"]) for name, e in stats.items()}
    for name in (*INCREMENTS, BATCH, *READS, *CLIENT_INCREMENTS, *CLIENT_READS):
        assert summary.get(name, (0, 0))[0] > 0, (name, summary, output[-3000:])
    assert all(failures == 0 for _, failures in summary.values()), (summary, output[-3000:])
    acknowledged = sum(summary[name][0] for name in (*INCREMENTS, *CLIENT_INCREMENTS))
    acknowledged += BATCH_SIZE * summary[BATCH][0]

    # Every acknowledged increment is on the cluster, split over the tenants, and nothing else.
    totals: dict[str, dict[str, int]] = {}

    async def all_counted() -> bool:
        for tenant in TENANTS:
            status, body = await cluster.request(
                "GET", nodes[1], f"/v1/namespaces/{NAMESPACE}/counters?limit=1000",
                headers=_bearer(tenant),
            )  # fmt: skip
            assert status == 200 and body["next_cursor"] is None, body
            totals[tenant] = {c["name"]: c["value"] for c in body["counters"]}
        return sum(sum(values.values()) for values in totals.values()) == acknowledged

    try:
        await eventually(all_counted, f"{acknowledged} increments in {NAMESPACE}", 15)
    except AssertionError:
        found = {tenant: sum(values.values()) for tenant, values in totals.items()}
        raise AssertionError(f"{acknowledged} increments acknowledged; listed {found}") from None
    assert all(sum(totals[tenant].values()) > 0 for tenant in TENANTS), totals
    everyone: dict[str, int] = {}
    for values in totals.values():
        for name, value in values.items():
            everyone[name] = everyone.get(name, 0) + value
    assert max(everyone, key=everyone.__getitem__) == "k0", everyone  # the Zipf-hot key

    # The history of the hottest counter ends at its value now.
    path = f"/v1/namespaces/{NAMESPACE}/counters/k0"

    async def history_caught_up() -> bool:
        status, body = await cluster.request(
            "GET", nodes[2], f"{path}/history?step=minute", headers=_bearer(TENANTS[0])
        )
        assert status == 200, body
        return bool(body["series"]) and body["series"][-1]["value"] == totals[TENANTS[0]].get("k0")

    await eventually(history_caught_up, "k0's history to reach its value", 15)
