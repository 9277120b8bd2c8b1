"""JWTs as a client mints them: with its own JWT library (PyJWT), not the node's `mint`.

So the tests check the token contract users rely on (claims `tenant`, `scope` space-separated,
`exp`, optional `namespaces`), not merely that the node agrees with itself.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

import jwt

from node.http.auth import READ, WRITE

CLIENT_SCOPES = (READ, WRITE)  # what an application (not an operator) is usually given


def claims(
    tenant: str = "acme",
    scopes: Iterable[str] = CLIENT_SCOPES,
    *,
    ttl_s: float | None = 600,
    namespaces: list[str] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The claims of a token for `tenant`; `extra` adds or overrides claims (to craft bad
    ones), and ttl_s=None leaves out `exp`."""
    now = int(time.time())
    found: dict[str, Any] = {"tenant": tenant, "scope": " ".join(scopes), "iat": now}
    if ttl_s is not None:
        found["exp"] = now + int(ttl_s)
    if namespaces is not None:
        found["namespaces"] = namespaces
    return found | extra


def client_token(
    key: Any,
    tenant: str = "acme",
    scopes: Iterable[str] = CLIENT_SCOPES,
    *,
    ttl_s: float | None = 600,
    namespaces: list[str] | None = None,
    algorithm: str = "HS256",
    headers: Mapping[str, Any] | None = None,
    **extra: Any,
) -> str:
    """A signed JWT: `key` is the shared secret (HS*) or a private key (RS*, ES*)."""
    payload = claims(tenant, scopes, ttl_s=ttl_s, namespaces=namespaces, **extra)
    return jwt.encode(payload, key, algorithm=algorithm, headers=dict(headers or {}) or None)


def bearer(
    key: Any, tenant: str = "acme", scopes: Iterable[str] = CLIENT_SCOPES, **options: Any
) -> dict[str, str]:
    """The Authorization header carrying client_token(key, tenant, scopes, **options)."""
    return {"Authorization": "Bearer " + client_token(key, tenant, scopes, **options)}
