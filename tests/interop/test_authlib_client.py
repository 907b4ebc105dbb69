"""(2) authlib's OAuth 2.0 client gets tokens from Mandate with each client
authentication method, and uses RFC 7662 introspection and RFC 7009 revocation."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid

import jwt
import pytest
import requests
from authlib.integrations.requests_client import OAuth2Session, OAuthError
from authlib.oauth2.rfc7523 import PrivateKeyJWT, private_key_jwt_sign
from authlib.oauth2.rfc8414 import AuthorizationServerMetadata
from joserfc import jwt as jose_jwt

from mandate_server import AGENT_SECRET, JWT_CLIENTS, RESOURCE

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_LIFETIME = 60  # seconds; Mandate accepts at most 5 minutes by default


class ShortLivedPrivateKeyJWT(PrivateKeyJWT):
    """authlib's PrivateKeyJWT with 60-second assertions.

    Stock PrivateKeyJWT signs assertions that expire one hour after `iat`.
    Its only knob, `claims=`, is a dict that authlib writes the generated
    `jti` into, so putting a fixed `exp` there also fixes `jti` and every
    later request is a replay. This subclass only passes `expires_in` through
    to authlib's own signer.
    """

    def sign(self, auth, token_endpoint):
        return private_key_jwt_sign(auth.client_secret, client_id=auth.client_id,
                                    token_endpoint=token_endpoint, alg=self.alg,
                                    expires_in=ASSERTION_LIFETIME)


class Recorder:
    """An authlib `access_token_response` compliance hook keeping each response."""

    def __init__(self):
        self.responses: list[requests.Response] = []

    def __call__(self, resp):
        self.responses.append(resp)
        return resp


def secret_session(client_id: str, method: str) -> tuple[OAuth2Session, Recorder]:
    session = OAuth2Session(client_id, AGENT_SECRET, token_endpoint_auth_method=method,
                            revocation_endpoint_auth_method=method)
    recorder = Recorder()
    session.register_compliance_hook("access_token_response", recorder)
    return session, recorder


def jwt_session(server, key, alg: str) -> tuple[OAuth2Session, Recorder]:
    session = OAuth2Session(JWT_CLIENTS[alg], key, token_endpoint_auth_method="private_key_jwt",
                            revocation_endpoint_auth_method="private_key_jwt")
    session.register_client_auth_method(ShortLivedPrivateKeyJWT(server.token_url, alg=alg))
    recorder = Recorder()
    session.register_compliance_hook("access_token_response", recorder)
    return session, recorder


def fetch(session: OAuth2Session, server, scope: str = "read"):
    return session.fetch_token(server.token_url, grant_type="client_credentials",
                               resource=RESOURCE, scope=scope)


def assert_token_response(token, recorder: Recorder, scope: str):
    (resp,) = recorder.responses[-1:]
    assert resp.status_code == 200
    assert "no-store" in resp.headers.get("Cache-Control", "")
    assert resp.headers["Content-Type"].startswith("application/json")
    body = resp.json()
    assert set(body) >= {"access_token", "token_type", "expires_in", "scope"}
    assert token["access_token"] == body["access_token"]
    assert token["token_type"] == "Bearer"
    assert isinstance(token["expires_in"], int) and token["expires_in"] > 0
    assert token["scope"] == scope
    assert "refresh_token" not in body  # none for client_credentials (RFC 6749 section 4.4.3)


def validated_claims(server, access_token: str) -> dict:
    key = jwt.PyJWKClient(server.jwks_url).get_signing_key_from_jwt(access_token).key
    return jwt.decode(access_token, key, algorithms=[server.signing_alg], audience=RESOURCE,
                      issuer=server.issuer)


def test_metadata_advertises_what_authlib_needs(server):
    meta = server.metadata()
    assert meta["token_endpoint"] == server.token_url
    assert meta["introspection_endpoint"] == server.introspection_url
    assert meta["revocation_endpoint"] == server.revocation_url
    for kind in ("token", "introspection", "revocation"):
        assert set(meta[f"{kind}_endpoint_auth_methods_supported"]) >= {
            "client_secret_basic", "client_secret_post", "private_key_jwt"}
        assert set(meta[f"{kind}_endpoint_auth_signing_alg_values_supported"]) >= set(JWT_CLIENTS)
    assert "client_credentials" in meta["grant_types_supported"]


def test_metadata_passes_authlib_rfc8414_checks(server):
    meta = AuthorizationServerMetadata(server.metadata())
    checks = [name for name in dir(meta) if name.startswith("validate_")]
    assert len(checks) > 10
    # Every RFC 8414 check authlib has, including the whole-document one.
    for name in checks:
        getattr(meta, name)()
    meta.validate()
    assert meta["response_types_supported"] == ["code"]
    assert meta["code_challenge_methods_supported"] == ["S256"]
    assert meta["authorization_response_iss_parameter_supported"] is True


def test_client_secret_basic(server):
    session, recorder = secret_session("agent-basic", "client_secret_basic")
    token = fetch(session, server, scope="read write")
    assert_token_response(token, recorder, "read write")
    sent = recorder.responses[-1].request
    assert sent.headers["Authorization"].startswith("Basic ")
    assert "client_secret" not in sent.body
    claims = validated_claims(server, token["access_token"])
    assert (claims["client_id"], claims["scope"]) == ("agent-basic", "read write")


def test_client_secret_post(server):
    session, recorder = secret_session("agent-post", "client_secret_post")
    token = fetch(session, server)
    assert_token_response(token, recorder, "read")
    sent = recorder.responses[-1].request
    assert "Authorization" not in sent.headers
    assert "client_secret=" in sent.body
    assert validated_claims(server, token["access_token"])["client_id"] == "agent-post"


@pytest.mark.parametrize("alg", list(JWT_CLIENTS))
def test_private_key_jwt(server, client_keys, alg):
    session, recorder = jwt_session(server, client_keys[alg], alg)
    for _ in range(2):  # each request signs a new assertion with a fresh jti
        token = fetch(session, server)
        assert_token_response(token, recorder, "read")
    sent = recorder.responses[-1].request
    assert "Authorization" not in sent.headers
    assert f"client_assertion_type={requests.utils.quote(ASSERTION_TYPE, safe='')}" in sent.body
    assert validated_claims(server, token["access_token"])["client_id"] == JWT_CLIENTS[alg]


def test_private_key_jwt_as_token_endpoint_auth_method(server, client_keys):
    """The other spelling: the auth object itself as token_endpoint_auth_method."""
    session = OAuth2Session("agent-jwt", client_keys["RS256"],
                            token_endpoint_auth_method=ShortLivedPrivateKeyJWT(server.token_url))
    token = fetch(session, server)
    assert validated_claims(server, token["access_token"])["client_id"] == "agent-jwt"


def test_stock_private_key_jwt_one_hour_assertion(mandate, server, client_keys):
    """authlib's stock PrivateKeyJWT signs 1-hour assertions: beyond Mandate's
    default limit of 5 minutes (refused), within a configured limit of 1h."""
    def stock_session(token_url):
        session = OAuth2Session("agent-jwt", client_keys["RS256"],
                                token_endpoint_auth_method="private_key_jwt")
        session.register_client_auth_method(PrivateKeyJWT(token_url))
        return session

    with pytest.raises(OAuthError) as refused:
        fetch(stock_session(server.token_url), server)
    assert refused.value.error == "invalid_client"

    lenient = mandate("EdDSA", client_assertion_max_lifetime="1h")
    token = fetch(stock_session(lenient.token_url), lenient)
    assert validated_claims(lenient, token["access_token"])["client_id"] == "agent-jwt"


def test_replayed_assertion_is_refused(server, client_keys):
    assertion = private_key_jwt_sign(client_keys["RS256"], client_id="agent-jwt",
                                     token_endpoint=server.token_url, alg="RS256",
                                     expires_in=ASSERTION_LIFETIME)
    form = {"grant_type": "client_credentials", "resource": RESOURCE, "scope": "read",
            "client_assertion_type": ASSERTION_TYPE, "client_assertion": assertion}
    first = requests.post(server.token_url, data=form, timeout=10)
    assert first.status_code == 200, first.text

    replay = requests.post(server.token_url, data=form, timeout=10)
    assert replay.status_code == 401
    assert replay.json()["error"] == "invalid_client"
    assert "no-store" in replay.headers["Cache-Control"]
    # No Basic was tried, so no Basic challenge is due.
    assert not replay.headers.get("WWW-Authenticate", "").lower().startswith("basic")

    # The jti is spent everywhere, not only at the token endpoint.
    elsewhere = requests.post(server.introspection_url, timeout=10, data={
        "token": first.json()["access_token"],
        "client_assertion_type": ASSERTION_TYPE, "client_assertion": assertion})
    assert elsewhere.status_code == 401
    assert elsewhere.json()["error"] == "invalid_client"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unsigned_part(header: dict, claims: dict) -> str:
    return _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(claims).encode())


def hs256_with_public_key(key, claims: dict) -> str:
    """The algorithm-confusion forgery: HMAC keyed with the client's public key."""
    signing_input = _unsigned_part({"alg": "HS256", "typ": "JWT"}, claims)
    mac = hmac.new(key.as_pem(private=False), signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + _b64(mac)


def unsigned(claims: dict) -> str:
    return _unsigned_part({"alg": "none"}, claims) + "."


# name: (claim overrides (None drops the claim), JWS alg or forgery, accepted?)
ASSERTIONS = {
    "aud-token-endpoint": ({}, "RS256", True),
    "aud-issuer": ({"aud": "{issuer}"}, "RS256", True),
    "aud-list": ({"aud": ["https://other.example", "{issuer}"]}, "RS256", True),
    "exp-5-minutes": ({"exp": 300}, "RS256", True),
    "exp-10-minutes": ({"exp": 600}, "RS256", False),
    "expired": ({"exp": -120}, "RS256", False),
    "no-exp": ({"exp": None}, "RS256", False),
    "no-jti": ({"jti": None}, "RS256", False),
    "iss-not-sub": ({"sub": "agent-basic"}, "RS256", False),
    "aud-foreign": ({"aud": "https://other.example"}, "RS256", False),
    "aud-introspection-endpoint": ({"aud": "{issuer}/introspect"}, "RS256", False),
    "alg-PS256": ({}, "PS256", False),
    "alg-HS256-public-key": ({}, "HS256-confusion", False),
    "alg-none": ({}, "none", False),
}


@pytest.mark.parametrize("name", list(ASSERTIONS))
def test_assertion_policy(server, client_keys, name):
    """private_key_jwt assertions made in Python (joserfc, authlib's signer):
    RFC 7523 section 3 checks plus Mandate's allowlist and lifetime limit."""
    overrides, alg, accepted = ASSERTIONS[name]
    now = int(time.time())
    claims = {"iss": "agent-jwt", "sub": "agent-jwt", "aud": server.token_url, "iat": now,
              "exp": now + ASSERTION_LIFETIME, "jti": uuid.uuid4().hex}
    for claim, value in overrides.items():
        if value is None:
            del claims[claim]
        elif claim == "exp":
            claims["exp"] = now + value
        elif claim == "aud":
            fill = lambda v: v.replace("{issuer}", server.issuer)  # noqa: E731
            claims["aud"] = [fill(v) for v in value] if isinstance(value, list) else fill(value)
        else:
            claims[claim] = value
    key = client_keys["RS256"]
    if alg == "HS256-confusion":
        assertion = hs256_with_public_key(key, claims)
    elif alg == "none":
        assertion = unsigned(claims)
    else:
        assertion = jose_jwt.encode({"alg": alg}, claims, key, algorithms=[alg])
    resp = requests.post(server.token_url, timeout=10, data={
        "grant_type": "client_credentials", "resource": RESOURCE, "scope": "read",
        "client_assertion_type": ASSERTION_TYPE, "client_assertion": assertion})
    if accepted:
        assert resp.status_code == 200, resp.text
    else:
        assert resp.status_code == 401, resp.text
        assert resp.json()["error"] == "invalid_client"
        assert "no-store" in resp.headers["Cache-Control"]


SESSIONS = {
    "client_secret_basic": lambda server, keys: secret_session("agent-basic", "client_secret_basic"),
    "client_secret_post": lambda server, keys: secret_session("agent-post", "client_secret_post"),
    "private_key_jwt": lambda server, keys: jwt_session(server, keys["ES256"], "ES256"),
}


@pytest.mark.parametrize("method", list(SESSIONS))
def test_introspection_then_revocation(server, client_keys, method):
    session, _ = SESSIONS[method](server, client_keys)
    access_token = fetch(session, server)["access_token"]
    claims = validated_claims(server, access_token)

    active = session.introspect_token(server.introspection_url, token=access_token)
    assert active.status_code == 200
    assert "no-store" in active.headers["Cache-Control"]
    body = active.json()
    assert body["active"] is True
    for name in ("iss", "sub", "aud", "exp", "iat", "jti", "client_id", "scope"):
        assert body[name] == claims[name], name
    assert body.get("token_type", "Bearer") == "Bearer"

    revoked = session.revoke_token(server.revocation_url, token=access_token,
                                   token_type_hint="access_token")
    assert revoked.status_code == 200

    after = session.introspect_token(server.introspection_url, token=access_token)
    assert after.status_code == 200
    assert after.json() == {"active": False}

    # RFC 7009 section 2.2: revoking again (or anything unknown) still answers 200.
    assert session.revoke_token(server.revocation_url, token=access_token).status_code == 200


def test_introspection_of_garbage_is_inactive(server):
    session, _ = secret_session("agent-basic", "client_secret_basic")
    resp = session.introspect_token(server.introspection_url, token="not-a-token")
    assert resp.status_code == 200
    assert resp.json() == {"active": False}


def test_introspection_with_plain_requests(server):
    session, _ = secret_session("agent-basic", "client_secret_basic")
    access_token = fetch(session, server)["access_token"]
    resp = requests.post(server.introspection_url, auth=("agent-basic", AGENT_SECRET),
                         data={"token": access_token}, timeout=10)
    assert resp.status_code == 200 and resp.json()["active"] is True
    assert requests.post(server.revocation_url, auth=("agent-basic", AGENT_SECRET),
                         data={"token": access_token}, timeout=10).status_code == 200
    resp = requests.post(server.introspection_url, auth=("agent-basic", AGENT_SECRET),
                         data={"token": access_token}, timeout=10)
    assert resp.json() == {"active": False}
