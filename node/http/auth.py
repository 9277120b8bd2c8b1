"""Client authentication: JWT bearer tokens, scopes, the tenant and the namespaces claim.

Every /v1 and /admin request carries `Authorization: Bearer <JWT>`. The accepted algorithms
come from configuration, never from the token; HS256 tokens are checked with --jwt-secret,
RS256/ES256 ones with --jwt-public-key or the key of the token's `kid` in --jwt-jwks-file.
`exp` is required; `nbf`, and `iss`/`aud` when configured, are checked with a small leeway.

Claims: `tenant` (required; counters are keyed by it, so tenants never see each other's),
`scope` (space-separated counters:read, counters:write, counters:admin) and optionally
`namespaces` (a list narrowing the token to those namespaces). A missing or invalid token is
401, a valid one without the scope or namespace 403; either way nothing changes.

PyJWT is imported where a token is read or minted, not with this module: it imports
`cryptography`, a tenth of a node's start-up imports, which a node with `--auth none` never uses.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from node.base.config import Config
from node.base.errors import ClientError
from node.http.appkeys import RATE_LIMITER

log = logging.getLogger("counters.auth")

READ, WRITE, ADMIN = "counters:read", "counters:write", "counters:admin"
SCOPES = (READ, WRITE, ADMIN)
TENANT_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:-")
ANONYMOUS_TENANT = "default"


class Unauthorized(ClientError):
    status = 401
    type = "unauthorized"
    title = "Missing or invalid token"


class Forbidden(ClientError):
    status = 403
    type = "forbidden"
    title = "Token lacks the scope or namespace"


@dataclass(frozen=True, slots=True)
class Principal:
    tenant: str
    scopes: frozenset[str]
    namespaces: frozenset[str] | None  # None: every namespace

    def require(self, scope: str, namespace: str | None = None) -> None:
        if scope not in self.scopes and ADMIN not in self.scopes:
            raise Forbidden(f"this token lacks the {scope} scope")
        if namespace is not None and self.namespaces is not None:
            if namespace not in self.namespaces:
                raise Forbidden(f"this token does not cover namespace {namespace!r}")


ANONYMOUS = Principal(ANONYMOUS_TENANT, frozenset(SCOPES), None)
PRINCIPAL = web.RequestKey("principal", Principal)  # who sent the request


class Authenticator:
    def __init__(self, config: Config) -> None:
        import jwt

        self.config = config
        self.algorithms = config.jwt_algorithm_list()
        self._secret = config.jwt_secret
        self._public_key = Path(config.jwt_public_key).read_text() if config.jwt_public_key else ""
        self._jwks = (
            jwt.PyJWKSet.from_dict(json.loads(Path(config.jwt_jwks_file).read_text()))
            if config.jwt_jwks_file
            else None
        )

    def _key(self, token: str) -> Any:
        import jwt

        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as error:
            raise Unauthorized(f"malformed token: {error}") from None
        algorithm = header.get("alg")
        if algorithm not in self.algorithms:
            raise Unauthorized(f"algorithm {algorithm!r} is not accepted")
        if algorithm.startswith("HS"):
            if not self._secret:
                raise Unauthorized("no secret is configured for HMAC tokens")
            return self._secret
        kid = header.get("kid")
        if self._jwks is not None and kid is not None:
            for key in self._jwks.keys:
                if key.key_id == kid:
                    return key.key
            raise Unauthorized(f"unknown key id {kid!r}")
        if self._public_key:
            return self._public_key
        raise Unauthorized("no public key matches this token")

    def authenticate(self, header: str | None) -> Principal:
        if not header or not header.startswith("Bearer "):
            raise Unauthorized("an Authorization: Bearer <token> header is required")
        import jwt

        token = header[len("Bearer ") :].strip()
        if not token.isascii():  # a JWT is base64url and dots: bytes that are not (or not
            raise Unauthorized("malformed token: not ASCII")  # text) must not reach pyjwt
        config = self.config
        try:
            claims = jwt.decode(
                token,
                key=self._key(token),
                algorithms=self.algorithms,
                audience=config.jwt_audience or None,
                issuer=config.jwt_issuer or None,
                leeway=config.jwt_leeway_s,
                options={"require": ["exp"], "verify_aud": bool(config.jwt_audience)},
            )
        except jwt.PyJWTError as error:
            raise Unauthorized(f"invalid token: {error}") from None
        return _principal(claims)


def _principal(claims: dict[str, Any]) -> Principal:
    tenant = claims.get("tenant")
    if not isinstance(tenant, str) or not 0 < len(tenant) <= 200 or set(tenant) - TENANT_CHARS:
        raise Unauthorized("the token's tenant claim is missing or not 1-200 of [A-Za-z0-9._:-]")
    scope = claims.get("scope", "")
    if not isinstance(scope, str):
        raise Unauthorized("the scope claim must be a space-separated string")
    namespaces = claims.get("namespaces")
    if namespaces is not None and (
        not isinstance(namespaces, list) or not all(isinstance(n, str) for n in namespaces)
    ):
        raise Unauthorized("the namespaces claim must be a list of strings")
    return Principal(
        tenant,
        frozenset(scope.split()) & frozenset(SCOPES),
        None if namespaces is None else frozenset(namespaces),
    )


def authenticate(request: web.Request, authenticator: Authenticator | None) -> None:
    """Authenticate /v1 and /admin requests; None (--auth none) lets every one in as
    `default`. Other paths (health, metrics, the peer endpoints) need no client token."""
    path = request.path
    if path.startswith(("/v1/", "/admin/")) or path == "/admin":
        if authenticator is None:
            request[PRINCIPAL] = ANONYMOUS
            return
        found = authenticator.authenticate(request.headers.get("Authorization"))
        if path.startswith("/admin"):
            found.require(ADMIN)
        request[PRINCIPAL] = found


def principal(request: web.Request, scope: str, namespace: str, cost: int = 1) -> Principal:
    """The caller, checked for `scope` on `namespace` and charged `cost` operations against
    its tenant's rate limit (node/ratelimit.py) before anything runs."""
    found: Principal = request[PRINCIPAL]
    found.require(scope, namespace)
    request.app[RATE_LIMITER].charge(found.tenant, cost)
    return found


def mint(
    secret: str, tenant: str, scopes: list[str], ttl_s: float, namespaces: list[str] | None
) -> str:
    """An HS256 token for development (`counters token`)."""
    import jwt

    now = int(time.time())
    claims: dict[str, Any] = {
        "tenant": tenant,
        "scope": " ".join(scopes),
        "iat": now,
        "exp": now + int(ttl_s),
    }
    if namespaces:
        claims["namespaces"] = namespaces
    return jwt.encode(claims, secret, algorithm="HS256")
