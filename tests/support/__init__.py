"""What every test folder shares: one of each helper, imported as `from tests.support import …`.

- free_port()                 a TCP port on 127.0.0.1 nobody listens on (net.py)
- eventually(check, what)     poll an async check within a bound, fail with what it last saw
                              (polling.py)
- client_token(key, …)        a JWT minted as a client would (PyJWT), and bearer(…) its
                              Authorization header; claims(…) to craft bad ones
                              (tokens.py)
- spawn(argv, …)              Popen a long-lived child (a node) that dies with pytest
                              (processes.py)

Beside them: asyncio_leaks.py, the pytest plugin that fails a test whose task or future
exception was never retrieved, and ../conftest.py, the session's Redis, Redis Cluster and
PostgreSQL fixtures (the server classes live in tests/integration/).
"""

from tests.support.net import free_port
from tests.support.polling import eventually
from tests.support.processes import spawn
from tests.support.tokens import bearer, claims, client_token

__all__ = ["bearer", "claims", "client_token", "eventually", "free_port", "spawn"]
