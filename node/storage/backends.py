"""Picks the durable replica's backend from the configuration (apart from the interface,
so that the backends import the interface and nothing imports them but this)."""

from __future__ import annotations

from node.base.config import Config
from node.storage.durable import DurableReplica
from node.storage.durable_sqlite import SqliteReplica


def open_durable(config: Config) -> DurableReplica:
    """Redis (standalone or Cluster) when a URL is given, else SQLite in the data dir.
    redis-py is imported only then: an embedded node does not pay for it at every start."""
    if config.redis_url or config.redis_cluster_url:
        from node.storage.durable_redis import RedisReplica

        return RedisReplica(
            config.redis_url or config.redis_cluster_url,
            cluster=bool(config.redis_cluster_url),
            timeout_s=config.redis_timeout_s,
            owner=config.node_id,
        )
    return SqliteReplica(config.data_path / "counters.sqlite3")


def outlives_data_dir(config: Config) -> bool:
    """Whether the durable replica open_durable picks survives the loss of the data dir."""
    return bool(config.redis_url or config.redis_cluster_url)
