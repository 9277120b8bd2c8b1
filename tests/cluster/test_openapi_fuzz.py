"""Schemathesis against a live node: requests generated from /openapi.json itself.

Every operation is called with schema-valid and schema-breaking parameters, bodies and
headers, with and without the token, and in sequences (the stateful phase follows links,
e.g. a listed node id into DELETE /admin/nodes/{node_id}). The run fails on any 5xx, on a
status, content type, header or body the document does not declare for that operation, and
on an operation the token could not reach. The schemathesis CLI runs all four of its phases
(examples, coverage, fuzzing, stateful); its pytest plugin runs only fuzzing.
"""

from __future__ import annotations

import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from node.http.auth import ADMIN, READ, WRITE
from node.http.openapi import PATHS
from tests.cluster.harness import one_node
from tests.support import client_token

SECRET = "openapi-fuzz-secret-" * 3
MAX_EXAMPLES = 25  # per operation and phase; the whole run takes ~10 s on two cores
CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "ignored_auth",  # a request without a valid token must not succeed
    "unsupported_method",  # an undeclared method answers 405 with Allow
]
# POST /admin/nodes makes the node dial whatever address it is given: a fuzzer would aim it
# at arbitrary hosts. Its bad bodies are covered in test_bad_input.py.
# GET .../events is a stream that never ends by itself: each example would wait out the
# request timeout. Its bad input is covered in test_feed.py.
EXCLUDED = ["POST /admin/nodes", "GET /v1/namespaces/{namespace}/events"]
CONFIG = """
[warnings]
# Fail, not warn, when the run proves less than it seems to: every operation answered only
# 401/403, the API refused what the document allows, or a pattern could not be generated.
fail-on = ["missing_auth", "validation_mismatch", "unsupported_regex", "unused_openapi_auth",
           "unresolvable_reference", "missing_test_data", "rate_limited"]

[[operations]]
# The only member: leave and remove must answer 409 rather than empty the ring.
include-name = "DELETE /admin/nodes/{node_id}"
parameters = { node_id = "n1" }
"""
RUN_CLI = "import sys; from schemathesis.cli import schemathesis; sys.exit(schemathesis())"


def test_schemathesis_finds_no_5xx_and_nothing_outside_the_document(tmp_path: Path):
    token = client_token(SECRET, "fuzz", [READ, WRITE, ADMIN], ttl_s=3600)
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    operations = sum(len(methods) for methods in PATHS.values()) - len(EXCLUDED)
    with one_node(tmp_path / "node", COUNTERS_AUTH="jwt", COUNTERS_JWT_SECRET=SECRET) as node:
        command = [
            sys.executable, "-c", RUN_CLI,
            "--config-file", str(config), "--no-color",
            "run", f"{node.url}/openapi.json",
            "--header", f"Authorization: Bearer {token}",
            "--checks", ",".join(CHECKS),
            "--max-examples", str(MAX_EXAMPLES),
            "--workers", "1",
            "--request-timeout", "10",
            "--generation-database", "none",
        ]  # fmt: skip
        for name in EXCLUDED:
            command += ["--exclude-name", name]
        try:
            run = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=100)
        except subprocess.TimeoutExpired as error:
            pytest.fail(f"schemathesis ran over 100 s:\n{error.stdout}")
        report = run.stdout + run.stderr
        assert run.returncode == 0, report
        tested = re.search(r"Tested:\s+(\d+)", report)
        assert tested and int(tested[1]) == operations, report
        # The run may not have taken the node down (it tried: DELETE /admin/nodes/n1).
        with urllib.request.urlopen(node.url + "/readyz", timeout=5) as response:
            assert response.status == 200
