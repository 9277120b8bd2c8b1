"""--redis-timeout-s and --postgres-timeout-s: defaults, validation, and where they go."""

from __future__ import annotations

import pytest

from node.base.config import Config, ConfigError, parse
from node.history.backends import open_history
from node.storage.backends import open_durable

ENV: dict[str, str] = {"COUNTERS_AUTH": "none"}


def test_the_timeouts_have_defaults_and_come_from_flags_or_the_environment():
    config = parse(["--node-id", "n1"], ENV)
    assert (config.redis_timeout_s, config.postgres_timeout_s) == (5.0, 10.0)
    config = parse(
        ["--node-id", "n1", "--redis-timeout-s", "0.5"], {**ENV, "COUNTERS_POSTGRES_TIMEOUT_S": "2"}
    )
    assert (config.redis_timeout_s, config.postgres_timeout_s) == (0.5, 2.0)


@pytest.mark.parametrize("flag", ["--redis-timeout-s", "--postgres-timeout-s"])
@pytest.mark.parametrize("value", ["0", "-1", "0.01", "301", "nan", "inf"])
def test_a_timeout_out_of_range_is_refused_with_its_flag_named(flag: str, value: str):
    with pytest.raises(ConfigError, match=flag.removeprefix("--")):
        parse(["--node-id", "n1", flag, value], ENV)


def test_the_backends_get_their_timeouts(tmp_path):
    config = Config(
        node_id="n1",
        auth="none",
        data_dir=str(tmp_path),
        redis_url="redis://127.0.0.1:1",
        redis_timeout_s=0.25,
        postgres_url="postgresql://postgres@127.0.0.1:1/x",
        postgres_timeout_s=0.75,
    ).validate()
    assert getattr(open_durable(config), "timeout_s", None) == 0.25
    assert getattr(open_history(config), "timeout_s", None) == 0.75
