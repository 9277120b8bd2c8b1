"""Node configuration: one frozen dataclass, every field settable by flag or environment.

A flag `--foo-bar` is also the environment variable `COUNTERS_FOO_BAR`; the flag wins.
`validate()` rejects combinations that cannot work before the node opens a socket.
"""

from __future__ import annotations

import argparse
import inspect
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

from ring import DEFAULT_REPLICAS, DEFAULT_SHARDS

ENV_PREFIX = "COUNTERS_"
FIELD_LINE = re.compile(r"    ([a-z_]+): ")  # a field of Config, at the class's own indent
ALGORITHMS = frozenset({"HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384"})
# The shortest idempotency window, in request timeouts (see Config._validate_storage).
IDEMPOTENCY_WINDOW_TIMEOUTS = 3
DEV_CLUSTER_SECRET = "counters-dev-cluster-secret"  # public: --auth jwt refuses it


class ConfigError(ValueError):
    """The configuration cannot run."""


# HOST:PORT, the host a name (letters, digits, '.', '-', '_') or an IPv4 or IPv6 address
_ADDRESS = re.compile(r"(\[[\d:.A-Fa-f]+\]|[\d:.A-Fa-f]*:[\d:.A-Fa-f]*|\w[\w.-]*):(\d{1,5})", re.A)


def parse_address(text: str) -> tuple[str, int]:
    match = _ADDRESS.fullmatch(text.strip())
    if match is None or not 0 < int(match[2]) < 65536:
        raise ConfigError(f"not a HOST:PORT address: {text!r}")
    return match[1], int(match[2])


@dataclass(frozen=True)
class Config:
    # This node's id, unique in the cluster and stable across restarts (it names the
    # data dir's contents and the actor slots). Required.
    node_id: str
    # HOST:PORT to listen on for clients and peers. Default 127.0.0.1:7000.
    listen: str = "127.0.0.1:7000"
    # HOST:PORT peers and clients reach this node at, when it differs from listen (a
    # container listening on 0.0.0.0:7000 advertises node1:7000). Default: listen.
    advertise: str = ""
    # HOST:PORT of nodes to join through; may include this node. Empty: a cluster of one.
    seeds: tuple[str, ...] = ()
    # Directory for the incarnation number (and later the embedded store). Default ./data/<id>.
    data_dir: str = ""
    # N: replicas per counter. Default 3 (capped by the cluster size).
    replicas: int = DEFAULT_REPLICAS
    # Q: shards, a power of two, fixed for the life of a cluster. Default 256.
    shards: int = DEFAULT_SHARDS
    # W: replicas (coordinator included) that must hold a write before it is acknowledged.
    write_quorum: int = 2
    # R: replicas whose states a read merges.
    read_quorum: int = 2
    # Seconds a client request may wait for its replicas before answering 504. Default 2.
    request_timeout_s: float = 2.0
    # Seconds between gossip rounds (membership, ring, shard digests). Default 0.5.
    gossip_interval_s: float = 0.5
    # Most shards one anti-entropy exchange ships, to bound the cost of a round. Default 64.
    sync_shards_per_round: int = 64
    # Seconds without hearing a peer before it is treated as down. Default 3.
    failure_timeout_s: float = 3.0
    # Seconds a peer frame may wait to gather more updates for the same peer (group commit);
    # 0 sends at the next loop turn, so frames still fill up under load. Default 0.
    replication_window_s: float = 0.0
    # Frames in flight per peer link; more updates wait and travel in the next frame. Default 4.
    max_inflight_frames: int = 4
    # Seconds a peer link may hear nothing from its peer before it pings; a ping unanswered
    # within half of it closes the link, fails its pending frames and redials, so a stalled
    # peer's link dies within 1.5 x this. Default 1.
    peer_heartbeat_s: float = 1.0
    # Secret shared by the cluster's nodes for peer traffic. Default: a fixed development
    # value, which --auth jwt refuses: the peer endpoints read and write every tenant.
    cluster_secret: str = field(default=DEV_CLUSTER_SECRET, repr=False)
    # Log level: debug, info, warning, error. Default info.
    log_level: str = "info"
    # Bearer token GET /metrics requires (Prometheus's `authorization` setting). Empty:
    # /metrics is open, and since it names tenants, it belongs on the operators' network.
    metrics_token: str = field(default="", repr=False)
    # OTLP/HTTP endpoint that receives traces, e.g. http://jaeger:4318. Empty: tracing off.
    otlp_endpoint: str = ""
    # Redis (standalone) URL of the durable replica, e.g. redis://127.0.0.1:6379/0. With
    # neither Redis URL, the node keeps its durable replica in SQLite in its data dir.
    redis_url: str = ""
    # Redis Cluster URL (any one node) of the durable replica; excludes redis-url.
    redis_cluster_url: str = ""
    # Seconds a Redis call may wait to connect and for each reply (a ping or an
    # incarnation call as a whole) before the durable replica counts as unreachable.
    # Default 5; 0.05 to 300.
    redis_timeout_s: float = 5.0
    # Seconds between write-behind flushes of changed counters to the durable replica.
    # Default 0.2; at least 0.001.
    persist_interval_s: float = 0.2
    # Counters changed but not yet in the durable replica (async durability) past which an
    # acknowledgement waits for the write-behind to catch up (up to the request timeout):
    # it bounds what the last flush of a SIGTERM carries (about 1 s per 100,000 counters
    # with SQLite, on a quiet machine). Default 50000; 0: no bound.
    max_persist_backlog: int = 50_000
    # async: answer after the replica quorum, persist within the interval; sync: answer only
    # once the write is in the durable replica (flushes are shared by concurrent writes).
    durability: str = "async"
    # jwt: every /v1 and /admin request needs a bearer token; none: no checks at all, for
    # local experiments only (the node says so loudly). Default jwt.
    auth: str = "jwt"
    # HS256 secret for client tokens.
    jwt_secret: str = field(default="", repr=False)
    # Path of a PEM public key for RS256/ES256 client tokens.
    jwt_public_key: str = ""
    # Path of a JWKS file; a token's `kid` picks the key.
    jwt_jwks_file: str = ""
    # Accepted algorithms, comma-separated. Default: HS256 with a secret, RS256 and ES256
    # with a public key or JWKS. Never taken from the token.
    jwt_algorithms: str = ""
    # Required `iss` and `aud` claims, when set.
    jwt_issuer: str = ""
    jwt_audience: str = ""
    # Seconds of clock skew allowed on exp and nbf. Default 30.
    jwt_leeway_s: float = 30.0
    # Operations per second each tenant may run on this node (a batch counts each op);
    # 0 turns limits off. Default 100000: about the most a node does on 2 cores (batches
    # of 100), so a lone tenant is not held below what the node can do; set it lower to
    # share a node among tenants.
    rate_limit_per_s: float = 100000.0
    # Operations a tenant may run at once above its rate. Default 200000.
    rate_limit_burst: float = 200000.0
    # Per-tenant limits: "acme=500:1000,globex=50:50" (rate:burst). Default none.
    rate_limit_overrides: str = ""
    # Counters each tenant may hold in the cluster; creating one more answers 403. 0: no
    # quota. Default 1000000.
    max_counters_per_tenant: int = 1_000_000
    # Per-tenant quotas: "acme=5000000,globex=1000". Default none.
    counter_quota_overrides: str = ""
    # Seconds an Idempotency-Key is remembered: a retry within it applies nothing new, one
    # after it applies again. Default 86400 (24 h); at least 3 x request-timeout-s.
    idempotency_window_s: float = 86400.0
    # PostgreSQL DSN of the history (postgresql://...). Empty: history in SQLite in the data dir.
    postgres_url: str = ""
    # Seconds a PostgreSQL connect, pool checkout or statement may take before the history
    # store counts as unreachable (its values wait in the buffer). Default 10; 0.05 to 300.
    postgres_timeout_s: float = 10.0
    # Seconds between history flushes. Default 10.
    history_flush_interval_s: float = 10.0
    # Seconds per history bucket. Default 60 (one minute).
    history_bucket_s: int = 60
    # Keep per-minute windowed changes (?window= reads, windowed aggregates and top-k);
    # false spares their memory and their share of each change. Default true.
    realtime_windows: bool = True
    # For tests only: ms added to the clock that files changes under minutes and reads
    # windows, so a test crosses a minute's edge without waiting for it. Default 0; the
    # same on every node, within a day.
    realtime_clock_shift_ms: int = 0
    # The change feed (node/realtime): at most one event per counter per this many ms.
    # Default 100; 1 to 60000.
    events_min_interval_ms: int = 100
    # Seconds an event stays in its node's log, so Last-Event-ID can resume. Default 300.
    events_retention_s: float = 300.0
    # Events a node's log holds at most (the oldest go first). Default 100000.
    events_log_max: int = 100_000
    # Redis URL to publish the feed to, as streams counters:events:<tenant>/<namespace>.
    # Empty (default): no stream. Excludes events-redis-cluster-url.
    events_redis_url: str = ""
    # Redis Cluster URL (any one node) to publish the feed to instead.
    events_redis_cluster_url: str = ""
    # Entries a stream keeps, about (XADD MAXLEN ~). Default 100000.
    events_stream_maxlen: int = 100_000
    # Events waiting for an unreachable sink, at most (the oldest are dropped). Default 100000.
    events_sink_backlog: int = 100_000
    # Seconds between comment heartbeats on an idle SSE stream. Default 15.
    events_heartbeat_s: float = 15.0
    # Seconds an SSE write may wait for a client that stopped reading before the stream is
    # cut off (with a final event). Default 10.
    events_stall_s: float = 10.0
    # SSE streams a node serves at once; more answer 503. Default 256.
    events_max_streams: int = 256
    # SSE streams one tenant may hold at once on a node, so that no tenant takes them all;
    # more answer 429. 0 (default): a quarter of events-max-streams with --auth jwt, all of
    # them with --auth none (one tenant).
    events_max_streams_per_tenant: int = 0

    def jwt_algorithm_list(self) -> list[str]:
        if self.jwt_algorithms:
            return [a.strip() for a in self.jwt_algorithms.split(",") if a.strip()]
        found = ["HS256"] if self.jwt_secret else []
        if self.jwt_public_key or self.jwt_jwks_file:
            found += ["RS256", "ES256"]
        return found

    def rate_limit_table(self) -> dict[str, tuple[float, float]]:
        """--rate-limit-overrides 'acme=500:1000,globex=50' as {tenant: (rate, burst)}."""
        table: dict[str, tuple[float, float]] = {}
        for item in filter(None, (part.strip() for part in self.rate_limit_overrides.split(","))):
            tenant, _, limits = item.partition("=")
            rate, _, burst = limits.partition(":")
            try:
                table[tenant] = (float(rate), float(burst or rate))
            except ValueError:
                raise ConfigError(
                    f"rate-limit-overrides: {item!r} is not tenant=rate:burst"
                ) from None
            if not tenant or table[tenant][0] <= 0 or table[tenant][1] < 1:
                raise ConfigError(f"rate-limit-overrides: {item!r} needs rate > 0, burst >= 1")
        return table

    def counter_quota_table(self) -> dict[str, int]:
        """--counter-quota-overrides 'acme=5000000,globex=1000' as {tenant: quota}."""
        table: dict[str, int] = {}
        for item in filter(None, map(str.strip, self.counter_quota_overrides.split(","))):
            tenant, _, quota = item.partition("=")
            if not tenant or not (quota.isascii() and quota.isdigit()):
                raise ConfigError(f"counter-quota-overrides: {item!r} is not tenant=count")
            table[tenant] = int(quota)
        return table

    @property
    def host(self) -> str:
        return parse_address(self.listen)[0]

    @property
    def port(self) -> int:
        return parse_address(self.listen)[1]

    @property
    def address(self) -> str:
        """Where the others reach this node: its name in membership and peer handshakes."""
        return self.advertise or self.listen

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir or os.path.join("data", self.node_id))

    def validate(self) -> Config:
        """Refuse a configuration that cannot work, naming the flag; returns self."""
        self._validate_identity()
        self._validate_cluster()
        self._validate_storage()
        self._validate_auth()
        self._validate_limits()
        self._validate_events()
        if self.otlp_endpoint and not self.otlp_endpoint.startswith(("http://", "https://")):
            raise ConfigError("otlp-endpoint must be an http:// or https:// URL")
        if self.log_level not in ("debug", "info", "warning", "error"):
            raise ConfigError("log-level must be debug, info, warning or error")
        return self

    def _validate_identity(self) -> None:
        if (
            not self.node_id
            or len(self.node_id) > 64
            or not all(c.isascii() and (c.isalnum() or c in "-_.") for c in self.node_id)
        ):
            raise ConfigError("node-id must be 1-64 characters of [A-Za-z0-9._-]")
        parse_address(self.listen)
        if self.advertise:
            parse_address(self.advertise)
        if parse_address(self.address)[0] in ("0.0.0.0", "::", "[::]"):
            raise ConfigError("listening on every interface needs --advertise HOST:PORT")
        for seed in self.seeds:
            parse_address(seed)

    def _validate_cluster(self) -> None:
        if self.shards < 1 or self.shards & (self.shards - 1) or self.shards > 65536:
            raise ConfigError("shards must be a power of two from 1 to 65536")
        if self.replicas < 1:
            raise ConfigError("replicas must be at least 1")
        if not 1 <= self.write_quorum <= self.replicas:
            raise ConfigError("write-quorum must be between 1 and replicas")
        if not 1 <= self.read_quorum <= self.replicas:
            raise ConfigError("read-quorum must be between 1 and replicas")
        for name in ("request_timeout_s", "gossip_interval_s", "failure_timeout_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name.replace('_', '-')} must be positive")
        if self.replication_window_s < 0 or self.replication_window_s > 1:
            raise ConfigError("replication-window-s must be between 0 and 1")
        if self.max_inflight_frames < 1 or self.sync_shards_per_round < 1:
            raise ConfigError("max-inflight-frames and sync-shards-per-round must be at least 1")
        if not 0.05 <= self.peer_heartbeat_s <= 60:
            raise ConfigError("peer-heartbeat-s must be between 0.05 and 60")

    def _validate_events(self) -> None:
        if abs(self.realtime_clock_shift_ms) > 86_400_000:
            raise ConfigError("realtime-clock-shift-ms must be within a day (86400000)")
        if self.events_redis_url and self.events_redis_cluster_url:
            raise ConfigError("give events-redis-url or events-redis-cluster-url, not both")
        for name in ("events_redis_url", "events_redis_cluster_url"):
            url = getattr(self, name)
            if url and not url.startswith(("redis://", "rediss://")):
                raise ConfigError(f"{name.replace('_', '-')} must start with redis:// or rediss://")
        if not 1 <= self.events_min_interval_ms <= 60_000:
            raise ConfigError("events-min-interval-ms must be between 1 and 60000")
        if not 1 <= self.events_retention_s <= 86400:
            raise ConfigError("events-retention-s must be between 1 and 86400")
        for name in ("events_log_max", "events_stream_maxlen", "events_sink_backlog"):
            if not 1 <= getattr(self, name) <= 100_000_000:
                raise ConfigError(f"{name.replace('_', '-')} must be between 1 and 100000000")
        if not 0.05 <= self.events_heartbeat_s <= 300 or not 0.05 <= self.events_stall_s <= 300:
            raise ConfigError("events-heartbeat-s and events-stall-s must be between 0.05 and 300")
        if not 1 <= self.events_max_streams <= 100_000:
            raise ConfigError("events-max-streams must be between 1 and 100000")
        if not 0 <= self.events_max_streams_per_tenant <= self.events_max_streams:
            raise ConfigError("events-max-streams-per-tenant must be 0 .. events-max-streams")

    def _validate_storage(self) -> None:
        if self.redis_url and self.redis_cluster_url:
            raise ConfigError("give redis-url or redis-cluster-url, not both")
        for name in ("redis_url", "redis_cluster_url"):
            url = getattr(self, name)
            if url and not url.startswith(("redis://", "rediss://")):
                raise ConfigError(f"{name.replace('_', '-')} must start with redis:// or rediss://")
        for name in ("redis_timeout_s", "postgres_timeout_s"):
            if not 0.05 <= getattr(self, name) <= 300:  # also refuses NaN
                raise ConfigError(f"{name.replace('_', '-')} must be between 0.05 and 300")
        if not 0.001 <= self.persist_interval_s <= 60:
            raise ConfigError("persist-interval-s must be between 0.001 and 60")
        if self.durability not in ("async", "sync"):
            raise ConfigError("durability must be async or sync")
        if self.max_persist_backlog < 0:
            raise ConfigError("max-persist-backlog must be 0 (no bound) or more")
        if self.postgres_url and not self.postgres_url.startswith(("postgres://", "postgresql://")):
            raise ConfigError("postgres-url must start with postgresql:// or postgres://")
        if not 0.01 <= self.history_flush_interval_s <= 3600:
            raise ConfigError("history-flush-interval-s must be between 0.01 and 3600")
        if not 1 <= self.history_bucket_s <= 86400 or 86400 % self.history_bucket_s:
            raise ConfigError("history-bucket-s must divide a day (1 to 86400)")
        if not 1 <= self.idempotency_window_s <= 30 * 86400:
            raise ConfigError("idempotency-window-s must be between 1 and 2592000 (30 days)")
        # A receipt is stamped when its attempt applies; that attempt may then wait for its
        # replicas (request-timeout-s), in sync mode for the durable replica as long again,
        # and the client hears a 504 through a forward. A retry sent on that 504 must still
        # find the receipt, or it applies a second time inside what the client took for
        # the window.
        shortest = IDEMPOTENCY_WINDOW_TIMEOUTS * self.request_timeout_s
        if self.idempotency_window_s < shortest:
            raise ConfigError(
                f"idempotency-window-s ({self.idempotency_window_s:g}) must be at least "
                f"{IDEMPOTENCY_WINDOW_TIMEOUTS} x request-timeout-s ({shortest:g}): a retry "
                "sent after a timed-out attempt must still find that attempt's receipt"
            )

    def _validate_auth(self) -> None:
        if self.auth not in ("jwt", "none"):
            raise ConfigError("auth must be jwt or none")
        if self.auth == "jwt":
            if not (self.jwt_secret or self.jwt_public_key or self.jwt_jwks_file):
                raise ConfigError(
                    "no token keys: give --jwt-secret, --jwt-public-key or --jwt-jwks-file "
                    "(or --auth none for a local experiment)"
                )
            unknown = set(self.jwt_algorithm_list()) - ALGORITHMS
            if unknown or not self.jwt_algorithm_list():
                raise ConfigError(f"jwt-algorithms must be some of {sorted(ALGORITHMS)}")
            for path in (self.jwt_public_key, self.jwt_jwks_file):
                if path and not os.path.isfile(path):
                    raise ConfigError(f"no such key file: {path}")
            if self.cluster_secret == DEV_CLUSTER_SECRET:
                raise ConfigError(
                    "--auth jwt needs a --cluster-secret (COUNTERS_CLUSTER_SECRET) of the "
                    "cluster's own: the development default is public, and whoever signs peer "
                    "requests with it reads and writes every tenant's counters and history"
                )
        if self.jwt_leeway_s < 0 or self.jwt_leeway_s > 600:
            raise ConfigError("jwt-leeway-s must be between 0 and 600")

    def _validate_limits(self) -> None:
        if self.rate_limit_per_s < 0 or self.rate_limit_burst < 1:
            raise ConfigError("rate-limit-per-s must be >= 0 and rate-limit-burst >= 1")
        self.rate_limit_table()
        if self.max_counters_per_tenant < 0:
            raise ConfigError("max-counters-per-tenant must be >= 0 (0: no quota)")
        self.counter_quota_table()


def field_help() -> dict[str, str]:
    """Each Config field's comment, read from the class's source: the comment just above a
    field, or above the field before it when two share one (jwt_issuer, jwt_audience)."""
    found: dict[str, str] = {}
    comment: list[str] = []  # the comment lines read since the last field
    shared = ""  # the last field's text, for a field with no comment of its own
    for line in inspect.getsource(Config).splitlines()[1:]:
        stripped = line.strip()
        if stripped.startswith("#"):
            comment.append(stripped.removeprefix("#").strip())
            continue
        field_line = FIELD_LINE.match(line)
        if field_line is None:
            comment, shared = [], ""
            continue
        shared = " ".join(comment) if comment else shared
        found[field_line[1]] = shared
        comment = []
    return found


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per Config field, its help the field's comment; defaults stay None so the
    environment can fill them."""
    helps = field_help()
    for f in fields(Config):
        variable = f"{ENV_PREFIX}{f.name.upper()}"
        help_text = f"{helps.get(f.name, '')} (env {variable})".replace("%", "%%")
        parser.add_argument(_flag(f.name), dest=f.name, default=None, help=help_text.strip())


def _convert(name: str, raw: str) -> object:
    default = Config.__dataclass_fields__[name].default
    try:
        if name == "seeds":
            return tuple(s.strip() for s in raw.split(",") if s.strip())
        if isinstance(default, bool):
            return raw.lower() in ("1", "true", "yes", "on")
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
    except ValueError:
        raise ConfigError(f"{_flag(name)}: not a number: {raw!r}") from None
    return raw


def from_sources(args: argparse.Namespace, environ: Mapping[str, str]) -> Config:
    """Flags first, then COUNTERS_* variables, then defaults."""
    values: dict[str, object] = {}
    for f in fields(Config):
        raw = getattr(args, f.name, None)
        if raw is None:
            raw = environ.get(ENV_PREFIX + f.name.upper())
        if raw is not None:
            values[f.name] = _convert(f.name, str(raw))
    if "node_id" not in values:
        raise ConfigError("--node-id (or COUNTERS_NODE_ID) is required")
    return Config(**values).validate()  # type: ignore[arg-type]


def parse(argv: Sequence[str], environ: Mapping[str, str]) -> Config:
    parser = argparse.ArgumentParser(prog="counters node")
    add_arguments(parser)
    return from_sources(parser.parse_args(list(argv)), environ)
