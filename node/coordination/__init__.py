"""Running operations against a shard's replicas: the coordinator, the one replication
path, quorum waits, exactly-once idempotency, listing and the per-tenant quota.

May import `node.cluster`, `node.history`, `node.storage`, `node.obs` and `node.base`.
"""
