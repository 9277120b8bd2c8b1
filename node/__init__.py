"""The Counters node: the aiohttp peer that serves clients and replicates counters.

Its code lives in layered subpackages; each imports only those below it (tests/node/
test_layering.py checks this and that no import cycle exists):

    http/                   routes, the edge middleware, auth, rate limits, validation, OpenAPI
    coordination/ realtime/ coordinator, replication, quorums, idempotency, listing, quota |
                            the change tap, windows, aggregates, top-k, the change feed
    cluster/   history/     membership, peer links, wire, gossip, hand-off | history recorder
    storage/                in-memory store, durable replica (Redis, SQLite), write-behind
    obs/       base/        logs, metrics, tracing | config, errors, keys, threads

This root only composes: `app` builds the application, `cli` parses commands, and
`local_cluster` runs `counters up`.
"""

__version__ = "0.1.0"
