"""(5) DPoP (RFC 9449) proofs made with joserfc are accepted by Mandate at the
token endpoint and at the gateway, and bad proofs are refused with the errors
RFC 9449 names.

One Mandate (`dpop_gateway.DpopGatewayMandate`) runs with its default DPoP
settings (server nonces required at the token endpoint) and a plain `http`
gateway route `/agents/pay` in front of a tiny upstream (`dpop_gateway.Upstream`).
Proofs are signed with joserfc keys (Ed25519, P-256, RSA); thumbprints are
joserfc's RFC 7638 ones; a stock authlib `OAuth2Session` gets a DPoP token too.

(a) the token endpoint: nonce challenge, binding, refusals;
(b) introspection of a bound token;
(c) the gateway: proof of possession, refusals and their challenges.
"""
from __future__ import annotations

import base64
import http.client
import json
import re
import time
from urllib.parse import urlencode, urlsplit

import pytest
import requests
from authlib.integrations.requests_client import OAuth2Session, OAuthError
from authlib.integrations.base_client import UnsupportedTokenTypeError
from joserfc import jwt as jose_jwt
from joserfc.jwk import KeySet

from dpop_gateway import (BOUND_ONLY, CALLER, PAY_RESOURCE, PROOF_ALGS, ROUTE, DpopGatewayMandate, DpopKey,
                          Upstream)
from mandate_server import AGENT_SECRET, RESOURCE

SCOPE = "pay:read"
# RFC 9449 §8.1: nonce = 1*NQCHAR, NQCHAR = %x21 / %x23-5B / %x5D-7E.
NONCE_SYNTAX = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")
PAYMENT = ROUTE + "/payments/42"  # a path behind the gateway route
HOUR = 3600


# --- fixtures ---------------------------------------------------------------

@pytest.fixture(scope="module")
def upstream():
    service = Upstream().start()
    yield service
    service.stop()


@pytest.fixture(scope="module")
def mandate_gw(tmp_path_factory, upstream) -> DpopGatewayMandate:
    """This module's Mandate (EdDSA access tokens), with the pay route in front of `upstream`."""
    mandate = DpopGatewayMandate(tmp_path_factory.mktemp("dpop-gateway"), "EdDSA", upstream=upstream.url).start()
    yield mandate
    mandate.stop()


@pytest.fixture(scope="module")
def holders(mandate_gw):
    """`holders(alg)`: a joserfc key and an access token bound to it, one per algorithm."""
    made: dict[str, tuple[DpopKey, str]] = {}

    def get(alg: str = "ES256") -> tuple[DpopKey, str]:
        if alg not in made:
            key = DpopKey(alg)
            made[alg] = (key, bound_token(mandate_gw, key))
        return made[alg]

    return get


# --- helpers ----------------------------------------------------------------

def token_post(mandate_gw, proof: str | None, *, client: str = CALLER, resource: str = PAY_RESOURCE,
               scope: str = SCOPE) -> requests.Response:
    headers = {"DPoP": proof} if proof is not None else {}
    form = {"grant_type": "client_credentials", "resource": resource, "scope": scope}
    return requests.post(mandate_gw.token_url, data=form, auth=(client, AGENT_SECRET), headers=headers, timeout=10)


def nonce_headers(resp: requests.Response) -> list[str]:
    """Every `DPoP-Nonce` header line of a response (not comma-joined)."""
    return resp.raw.headers.getlist("DPoP-Nonce")


def assert_oauth_error(resp: requests.Response, status: int, error: str) -> dict:
    assert resp.status_code == status, (resp.status_code, resp.text)
    body = resp.json()
    assert body["error"] == error, body
    assert "access_token" not in body
    assert "no-store" in resp.headers.get("Cache-Control", "")
    return body


def fresh_nonce(mandate_gw, key: DpopKey) -> str:
    """The nonce the token endpoint hands out to a proof without one."""
    resp = token_post(mandate_gw, key.proof("POST", mandate_gw.token_url))
    assert_oauth_error(resp, 400, "use_dpop_nonce")
    (nonce,) = nonce_headers(resp)
    return nonce


def bound_token(mandate_gw, key: DpopKey, *, client: str = CALLER, resource: str = PAY_RESOURCE,
                scope: str = SCOPE) -> str:
    nonce = fresh_nonce(mandate_gw, key)
    resp = token_post(mandate_gw, key.proof("POST", mandate_gw.token_url, nonce=nonce), client=client,
                      resource=resource, scope=scope)
    assert resp.status_code == 200, resp.text
    assert resp.json()["token_type"] == "DPoP"
    return resp.json()["access_token"]


def verified_claims(mandate_gw, access_token: str, audience: str = PAY_RESOURCE) -> dict:
    """The access token checked with joserfc against Mandate's JWKS."""
    keys = KeySet.import_key_set(requests.get(mandate_gw.jwks_url, timeout=10).json())
    token = jose_jwt.decode(access_token, keys, algorithms=[mandate_gw.signing_alg])
    jose_jwt.JWTClaimsRegistry(iss={"essential": True, "value": mandate_gw.issuer},
                               aud={"essential": True, "value": audience},
                               exp={"essential": True}).validate(token.claims)
    assert token.header["typ"] == "at+jwt"
    return token.claims


CHALLENGE_PART = re.compile(r'([A-Za-z][\w.-]*)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,]*)|([A-Za-z][\w.-]*)')


def parse_challenges(value: str) -> dict[str, dict[str, str]]:
    """A `WWW-Authenticate` value (RFC 9110 §11.6.1, one or more challenges with
    auth-params) -> {scheme: {param: value}}."""
    challenges: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for m in CHALLENGE_PART.finditer(value):
        name, raw, scheme = m.groups()
        if scheme:
            current = challenges.setdefault(scheme, {})
        elif current is not None:
            current[name.lower()] = raw[1:-1] if raw.startswith('"') else raw
    return challenges


def gateway_call(mandate_gw, path: str, *, token: str, proof: str | None, scheme: str = "DPoP",
                 method: str = "GET") -> requests.Response:
    headers = {"Authorization": f"{scheme} {token}"}
    if proof is not None:
        headers["DPoP"] = proof
    return requests.request(method, mandate_gw.issuer + path, headers=headers,
                            json={"amount": 1} if method == "POST" else None, timeout=10)


def raw_request(url: str, method: str, headers: list[tuple[str, str]],
                body: bytes = b"") -> tuple[int, str, bytes]:
    """One request with the header lines exactly as given (requests would merge
    repeated names); returns status, the WWW-Authenticate value and the body."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.putrequest(method, parts.path)
        for name, value in headers:
            conn.putheader(name, value)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        return resp.status, resp.getheader("WWW-Authenticate") or "", resp.read()
    finally:
        conn.close()


def basic(client: str) -> str:
    return "Basic " + base64.b64encode(f"{client}:{AGENT_SECRET}".encode()).decode()


# --- (a) the token endpoint -------------------------------------------------

def test_metadata_lists_the_proof_algorithms(mandate_gw):
    algs = mandate_gw.metadata()["dpop_signing_alg_values_supported"]
    assert set(algs) >= set(PROOF_ALGS)
    # RFC 9449 §5.1 / §11.6: asymmetric algorithms only.
    assert not {"none", "HS256", "HS384", "HS512"} & set(algs)


@pytest.mark.parametrize("alg", list(PROOF_ALGS))
def test_nonce_challenge_then_a_bound_token(mandate_gw, alg):
    """RFC 9449 §8: the first proof (no nonce) gets 400 use_dpop_nonce and one
    DPoP-Nonce header; the retry carrying it gets a DPoP token whose `cnf.jkt` is
    joserfc's RFC 7638 thumbprint of the proof key (§6.1)."""
    key = DpopKey(alg)
    first = token_post(mandate_gw, key.proof("POST", mandate_gw.token_url))
    assert_oauth_error(first, 400, "use_dpop_nonce")
    nonces = nonce_headers(first)
    assert len(nonces) == 1, nonces  # "at most one" (§8)
    assert NONCE_SYNTAX.fullmatch(nonces[0]), nonces

    second = token_post(mandate_gw, key.proof("POST", mandate_gw.token_url, nonce=nonces[0]))
    assert second.status_code == 200, second.text
    assert "no-store" in second.headers["Cache-Control"]
    body = second.json()
    assert body["token_type"] == "DPoP"  # §5: a client that asked for binding checks this
    assert body["scope"] == SCOPE
    claims = verified_claims(mandate_gw, body["access_token"])
    assert claims["cnf"] == {"jkt": key.thumbprint()}
    assert (claims["client_id"], claims["scope"]) == (CALLER, SCOPE)


def test_a_token_request_without_proof_stays_bearer(mandate_gw):
    """Control: the same client without a DPoP header gets an unbound Bearer token."""
    resp = token_post(mandate_gw, None)
    assert resp.status_code == 200, resp.text
    assert resp.json()["token_type"] == "Bearer"
    assert "cnf" not in verified_claims(mandate_gw, resp.json()["access_token"])


def test_an_unknown_nonce_gets_a_new_one(mandate_gw):
    """§8: a proof with a nonce the server did not issue is refused with
    use_dpop_nonce, and the answer carries a nonce to retry with (which works)."""
    key = DpopKey("ES256")
    resp = token_post(mandate_gw, key.proof("POST", mandate_gw.token_url, nonce="made-up-nonce"))
    assert_oauth_error(resp, 400, "use_dpop_nonce")
    (nonce,) = nonce_headers(resp)
    assert nonce != "made-up-nonce"
    retry = token_post(mandate_gw, key.proof("POST", mandate_gw.token_url, nonce=nonce))
    assert retry.status_code == 200, retry.text


def test_authlib_session_gets_a_dpop_token(mandate_gw):
    """A stock authlib `OAuth2Session` (client_secret_basic) with a joserfc proof in
    `headers=`: it surfaces use_dpop_nonce as an OAuthError, the nonce is in the
    response a compliance hook sees, and the retry returns a DPoP token."""
    key = DpopKey("EdDSA")
    session = OAuth2Session(CALLER, AGENT_SECRET, token_endpoint_auth_method="client_secret_basic")
    seen: list[requests.Response] = []
    session.register_compliance_hook("access_token_response", lambda r: seen.append(r) or r)
    fetch = dict(grant_type="client_credentials", resource=PAY_RESOURCE, scope=SCOPE)
    with pytest.raises(OAuthError) as refused:
        session.fetch_token(mandate_gw.token_url, headers={"DPoP": key.proof("POST", mandate_gw.token_url)}, **fetch)
    assert refused.value.error == "use_dpop_nonce"
    (nonce,) = nonce_headers(seen[-1])
    token = session.fetch_token(mandate_gw.token_url,
                                headers={"DPoP": key.proof("POST", mandate_gw.token_url, nonce=nonce)}, **fetch)
    assert token["token_type"] == "DPoP"
    assert verified_claims(mandate_gw, token["access_token"])["cnf"]["jkt"] == key.thumbprint()
    # authlib 1.9 cannot present it, though: its session signs requests for Bearer
    # tokens only (see README.md); the gateway tests below send DPoP by hand.
    with pytest.raises(UnsupportedTokenTypeError):
        session.get(mandate_gw.route_url + "/payments/42", timeout=10)


@pytest.mark.parametrize("htu", ["{url}?x=1", "{url}#top", "HTTP://{rest}"])
def test_token_endpoint_htu_ignores_query_fragment_and_scheme_case(mandate_gw, htu):
    """§4.3 check 9: `htu` matches ignoring query and fragment (MUST), after
    scheme-based normalization (SHOULD, RFC 3986 §6.2.3)."""
    key = DpopKey("ES256")
    url = mandate_gw.token_url
    proof = key.proof("POST", htu.format(url=url, rest=url.split("://", 1)[1]), nonce=fresh_nonce(mandate_gw, key))
    resp = token_post(mandate_gw, proof)
    assert resp.status_code == 200, resp.text


# Each builds a bad proof from (key, token URL, nonce). All carry a valid nonce,
# so the nonce is never the reason; RFC 9449 §4.3 names each check.
BAD_TOKEN_PROOFS = {
    "stale iat": lambda k, url, n: k.proof("POST", url, nonce=n, iat=int(time.time()) - HOUR),
    "iat in the future": lambda k, url, n: k.proof("POST", url, nonce=n, iat=int(time.time()) + HOUR),
    "htu of another endpoint": lambda k, url, n: k.proof("POST", url.replace("/token", "/introspect"), nonce=n),
    "htu of another origin": lambda k, url, n: k.proof("POST", "https://as.example.com/token", nonce=n),
    "htm GET": lambda k, url, n: k.proof("GET", url, nonce=n),
    "private key in jwk": lambda k, url, n: k.proof("POST", url, nonce=n,
                                                   header={"jwk": k.key.as_dict(private=True)}),
    "alg none": lambda k, url, n: k.unsigned_proof("POST", url, nonce=n),
    "HS256 keyed with the public jwk": lambda k, url, n: k.hmac_proof("POST", url, nonce=n),
    "typ JWT": lambda k, url, n: k.proof("POST", url, nonce=n, header={"typ": "JWT"}),
    "signed by a key other than jwk": lambda k, url, n: k.proof("POST", url, nonce=n,
                                                               signing_key=DpopKey(k.alg).key),
    "no jti": lambda k, url, n: k.proof("POST", url, nonce=n, drop=("jti",)),
    "not a JWT": lambda k, url, n: "not.a.proof",
}


@pytest.mark.parametrize("alg", ["EdDSA", "ES256"])
@pytest.mark.parametrize("case", list(BAD_TOKEN_PROOFS))
def test_token_endpoint_refuses_bad_proofs(mandate_gw, alg, case):
    key = DpopKey(alg)
    nonce = fresh_nonce(mandate_gw, key)
    assert_oauth_error(token_post(mandate_gw, BAD_TOKEN_PROOFS[case](key, mandate_gw.token_url, nonce)),
                       400, "invalid_dpop_proof")


@pytest.mark.parametrize("alg", ["EdDSA", "ES256"])
def test_token_endpoint_refuses_a_replayed_proof(mandate_gw, alg):
    """§11.1: the same proof (same `jti`) a second time is refused."""
    key = DpopKey(alg)
    proof = key.proof("POST", mandate_gw.token_url, nonce=fresh_nonce(mandate_gw, key))
    assert token_post(mandate_gw, proof).status_code == 200
    assert_oauth_error(token_post(mandate_gw, proof), 400, "invalid_dpop_proof")


def test_token_endpoint_refuses_two_dpop_headers(mandate_gw):
    """§4.3 check 1: not more than one DPoP header."""
    key = DpopKey("ES256")
    nonce = fresh_nonce(mandate_gw, key)
    proofs = [key.proof("POST", mandate_gw.token_url, nonce=nonce) for _ in range(2)]
    status, _, body = raw_request(mandate_gw.token_url, "POST", [
        ("Authorization", basic(CALLER)),
        ("Content-Type", "application/x-www-form-urlencoded"),
        ("DPoP", proofs[0]), ("DPoP", proofs[1]),
    ], urlencode({"grant_type": "client_credentials", "resource": PAY_RESOURCE, "scope": SCOPE}).encode())
    assert status == 400, body
    assert json.loads(body)["error"] == "invalid_dpop_proof"


def test_a_client_that_must_use_dpop(mandate_gw):
    """§5.2 (`dpop_bound_access_tokens`, Mandate's `require_dpop`): a token request
    without a proof MUST be rejected; with one, the token is bound."""
    resp = token_post(mandate_gw, None, client=BOUND_ONLY)
    assert resp.status_code == 400, resp.text
    # RFC 9449 names no code for this; both are fitting (Mandate answers invalid_dpop_proof).
    assert resp.json()["error"] in {"invalid_dpop_proof", "invalid_request"}
    assert "access_token" not in resp.json()
    key = DpopKey("EdDSA")
    token = bound_token(mandate_gw, key, client=BOUND_ONLY)
    assert verified_claims(mandate_gw, token)["cnf"]["jkt"] == key.thumbprint()


# --- (b) introspection -----------------------------------------------------

def introspect(mandate_gw, token: str) -> dict:
    resp = requests.post(mandate_gw.introspection_url, data={"token": token}, auth=("agent-basic", AGENT_SECRET),
                         timeout=10)
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_introspection_reports_the_binding(mandate_gw, holders):
    """§6.2: the introspection response carries the same `cnf.jkt`."""
    key, token = holders("ES256")
    body = introspect(mandate_gw, token)
    assert body["active"] is True
    assert body["cnf"] == {"jkt": key.thumbprint()}


def test_introspection_token_type_of_a_bound_token(mandate_gw, holders):
    _, token = holders("ES256")
    body = introspect(mandate_gw, token)
    assert body.get("token_type", "DPoP") == "DPoP", body


# --- (c) the gateway --------------------------------------------------------

def assert_dpop_challenge(status: int, www_authenticate: str, errors: set[str], alg: str) -> dict:
    """401 with a `DPoP` challenge (RFC 9449 §7.1) whose `error` is one of `errors`,
    and whose `algs` (SHOULD) lists the proof's algorithm."""
    assert status == 401, (status, www_authenticate)
    challenges = parse_challenges(www_authenticate)
    assert "DPoP" in challenges, www_authenticate
    params = challenges["DPoP"]
    assert params.get("error") in errors, www_authenticate
    assert alg in params.get("algs", "").split(), www_authenticate
    return params


def assert_refused(resp: requests.Response, errors: set[str], alg: str) -> dict:
    return assert_dpop_challenge(resp.status_code, resp.headers.get("WWW-Authenticate", ""), errors, alg)


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize("alg", ["EdDSA", "ES256"])
def test_gateway_accepts_proof_of_possession(mandate_gw, upstream, holders, alg, method):
    """`Authorization: DPoP <token>` + a proof with `htm`, `htu` and `ath` for
    this request: forwarded, with the caller's identity and without the token."""
    key, token = holders(alg)
    before = upstream.count()
    resp = gateway_call(mandate_gw, PAYMENT, token=token, method=method,
                        proof=key.proof(method, mandate_gw.issuer + PAYMENT, access_token=token))
    assert resp.status_code == 200, resp.text
    assert resp.json()["method"] == method
    assert upstream.count() == before + 1
    seen = upstream.last()["headers"]
    assert seen["x-mandate-client-id"] == CALLER
    assert "authorization" not in seen


def test_gateway_htu_ignores_the_query(mandate_gw, holders):
    """§4.3 check 9: `htu` is compared without the query."""
    key, token = holders("EdDSA")
    resp = gateway_call(mandate_gw, PAYMENT + "?page=2", token=token,
                        proof=key.proof("GET", mandate_gw.issuer + PAYMENT, access_token=token))
    assert resp.status_code == 200, resp.text


@pytest.mark.parametrize("alg", ["EdDSA", "ES256"])
def test_gateway_refuses_a_replayed_proof(mandate_gw, upstream, holders, alg):
    key, token = holders(alg)
    proof = key.proof("GET", mandate_gw.issuer + PAYMENT, access_token=token)
    assert gateway_call(mandate_gw, PAYMENT, token=token, proof=proof).status_code == 200
    before = upstream.count()
    assert_refused(gateway_call(mandate_gw, PAYMENT, token=token, proof=proof), {"invalid_dpop_proof"}, alg)
    assert upstream.count() == before


# How each bad call is made: (scheme, proof from (key, bound token, htu of the
# request)), for a GET of PAYMENT with the bound token; and the `error` the DPoP
# challenge may carry. RFC 9449 §7.1: invalid_dpop_proof when the proof fails a
# §4.3 check; invalid_token for a token that is bound but not met (Figure 16,
# "Invalid DPoP key binding"; a key mismatch is also a §4.3 check 12 failure, so
# either code is right there) and for the bound token sent as Bearer (§7.2).
PROOF_ERROR = {"invalid_dpop_proof"}
TOKEN_ERROR = {"invalid_token"}
BAD_GATEWAY_CALLS = {
    "stale iat": ("DPoP", lambda k, t, u: k.proof("GET", u, access_token=t, iat=int(time.time()) - HOUR),
                  PROOF_ERROR),
    "iat in the future": ("DPoP", lambda k, t, u: k.proof("GET", u, access_token=t, iat=int(time.time()) + HOUR),
                          PROOF_ERROR),
    "htu of another path": ("DPoP", lambda k, t, u: k.proof("GET", u.replace("/42", "/43"), access_token=t),
                            PROOF_ERROR),
    "htu of another origin": ("DPoP", lambda k, t, u: k.proof("GET", "https://pay.example.com" + PAYMENT,
                                                              access_token=t), PROOF_ERROR),
    "htm POST on a GET": ("DPoP", lambda k, t, u: k.proof("POST", u, access_token=t), PROOF_ERROR),
    "no ath": ("DPoP", lambda k, t, u: k.proof("GET", u), PROOF_ERROR),
    "ath of another token": ("DPoP", lambda k, t, u: k.proof("GET", u, access_token=t + "x"), PROOF_ERROR),
    "alg none": ("DPoP", lambda k, t, u: k.unsigned_proof("GET", u, access_token=t), PROOF_ERROR),
    "HS256 keyed with the public jwk": ("DPoP", lambda k, t, u: k.hmac_proof("GET", u, access_token=t),
                                        PROOF_ERROR),
    "private key in jwk": ("DPoP", lambda k, t, u: k.proof("GET", u, access_token=t,
                                                           header={"jwk": k.key.as_dict(private=True)}),
                           PROOF_ERROR),
    "no proof": ("DPoP", lambda k, t, u: None, PROOF_ERROR),
    "proof from another key": ("DPoP", lambda k, t, u: DpopKey(k.alg).proof("GET", u, access_token=t),
                               TOKEN_ERROR | PROOF_ERROR),
    "bound token as Bearer": ("Bearer", lambda k, t, u: None, TOKEN_ERROR),
    "bound token as Bearer with a proof": ("Bearer", lambda k, t, u: k.proof("GET", u, access_token=t),
                                           TOKEN_ERROR),
}


@pytest.mark.parametrize("alg", ["EdDSA", "ES256"])
@pytest.mark.parametrize("case", list(BAD_GATEWAY_CALLS))
def test_gateway_refuses(mandate_gw, upstream, holders, alg, case):
    key, token = holders(alg)
    scheme, build, errors = BAD_GATEWAY_CALLS[case]
    before = upstream.count()
    resp = gateway_call(mandate_gw, PAYMENT, token=token, scheme=scheme,
                        proof=build(key, token, mandate_gw.issuer + PAYMENT))
    assert_refused(resp, errors, alg)
    assert upstream.count() == before, "a refused call reached the upstream"


def test_gateway_refuses_two_proofs(mandate_gw, upstream, holders):
    """§4.3 check 1, at the resource: two DPoP headers, each a good proof."""
    key, token = holders("ES256")
    proofs = [key.proof("GET", mandate_gw.issuer + PAYMENT, access_token=token) for _ in range(2)]
    before = upstream.count()
    status, challenge, _ = raw_request(mandate_gw.issuer + PAYMENT, "GET", [
        ("Authorization", f"DPoP {token}"), ("DPoP", proofs[0]), ("DPoP", proofs[1])])
    assert_dpop_challenge(status, challenge, PROOF_ERROR, "ES256")
    assert upstream.count() == before


def test_gateway_unbound_token_needs_the_bearer_scheme(mandate_gw, upstream):
    """An unbound token under the DPoP scheme is refused with a DPoP challenge
    (Mandate's rule, policy.rs `check_binding`); the same token as Bearer passes."""
    plain = token_post(mandate_gw, None).json()["access_token"]
    key = DpopKey("ES256")
    resp = gateway_call(mandate_gw, PAYMENT, token=plain,
                        proof=key.proof("GET", mandate_gw.issuer + PAYMENT, access_token=plain))
    assert_refused(resp, TOKEN_ERROR, "ES256")
    assert gateway_call(mandate_gw, PAYMENT, token=plain, proof=None, scheme="Bearer").status_code == 200


def test_gateway_bad_token_under_the_dpop_scheme_gets_a_dpop_challenge(mandate_gw, upstream):
    key = DpopKey("ES256")
    other_audience = bound_token(mandate_gw, key, client="agent-basic", resource=RESOURCE, scope="read")
    before = upstream.count()
    resp = gateway_call(mandate_gw, PAYMENT, token=other_audience,
                        proof=key.proof("GET", mandate_gw.issuer + PAYMENT, access_token=other_audience))
    assert upstream.count() == before
    assert_refused(resp, TOKEN_ERROR, "ES256")
