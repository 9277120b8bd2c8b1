"""The idempotency window must outlast an attempt that timed out, so its retry replays."""

from __future__ import annotations

import pytest

from node.base.config import ConfigError, parse

BASE = ["--node-id", "n", "--auth", "none"]


def test_the_default_window_is_valid():
    parse(BASE, {}).validate()


def test_a_window_of_three_request_timeouts_is_the_shortest():
    config = parse([*BASE, "--idempotency-window-s", "1", "--request-timeout-s", "0.3"], {})
    assert config.validate().idempotency_window_s == 1
    parse([*BASE, "--idempotency-window-s", "6"], {}).validate()  # default timeout 2 s


@pytest.mark.parametrize(
    ("window", "timeout", "shortest"), [("1", "2", "6"), ("5.9", "2", "6"), ("1", "0.5", "1.5")]
)
def test_a_shorter_window_is_refused_with_the_reason(window: str, timeout: str, shortest: str):
    argv = [*BASE, "--idempotency-window-s", window, "--request-timeout-s", timeout]
    with pytest.raises(ConfigError) as refused:
        parse(argv, {})
    message = str(refused.value)
    assert f"at least 3 x request-timeout-s ({shortest})" in message
    assert "timed-out attempt" in message
