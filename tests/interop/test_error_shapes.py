"""(3) Token endpoint errors as a Python client sees them (RFC 6749 section 5.2,
RFC 8707), and `Cache-Control: no-store` on every token response."""
from __future__ import annotations

import pytest
import requests
from authlib.integrations.requests_client import OAuth2Session, OAuthError

from mandate_server import AGENT_SECRET, RESOURCE

WRONG_SECRET = "not-the-secret-0123456789-abcdefghijkl"
CC = {"grant_type": "client_credentials"}


def post_token(server, data: dict, auth=None) -> requests.Response:
    return requests.post(server.token_url, data=data, auth=auth, timeout=10)


def assert_error(resp: requests.Response, status: int, code: str) -> dict:
    assert resp.status_code == status, resp.text
    assert resp.headers["Content-Type"].startswith("application/json")
    assert "no-store" in resp.headers.get("Cache-Control", "")
    body = resp.json()
    assert body["error"] == code
    assert isinstance(body.get("error_description", ""), str)
    return body


def basic_challenge(resp: requests.Response) -> str | None:
    value = resp.headers.get("WWW-Authenticate")
    return value if value and value.lower().startswith("basic") else None


def authlib_error(server, client_id, secret, method, **params) -> OAuthError:
    session = OAuth2Session(client_id, secret, token_endpoint_auth_method=method)
    with pytest.raises(OAuthError) as caught:
        session.fetch_token(server.token_url, grant_type="client_credentials", **params)
    return caught.value


@pytest.mark.parametrize("client_id", ["agent-basic", "no-such-client"])
def test_bad_basic_credentials_get_401_with_basic_challenge(server, client_id):
    resp = post_token(server, {**CC, "resource": RESOURCE}, auth=(client_id, WRONG_SECRET))
    assert_error(resp, 401, "invalid_client")
    challenge = basic_challenge(resp)
    assert challenge, f"no Basic challenge: {resp.headers.get('WWW-Authenticate')!r}"
    assert "realm=" in challenge  # RFC 7617 section 2
    assert authlib_error(server, client_id, WRONG_SECRET, "client_secret_basic",
                         resource=RESOURCE).error == "invalid_client"


def test_bad_post_credentials_get_401_without_basic_challenge(server):
    resp = post_token(server, {**CC, "resource": RESOURCE, "client_id": "agent-post",
                               "client_secret": WRONG_SECRET})
    assert_error(resp, 401, "invalid_client")
    assert basic_challenge(resp) is None
    assert authlib_error(server, "agent-post", WRONG_SECRET, "client_secret_post",
                         resource=RESOURCE).error == "invalid_client"


def test_registered_auth_method_is_enforced(server):
    """agent-basic is a client_secret_basic client: its right secret in the body fails."""
    resp = post_token(server, {**CC, "resource": RESOURCE, "client_id": "agent-basic",
                               "client_secret": AGENT_SECRET})
    assert_error(resp, 401, "invalid_client")


def test_unknown_resource_is_invalid_target(server):
    resp = post_token(server, {**CC, "resource": "https://unknown.example.com", "scope": "read"},
                      auth=("agent-basic", AGENT_SECRET))
    assert_error(resp, 400, "invalid_target")
    assert authlib_error(server, "agent-basic", AGENT_SECRET, "client_secret_basic",
                         resource="https://unknown.example.com").error == "invalid_target"


@pytest.mark.parametrize("client_id,method,scope", [
    ("agent-post", "client_secret_post", "read write"),  # defined by the resource, not allowed to the client
    ("agent-basic", "client_secret_basic", "read admin"),  # defined nowhere
])
def test_scope_beyond_allowed_is_invalid_scope(server, client_id, method, scope):
    if method == "client_secret_basic":
        resp = post_token(server, {**CC, "resource": RESOURCE, "scope": scope},
                          auth=(client_id, AGENT_SECRET))
    else:
        resp = post_token(server, {**CC, "resource": RESOURCE, "scope": scope,
                                   "client_id": client_id, "client_secret": AGENT_SECRET})
    assert_error(resp, 400, "invalid_scope")
    assert authlib_error(server, client_id, AGENT_SECRET, method, resource=RESOURCE,
                         scope=scope).error == "invalid_scope"


BASIC = ("agent-basic", AGENT_SECRET)
TOKEN_REQUESTS = {
    # name: (form, basic auth, expected status)
    "ok-basic": ({**CC, "resource": RESOURCE}, BASIC, 200),
    "ok-post": ({**CC, "resource": RESOURCE, "client_id": "agent-post",
                 "client_secret": AGENT_SECRET}, None, 200),
    "ok-default-resource": (CC, BASIC, 200),  # the client's only resource
    "wrong-secret": ({**CC, "resource": RESOURCE}, ("agent-basic", WRONG_SECRET), 401),
    "no-credentials": ({**CC, "resource": RESOURCE}, None, 401),
    "unknown-resource": ({**CC, "resource": "https://unknown.example.com"}, BASIC, 400),
    "bad-scope": ({**CC, "resource": RESOURCE, "scope": "admin"}, BASIC, 400),
    "bad-grant": ({"grant_type": "password", "username": "u", "password": "p"}, BASIC, 400),
    "no-grant": ({"resource": RESOURCE}, BASIC, 400),
}


@pytest.mark.parametrize("name", list(TOKEN_REQUESTS))
def test_every_token_response_is_no_store(server, name):
    form, auth, status = TOKEN_REQUESTS[name]
    resp = post_token(server, form, auth=auth)
    assert resp.status_code == status, resp.text
    assert "no-store" in [v.strip().lower() for v in resp.headers["Cache-Control"].split(",")]
