"""Free ports on the loopback, for test servers and node processes."""

from __future__ import annotations

import socket

# The machine's own Redis, PostgreSQL and Redis Cluster bus: a test never takes these, even
# when they happen to be free, since a server started later would find its port gone.
SHARED_PORTS = frozenset({5432, 6379, 16379})


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on now; the caller must still win the bind."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port: int = probe.getsockname()[1]
        if port not in SHARED_PORTS:
            return port
    raise RuntimeError("found no free TCP port on 127.0.0.1")
