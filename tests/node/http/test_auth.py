"""Token checks with crafted JWTs: only configured algorithms and keys, exp required, claims."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from node.base.config import Config
from node.http.auth import ADMIN, READ, WRITE, Authenticator, Forbidden, Unauthorized, mint
from tests.support import claims, client_token

SECRET = "s" * 64


def _hs(**options: Any) -> str:
    """An Authorization header for tenant acme with read and write; options as client_token's."""
    return "Bearer " + client_token(SECRET, **options)


def _auth(**settings: Any) -> Authenticator:
    config = Config(node_id="n1", cluster_secret="the cluster's own", **settings)
    return Authenticator(config.validate())


def test_a_good_hs256_token_names_tenant_scopes_and_namespaces():
    principal = _auth(jwt_secret=SECRET).authenticate(_hs(namespaces=["web"]))
    assert principal.tenant == "acme"
    assert principal.scopes == {READ, WRITE}
    principal.require(WRITE, "web")
    with pytest.raises(Forbidden):
        principal.require(WRITE, "billing")
    with pytest.raises(Forbidden):
        principal.require(ADMIN)


def test_counters_token_mints_what_a_node_accepts():
    """`counters token` and `counters up` hand out mint()'s tokens: a node must take them."""
    minted = mint(SECRET, "acme", [READ], 60, ["web"])
    principal = _auth(jwt_secret=SECRET).authenticate(f"Bearer {minted}")
    assert (principal.tenant, principal.scopes) == ("acme", {READ})
    principal.require(READ, "web")
    for scope, namespace in [(READ, "billing"), (WRITE, "web")]:
        with pytest.raises(Forbidden):
            principal.require(scope, namespace)
    decoded = jwt.decode(minted, SECRET, algorithms=["HS256"])
    assert decoded["exp"] - decoded["iat"] == 60


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Basic dXNlcjpwYXNz",
        "Bearer ",
        "Bearer not.a.jwt",
        _hs(exp=int(time.time()) - 120),  # expired beyond the leeway
        _hs(nbf=int(time.time()) + 600),  # not yet valid
        _hs(ttl_s=None),  # no exp
        "Bearer " + client_token("another secret entirely, " * 4),
        _hs(algorithm="HS512"),  # not configured
        _hs(tenant=""),
        _hs(tenant="a/b"),
        _hs(tenant=7),
        _hs(scope=["counters:read"]),
        _hs(namespaces="web"),
    ],
)
def test_bad_tokens_are_401(header):
    with pytest.raises(Unauthorized):
        _auth(jwt_secret=SECRET).authenticate(header)


def test_alg_none_and_a_tampered_payload_are_401():
    good = _hs()[len("Bearer ") :]
    header, payload, signature = good.split(".")
    unsigned = base64.urlsafe_b64encode(json.dumps({"alg": "none"}).encode()).rstrip(b"=")
    with pytest.raises(Unauthorized):
        _auth(jwt_secret=SECRET).authenticate(f"Bearer {unsigned.decode()}.{payload}.")
    forged = json.loads(base64.urlsafe_b64decode(payload + "=="))
    forged["tenant"] = "victim"
    body = base64.urlsafe_b64encode(json.dumps(forged).encode()).rstrip(b"=").decode()
    with pytest.raises(Unauthorized):
        _auth(jwt_secret=SECRET).authenticate(f"Bearer {header}.{body}.{signature}")


def test_issuer_and_audience_are_checked_when_configured():
    auth = _auth(jwt_secret=SECRET, jwt_issuer="idp", jwt_audience="counters")
    assert auth.authenticate(_hs(iss="idp", aud="counters")).tenant == "acme"
    for bad in (_hs(iss="idp", aud="other"), _hs(iss="evil", aud="counters"), _hs()):
        with pytest.raises(Unauthorized):
            auth.authenticate(bad)


def _pem(key: Any) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_rs256_with_a_public_key_and_no_hmac_confusion(tmp_path: Path):
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path / "public.pem"
    path.write_bytes(_pem(private))
    auth = _auth(jwt_public_key=str(path))
    token = client_token(private, algorithm="RS256")
    assert auth.authenticate(f"Bearer {token}").tenant == "acme"
    # HS256 "signed" with the public key as its secret: the classic confusion attack
    header = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=").decode()
    payload = base64.urlsafe_b64encode(json.dumps(claims()).encode()).rstrip(b"=").decode()
    import hashlib
    import hmac

    mac = hmac.new(path.read_bytes(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    signature = base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
    with pytest.raises(Unauthorized):
        auth.authenticate(f"Bearer {header}.{payload}.{signature}")


def test_es256_from_a_jwks_file_picks_the_key_by_kid(tmp_path: Path):
    private = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(private.public_key()))
    jwk.update(kid="k1", alg="ES256", use="sig")
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [jwk]}))
    auth = _auth(jwt_jwks_file=str(path))
    good = client_token(private, algorithm="ES256", headers={"kid": "k1"})
    assert auth.authenticate(f"Bearer {good}").tenant == "acme"
    unknown = client_token(private, algorithm="ES256", headers={"kid": "k9"})
    with pytest.raises(Unauthorized):
        auth.authenticate(f"Bearer {unknown}")


def test_a_node_needs_keys_unless_auth_is_off():
    from node.base.config import ConfigError

    with pytest.raises(ConfigError, match="auth none"):
        Config(node_id="n1").validate()
    Config(node_id="n1", auth="none").validate()
    with pytest.raises(ConfigError, match="jwt-algorithms"):
        Config(node_id="n1", jwt_secret=SECRET, jwt_algorithms="none").validate()
