"""Config: flags win over COUNTERS_* variables, which win over defaults; validate() refuses."""

from __future__ import annotations

import pytest

from node.base.config import Config, ConfigError, parse
from node.realtime.stream import streams_per_tenant


def test_flags_environment_and_defaults_in_that_order():
    env = {
        "COUNTERS_NODE_ID": "from-env",
        "COUNTERS_REPLICAS": "5",
        "COUNTERS_WRITE_QUORUM": "3",
        "COUNTERS_AUTH": "none",
    }
    config = parse(["--replicas", "4", "--seeds", "a:1, b:2"], env)
    assert config.node_id == "from-env"
    assert config.replicas == 4 and config.write_quorum == 3
    assert config.seeds == ("a:1", "b:2")
    assert config.read_quorum == Config.read_quorum and config.shards == 256


def test_every_field_has_a_flag_and_a_variable():
    flags = parse(["--node-id", "n", "--gossip-interval-s", "0.25", "--auth", "none"], {})
    env = parse(
        [], {"COUNTERS_NODE_ID": "n", "COUNTERS_GOSSIP_INTERVAL_S": "0.25", "COUNTERS_AUTH": "none"}
    )
    assert flags == env and flags.gossip_interval_s == 0.25


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "node-id"),
        (["--node-id", "bad id"], "node-id"),
        (["--node-id", "n", "--shards", "100"], "power of two"),
        (["--node-id", "n", "--replicas", "2", "--write-quorum", "3"], "write-quorum"),
        (["--node-id", "n", "--read-quorum", "0"], "read-quorum"),
        (["--node-id", "n", "--listen", "nohost"], "HOST:PORT"),
        (["--node-id", "n", "--seeds", "a:99999"], "HOST:PORT"),
        (["--node-id", "n", "--listen", "0.0.0.0:7000"], "--advertise"),
        (["--node-id", "n", "--counter-quota-overrides", "acme=lots"], "tenant=count"),
        (["--node-id", "n", "--max-counters-per-tenant", "-1"], "max-counters"),
        (["--node-id", "n", "--advertise", "node1"], "HOST:PORT"),
        (["--node-id", "n", "--replicas", "three"], "not a number"),
        (["--node-id", "n", "--gossip-interval-s", "0"], "positive"),
        (["--node-id", "n", "--log-level", "loud"], "log-level"),
        (["--node-id", "n", "--events-redis-url", "localhost:6379"], "events-redis-url"),
        (
            [
                "--node-id",
                "n",
                "--events-redis-url",
                "redis://a",
                "--events-redis-cluster-url",
                "redis://b",
            ],
            "not both",
        ),
        (["--node-id", "n", "--events-min-interval-ms", "0"], "events-min-interval-ms"),
        (["--node-id", "n", "--events-log-max", "0"], "events-log-max"),
        (["--node-id", "n", "--events-stall-s", "0"], "events-stall-s"),
        (["--node-id", "n", "--events-max-streams", "0"], "events-max-streams"),
    ],
)
def test_bad_settings_are_refused_with_the_flag_named(argv, message):
    with pytest.raises(ConfigError, match=message):
        parse(argv, {"COUNTERS_AUTH": "none"})


def test_a_node_listening_everywhere_is_known_by_its_advertised_address():
    config = parse(
        ["--node-id", "n", "--listen", "0.0.0.0:7000", "--advertise", "n1:7000"],
        {"COUNTERS_AUTH": "none"},
    )
    assert (config.host, config.port, config.address) == ("0.0.0.0", 7000, "n1:7000")
    assert parse(["--node-id", "n"], {"COUNTERS_AUTH": "none"}).address == Config.listen


def test_help_says_what_every_option_means():
    """`counters node --help` shows each field's comment, not only its variable."""
    from dataclasses import fields

    from node.base.config import field_help

    helps = field_help()
    assert set(helps) == {f.name for f in fields(Config)}
    assert all(len(text) > 15 for text in helps.values()), helps
    assert helps["write_quorum"].startswith("W: replicas")
    assert helps["jwt_audience"] == helps["jwt_issuer"]  # one comment above both


def test_help_text_reaches_the_command_line(capsys):
    with pytest.raises(SystemExit):
        parse(["--help"], {})
    out = " ".join(capsys.readouterr().out.split())
    assert "Seconds between gossip rounds (membership, ring, shard digests)." in out
    assert "(env COUNTERS_GOSSIP_INTERVAL_S)" in out


def test_jwt_auth_refuses_the_public_development_cluster_secret():
    """With tokens guarding the client API, the peer endpoints (which read and write every
    tenant) must not be open to whoever knows the default secret, which is in the source."""
    argv = ["--node-id", "n", "--auth", "jwt", "--jwt-secret", "S"]
    with pytest.raises(ConfigError, match="--cluster-secret"):
        parse(argv, {})
    assert parse([*argv, "--cluster-secret", "ours"], {}).cluster_secret == "ours"
    assert parse(["--node-id", "n"], {"COUNTERS_AUTH": "none"}).address  # none: still allowed


def test_a_tenants_share_of_event_streams_defaults_to_a_quarter_with_tokens():
    jwt = ["--node-id", "n", "--auth", "jwt", "--jwt-secret", "S", "--cluster-secret", "C"]
    assert streams_per_tenant(parse([*jwt, "--events-max-streams", "100"], {})) == 25
    assert streams_per_tenant(parse(["--node-id", "n", "--auth", "none"], {})) == 256
    chosen = [*jwt, "--events-max-streams-per-tenant", "7"]
    assert streams_per_tenant(parse(chosen, {})) == 7
    with pytest.raises(ConfigError, match="events-max-streams-per-tenant"):
        parse([*jwt, "--events-max-streams", "4", "--events-max-streams-per-tenant", "5"], {})
