"""(1) The common Python validator pattern accepts Mandate's access tokens for
each signing algorithm: PyJWT + PyJWKClient against the published JWK Set,
exactly as the peer validator (shared/peers/python-validator) does it."""
from __future__ import annotations

import ast
import base64
import json

import jwt
import pytest
import requests
from joserfc.jwk import import_key

from mandate_server import AGENT_SECRET, RESOURCE, SIGNING_ALGS
from peer_validator import (PEER_REQUIRED_SCOPE, VENDORED_SOURCE, class_node, load_token_validator,
                            peer_source)

CLAIMS = ["iss", "sub", "aud", "exp", "iat", "jti", "client_id", "scope"]
PRIVATE_JWK_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}


@pytest.fixture(scope="module", params=SIGNING_ALGS)
def alg_server(request, mandate):
    return mandate(request.param)


def fetch_token(server, scope: str) -> dict:
    r = requests.post(server.token_url, auth=("agent-basic", AGENT_SECRET), timeout=10, data={
        "grant_type": "client_credentials", "resource": RESOURCE, "scope": scope})
    assert r.status_code == 200, r.text
    return r.json()


def other_alg(alg: str) -> str:
    return next(a for a in SIGNING_ALGS if a != alg)


def test_metadata_points_pyjwkclient_at_the_keys(alg_server):
    meta = alg_server.metadata()
    assert meta["issuer"] == alg_server.issuer
    assert meta["jwks_uri"] == alg_server.issuer + "/jwks.json"
    assert meta["access_token_signing_alg_values_supported"] == [alg_server.signing_alg]


def test_jwks_is_public_and_usable_by_pyjwt(alg_server):
    r = requests.get(alg_server.jwks_url, timeout=10)
    assert r.status_code == 200
    keys = r.json()["keys"]
    assert keys, "empty JWK Set"
    for jwk in keys:
        assert not PRIVATE_JWK_MEMBERS & jwk.keys(), f"private member published: {jwk}"
        assert jwk["kid"] and jwk["use"] == "sig" and jwk["alg"] == alg_server.signing_alg
        # PyJWT can build a verification key from every published JWK.
        assert jwt.PyJWK(jwk).algorithm_name == alg_server.signing_alg


def test_pyjwkclient_decode_accepts_token(alg_server):
    alg = alg_server.signing_alg
    response = fetch_token(alg_server, "read")
    assert response["token_type"] == "Bearer"
    assert response["scope"] == "read"
    token = response["access_token"]

    # The validator pattern, step by step.
    jwks_client = jwt.PyJWKClient(alg_server.metadata()["jwks_uri"])
    signing_key = jwks_client.get_signing_key_from_jwt(token)
    claims = jwt.decode(token, signing_key.key, algorithms=[alg], audience=RESOURCE,
                        issuer=alg_server.issuer, options={"require": CLAIMS})

    header = jwt.get_unverified_header(token)
    assert header["typ"] == "at+jwt"  # RFC 9068 section 2.1
    assert header["alg"] == alg
    assert header["kid"] and header["kid"] == signing_key.key_id

    assert claims["iss"] == alg_server.issuer
    assert claims["sub"] == "agent-basic"
    assert claims["aud"] == RESOURCE
    assert claims["client_id"] == "agent-basic"
    assert claims["scope"] == "read"
    assert isinstance(claims["jti"], str) and claims["jti"]
    assert isinstance(claims["iat"], int) and isinstance(claims["exp"], int)
    assert claims["exp"] - claims["iat"] == response["expires_in"] == 15 * 60


def test_kid_is_rfc7638_thumbprint(alg_server):
    """Mandate names keys by their RFC 7638 thumbprint; joserfc agrees on it."""
    token = fetch_token(alg_server, "read")["access_token"]
    kid = jwt.get_unverified_header(token)["kid"]
    jwk = next(k for k in requests.get(alg_server.jwks_url, timeout=10).json()["keys"] if k["kid"] == kid)
    assert import_key(jwk).thumbprint() == kid


def test_each_token_has_its_own_jti(alg_server):
    jtis = {jwt.decode(fetch_token(alg_server, "read")["access_token"],
                       options={"verify_signature": False})["jti"] for _ in range(3)}
    assert len(jtis) == 3


def test_peer_validator_accepts_token(alg_server):
    """The peer's own TokenValidator, with ALGS widened to this algorithm."""
    validator = load_token_validator([alg_server.signing_alg])(
        alg_server.issuer, alg_server.jwks_url, RESOURCE)
    token = fetch_token(alg_server, f"read {PEER_REQUIRED_SCOPE}")["access_token"]
    claims = validator.validate(token)
    assert claims["client_id"] == "agent-basic"
    assert validator.has_scope(claims, PEER_REQUIRED_SCOPE)
    assert validator.has_scope(claims, "read")
    assert not validator.has_scope(claims, "write")


def test_peer_validator_default_algs(alg_server):
    """The peer's default ALGS is RS256: only RS256 tokens pass it unwidened."""
    validator = load_token_validator(["RS256"])(alg_server.issuer, alg_server.jwks_url, RESOURCE)
    token = fetch_token(alg_server, "read")["access_token"]
    if alg_server.signing_alg == "RS256":
        assert validator.validate(token)["sub"] == "agent-basic"
    else:
        with pytest.raises(jwt.InvalidAlgorithmError):
            validator.validate(token)


def test_validator_rejects_wrong_audience_issuer_alg_and_signature(alg_server):
    alg = alg_server.signing_alg
    token = fetch_token(alg_server, "read")["access_token"]
    key = jwt.PyJWKClient(alg_server.jwks_url).get_signing_key_from_jwt(token).key
    with pytest.raises(jwt.InvalidAudienceError):
        jwt.decode(token, key, algorithms=[alg], audience="https://other.example.com",
                   issuer=alg_server.issuer)
    with pytest.raises(jwt.InvalidIssuerError):
        jwt.decode(token, key, algorithms=[alg], audience=RESOURCE, issuer="http://evil.example")
    with pytest.raises(jwt.InvalidAlgorithmError):
        jwt.decode(token, key, algorithms=[other_alg(alg)], audience=RESOURCE,
                   issuer=alg_server.issuer)
    # Same header and signature, different payload (scope widened).
    head, payload, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["scope"] = "read write"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(f"{head}.{forged}.{sig}", key, algorithms=[alg], audience=RESOURCE,
                   issuer=alg_server.issuer)


def test_vendored_validator_matches_peer():
    source = peer_source()
    if source is None:
        pytest.skip("shared/peers/python-validator/app.py is not beside the repository")
    assert ast.dump(class_node(source)) == ast.dump(class_node(VENDORED_SOURCE))
