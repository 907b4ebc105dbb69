"""(4) An A2A agent built with the official `a2a-sdk` runs behind Mandate's
gateway, and the SDK's own client talks to it through the gateway.

The agent (`a2a_agent.py`) is a separate process on a free port; Mandate's
gateway route `/agents/echo` is in front of it (`a2a_gateway.gateway_config`).
The client side uses only the SDK (`A2ACardResolver`, `ClientFactory`, its
signature verifier), httpx, PyJWT and `rfc8785`.

(a) the card, (b) send and stream, (c) no token, (d) too narrow a scope,
(e) what the agent sees, (f) an agent that also speaks v0.3. The xfail
test in (f) is a known gateway/SDK difference, described in its reason and in README.md.
"""
from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid

import httpx
import jwt
import pytest
import requests
import rfc8785
from a2a.client import A2ACardResolver, A2AClientError, ClientConfig, ClientFactory
from a2a.helpers import get_artifact_text
from a2a.types import AgentCard, GetTaskRequest, Message, Part, Role, SendMessageRequest, StreamResponse, TaskState
from a2a.utils.errors import TaskNotFoundError
from a2a.utils.signing import InvalidSignaturesError, create_signature_verifier

from a2a_agent import STEP_DELAY
from a2a_gateway import CALLER, ECHO_RESOURCE, ECHO_SCOPES, ROUTE, EchoAgent, GatewayMandate
from mandate_server import AGENT_SECRET, RESOURCE, SIGNING_ALGS

CARD_PATH = "/.well-known/agent-card.json"
BOTH_SCOPES = "echo:read echo:send"


# --- fixtures ---------------------------------------------------------------

@pytest.fixture(scope="module")
def echo_agent(tmp_path_factory):
    agent = EchoAgent(tmp_path_factory.mktemp("a2a-agent")).start()
    yield agent
    agent.stop()


@pytest.fixture(scope="module")
def gateways(tmp_path_factory, echo_agent):
    """`gateways(signing_alg)`: a Mandate with the echo route, one per algorithm."""
    running: dict[str, GatewayMandate] = {}

    def get(signing_alg: str = "EdDSA") -> GatewayMandate:
        if signing_alg not in running:
            workdir = tmp_path_factory.mktemp(f"a2a-gateway-{signing_alg}")
            running[signing_alg] = GatewayMandate(workdir, signing_alg, upstream=echo_agent.url).start()
        return running[signing_alg]

    yield get
    for server in running.values():
        server.stop()


@pytest.fixture(scope="module")
def gateway(gateways) -> GatewayMandate:
    return gateways("EdDSA")


# --- helpers ----------------------------------------------------------------

def run(coro):
    return asyncio.run(coro)


def b64url_decode(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def b64url_encode(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def user_message(text: str) -> SendMessageRequest:
    return SendMessageRequest(message=Message(role=Role.ROLE_USER, message_id=uuid.uuid4().hex,
                                              parts=[Part(text=text)]))


def http_client(token: str | None = None, **headers: str) -> httpx.AsyncClient:
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.AsyncClient(headers=headers, timeout=30)


async def sdk_send(url: str, text: str, *, token: str | None, streaming: bool,
                   headers: dict[str, str] | None = None) -> list[tuple[float, StreamResponse]]:
    """Resolves the card at `url` with the SDK, makes a client from it and sends
    one message; returns the events with their arrival times (monotonic)."""
    async with http_client(token, **(headers or {})) as http:
        factory = ClientFactory(ClientConfig(httpx_client=http, streaming=streaming))
        client = await factory.create_from_url(url)
        events = []
        async with client:
            async for event in client.send_message(user_message(text)):
                events.append((time.monotonic(), event))
        return events


def http_status_error(exc: BaseException) -> httpx.HTTPStatusError | None:
    """The httpx status error the SDK wrapped, if any."""
    while exc is not None:
        if isinstance(exc, httpx.HTTPStatusError):
            return exc
        exc = exc.__cause__
    return None


def sdk_refusal(url: str, *, token: str | None, streaming: bool) -> httpx.Response:
    with pytest.raises(A2AClientError) as caught:
        run(sdk_send(url, "hello", token=token, streaming=streaming))
    status_error = http_status_error(caught.value)
    assert status_error is not None, f"the SDK did not surface an HTTP error: {caught.value!r}"
    return status_error.response


def parse_challenge(value: str) -> tuple[str, dict[str, str]]:
    scheme, _, params = value.partition(" ")
    out = {}
    for part in params.split(", "):
        k, _, v = part.partition("=")
        out[k.strip()] = v.strip().strip('"')
    return scheme, out


def jwks_key(server: GatewayMandate, kid: str) -> jwt.PyJWK:
    jwks = requests.get(server.jwks_url, timeout=10).json()
    matching = [k for k in jwks["keys"] if k.get("kid") == kid]
    assert len(matching) == 1, f"kid {kid!r} not (once) in {server.jwks_url}"
    return jwt.PyJWK(matching[0])


def verify_card_signature(card: dict, server: GatewayMandate) -> dict:
    """Checks the card's one signature by hand (RFC 7515 detached content over the
    RFC 8785 form of the card without `signatures`); returns the protected header."""
    assert len(card["signatures"]) == 1
    sig = card["signatures"][0]
    header = json.loads(b64url_decode(sig["protected"]))
    assert set(header) == {"alg", "kid", "typ"}, header
    assert header["typ"] == "JOSE"
    unsigned = {k: v for k, v in card.items() if k != "signatures"}
    payload = rfc8785.dumps(unsigned)
    key = jwks_key(server, header["kid"])
    compact = f"{sig['protected']}.{b64url_encode(payload)}.{sig['signature']}"
    assert jwt.api_jws.decode(compact, key, algorithms=[header["alg"]]) == payload
    return header


def sdk_verifier(server: GatewayMandate):
    """The SDK's verifier, keys looked up by kid in Mandate's JWKS."""
    return create_signature_verifier(lambda kid, jku: jwks_key(server, kid), algorithms=SIGNING_ALGS)


def fetch_card(url: str) -> AgentCard:
    async def go():
        async with http_client() as http:
            return await A2ACardResolver(http, url).get_agent_card()
    return run(go())


# --- (a) the card is the gateway's, and signed -------------------------------

@pytest.mark.parametrize("where", ["route", "root"])
def test_sdk_resolver_gets_the_gateways_card(gateway, echo_agent, where):
    base = gateway.route_url if where == "route" else gateway.issuer
    card = fetch_card(base)

    assert card.name == "Echo agent"
    assert [(i.url, i.protocol_binding, i.protocol_version) for i in card.supported_interfaces] == [
        (gateway.route_url + "/", "JSONRPC", "1.0")]
    assert card.capabilities.streaming

    assert list(card.security_schemes) == ["mandate"]
    scheme = card.security_schemes["mandate"]
    assert scheme.WhichOneof("scheme") == "oauth2_security_scheme"
    oauth = scheme.oauth2_security_scheme
    assert oauth.flows.WhichOneof("flow") == "client_credentials"
    assert oauth.flows.client_credentials.token_url == gateway.token_url
    assert dict(oauth.flows.client_credentials.scopes) == ECHO_SCOPES
    assert oauth.oauth2_metadata_url == gateway.issuer + "/.well-known/oauth-authorization-server"
    assert [{name: list(s.list) for name, s in r.schemes.items()} for r in card.security_requirements] == [
        {"mandate": ["echo:read"]}]

    skills = {s.id: s for s in card.skills}
    assert set(skills) == {"echo", "submit"}
    assert [{n: list(s.list) for n, s in r.schemes.items()} for r in skills["echo"].security_requirements] == [
        {"mandate": ["echo:read", "echo:send"]}]
    # A skill with no scopes of its own needs the route's (the agent's own
    # requirements are replaced: the gateway checks tokens now).
    assert [{n: list(s.list) for n, s in r.schemes.items()} for r in skills["submit"].security_requirements] == [
        {"mandate": ["echo:read"]}]

    # Nothing in the served card points at the agent itself.
    raw = requests.get(base + CARD_PATH, timeout=10).text
    assert echo_agent.url not in raw and str(echo_agent.port) not in raw


def test_the_advertised_token_url_and_scopes_get_a_token(gateway):
    """A client that knows only the card can get a token from what it says."""
    oauth = fetch_card(gateway.route_url).security_schemes["mandate"].oauth2_security_scheme
    flow = oauth.flows.client_credentials
    assert requests.get(oauth.oauth2_metadata_url, timeout=10).json()["token_endpoint"] == flow.token_url
    r = requests.post(flow.token_url, data={"grant_type": "client_credentials", "resource": ECHO_RESOURCE,
                                            "scope": " ".join(flow.scopes)},
                      auth=(CALLER, AGENT_SECRET), timeout=10)
    assert r.status_code == 200, r.text
    assert set(r.json()["scope"].split()) == set(ECHO_SCOPES)


@pytest.mark.parametrize("alg", SIGNING_ALGS)
def test_card_signature_verifies_against_mandates_jwks(gateways, alg):
    server = gateways(alg)
    card = requests.get(server.route_url + CARD_PATH, timeout=10).json()
    header = verify_card_signature(card, server)
    assert header["alg"] == alg

    # The same check fails on a card changed after signing.
    tampered = dict(card, supportedInterfaces=[dict(card["supportedInterfaces"][0], url="http://evil.example/")])
    with pytest.raises(jwt.InvalidSignatureError):
        verify_card_signature(tampered, server)


@pytest.mark.parametrize("alg", SIGNING_ALGS)
def test_sdk_signature_verifier_accepts_the_card(gateways, alg):
    """The SDK's own verifier (JCS of its parsed card, PyJWT) while resolving."""
    server = gateways(alg)

    async def go(url):
        async with http_client() as http:
            return await A2ACardResolver(http, url).get_agent_card(signature_verifier=sdk_verifier(server))

    card = run(go(server.route_url))
    assert len(card.signatures) == 1
    # And it refuses the same card once changed.
    card.supported_interfaces[0].url = "http://evil.example/"
    with pytest.raises(InvalidSignaturesError):
        sdk_verifier(server)(card)


# --- (b) send and stream with a token ----------------------------------------

def final_task_text(events) -> str:
    assert len(events) == 1
    _, event = events[0]
    assert event.WhichOneof("payload") == "task", event
    task = event.task
    assert task.status.state == TaskState.TASK_STATE_COMPLETED
    return "".join(get_artifact_text(a, delimiter="") for a in task.artifacts)


def test_sdk_client_sends_a_message_through_the_gateway(gateway):
    events = run(sdk_send(gateway.route_url, "hello gateway", token=gateway.token(BOTH_SCOPES), streaming=False))
    assert final_task_text(events) == "echo: hello gateway"


def test_sdk_client_streams_a_reply_through_the_gateway(gateway):
    events = run(sdk_send(gateway.route_url, "stream me", token=gateway.token(BOTH_SCOPES), streaming=True))
    kinds = [e.WhichOneof("payload") for _, e in events]
    assert kinds == ["task", "status_update", "artifact_update", "artifact_update", "status_update"], kinds
    payloads = [getattr(e, k) for (_, e), k in zip(events, kinds)]
    assert payloads[1].status.state == TaskState.TASK_STATE_WORKING
    assert [get_artifact_text(p.artifact) for p in payloads[2:4]] == ["echo: ", "stream me"]
    assert payloads[3].append and payloads[3].last_chunk
    assert payloads[4].status.state == TaskState.TASK_STATE_COMPLETED
    assert {p.task_id for p in payloads[1:]} == {payloads[0].id}

    # The agent pauses STEP_DELAY between events (4 pauses from first to last):
    # delivered as they happen, they arrive spread out; a proxy that buffered the
    # response would deliver them all at once.
    times = [t for t, _ in events]
    gaps = sorted(b - a for a, b in zip(times, times[1:]))
    assert times[-1] - times[0] > 2 * STEP_DELAY, f"events arrived bunched together: gaps {gaps}"
    assert gaps[len(gaps) // 2] > STEP_DELAY / 2, f"events arrived bunched together: gaps {gaps}"


def test_the_root_card_leads_the_sdk_to_the_same_agent(gateway):
    """The default route's card at the gateway's root works the same way."""
    events = run(sdk_send(gateway.issuer, "via root", token=gateway.token(BOTH_SCOPES), streaming=False))
    assert final_task_text(events) == "echo: via root"


# --- (c) no token: 401 with the challenge --------------------------------------

def assert_401_challenge(resp: httpx.Response | requests.Response, gateway: GatewayMandate) -> None:
    assert resp.status_code == 401
    scheme, params = parse_challenge(resp.headers["WWW-Authenticate"])
    assert scheme == "Bearer"
    assert params["resource_metadata"] == f"{gateway.issuer}/.well-known/oauth-protected-resource{ROUTE}"
    assert "error" not in params  # RFC 6750 section 3.1: no error code when no token was sent


@pytest.mark.parametrize("streaming", [False, True], ids=["send", "stream"])
def test_sdk_client_without_token_gets_401_with_challenge(gateway, echo_agent, streaming):
    before = len(echo_agent.seen())
    resp = sdk_refusal(gateway.route_url, token=None, streaming=streaming)
    assert_401_challenge(resp, gateway)
    assert len(echo_agent.seen()) == before  # nothing reached the agent


def test_plain_http_without_token_gets_401_and_metadata_names_the_resource(gateway):
    body = {"jsonrpc": "2.0", "id": 1, "method": "SendMessage",
            "params": {"message": {"messageId": "m1", "role": "ROLE_USER", "parts": [{"text": "hi"}]}}}
    resp = httpx.post(gateway.route_url + "/", json=body, headers={"A2A-Version": "1.0"}, timeout=10)
    assert_401_challenge(resp, gateway)
    _, params = parse_challenge(resp.headers["WWW-Authenticate"])
    metadata = httpx.get(params["resource_metadata"], timeout=10).json()
    assert metadata["resource"] == ECHO_RESOURCE
    assert gateway.issuer in metadata["authorization_servers"]
    assert set(metadata["scopes_supported"]) == set(ECHO_SCOPES)


def test_token_for_another_resource_gets_401_invalid_token(gateway):
    other = gateway.token("read", client_id="agent-basic", resource=RESOURCE)
    resp = sdk_refusal(gateway.route_url, token=other, streaming=False)
    assert resp.status_code == 401
    _, params = parse_challenge(resp.headers["WWW-Authenticate"])
    assert params["error"] == "invalid_token"


# --- (d) too narrow a scope: 403 insufficient_scope ----------------------------

@pytest.mark.parametrize("streaming", [False, True], ids=["send", "stream"])
def test_read_only_token_gets_403_insufficient_scope(gateway, streaming):
    resp = sdk_refusal(gateway.route_url, token=gateway.token("echo:read"), streaming=streaming)
    assert resp.status_code == 403
    scheme, params = parse_challenge(resp.headers["WWW-Authenticate"])
    assert scheme == "Bearer"
    assert params["error"] == "insufficient_scope"
    assert params["scope"] == "echo:send"
    assert resp.json()["error"] == "insufficient_scope"


def test_read_only_token_may_still_read_tasks(gateway):
    """GetTask needs only the route's echo:read: the gateway lets it through and
    the agent answers (here: with A2A's TaskNotFound)."""
    async def go():
        async with http_client(gateway.token("echo:read")) as http:
            client = await ClientFactory(ClientConfig(httpx_client=http)).create_from_url(gateway.route_url)
            async with client:
                await client.get_task(GetTaskRequest(id=str(uuid.uuid4())))
    with pytest.raises(TaskNotFoundError):
        run(go())


# --- (e) what the agent sees ----------------------------------------------------

@pytest.mark.parametrize("streaming", [False, True], ids=["send", "stream"])
def test_agent_sees_the_caller_not_the_token(gateway, echo_agent, streaming):
    text = f"who am I {uuid.uuid4().hex}"
    forged = {"X-Mandate-Subject": "admin", "X-Mandate-Scope": "everything"}
    run(sdk_send(gateway.route_url, text, token=gateway.token(BOTH_SCOPES), streaming=streaming,
                 headers=forged))
    seen = [s for s in echo_agent.seen() if s["text"] == text]
    assert len(seen) == 1
    headers = seen[0]["headers"]
    assert "authorization" not in headers
    assert headers["x-mandate-subject"] == CALLER
    assert headers["x-mandate-client-id"] == CALLER
    assert set(headers["x-mandate-scope"].split()) == set(ECHO_SCOPES)
    assert headers["x-mandate-operation"] == ("SendStreamingMessage" if streaming else "SendMessage")
    assert headers["x-mandate-issuer"] == gateway.issuer


# --- (f) an SDK agent that also speaks v0.3: a dual-version card ---------------
#
# With a v0.3 interface besides the v1.0 one (`a2a_agent.py --v03-compat`), the
# SDK serves one card for both: v1.0 fields plus the v0.3 mirror fields `url`,
# `preferredTransport` and `protocolVersion: "0.3"`. Its own serializer
# (`agent_card_to_dict`) writes security both ways too: each scheme object holds
# the v1.0 wrapper (`oauth2SecurityScheme`) and the v0.3 members (`type`,
# `flows`, ...), and `security` sits beside `securityRequirements`.

@pytest.fixture(scope="module")
def compat_agent(tmp_path_factory):
    agent = EchoAgent(tmp_path_factory.mktemp("a2a-agent-v03"), v03_compat=True).start()
    yield agent
    agent.stop()


@pytest.fixture(scope="module")
def compat_gateway(tmp_path_factory, compat_agent):
    server = GatewayMandate(tmp_path_factory.mktemp("a2a-gateway-v03"), "EdDSA", upstream=compat_agent.url).start()
    yield server
    server.stop()


def dual_card(server: GatewayMandate) -> dict:
    return requests.get(server.route_url + CARD_PATH, timeout=10).json()


def test_dual_version_card_urls_point_at_the_gateway(compat_gateway, compat_agent):
    card = dual_card(compat_gateway)
    assert card["protocolVersion"] == "0.3"
    assert card["url"] == compat_gateway.route_url + "/"
    assert sorted((i["url"], i["protocolVersion"]) for i in card["supportedInterfaces"]) == [
        (compat_gateway.route_url + "/", "0.3"), (compat_gateway.route_url + "/", "1.0")]
    assert str(compat_agent.port) not in json.dumps(card)


def test_dual_version_card_signature_verifies_by_hand(compat_gateway):
    """The signature covers the card as served (RFC 8785 of all of it but `signatures`)."""
    verify_card_signature(dual_card(compat_gateway), compat_gateway)


@pytest.mark.xfail(strict=True, raises=InvalidSignaturesError, reason=(
    "gateway/SDK mismatch on dual-version cards: the gateway signs RFC 8785 of the card as "
    "served, v0.3 mirror fields `url`, `preferredTransport`, `protocolVersion` included; the "
    "SDK's create_signature_verifier canonicalizes its parsed v1.0 AgentCard "
    "(parse_agent_card drops those fields, then MessageToDict + _clean_empty), so the bytes "
    "differ and it raises InvalidSignaturesError. The SDK's own signer signs only the v1.0 "
    "view and leaves the mirror fields unsigned."))
def test_sdk_signature_verifier_accepts_dual_version_card(compat_gateway):
    async def go():
        async with http_client() as http:
            return await A2ACardResolver(http, compat_gateway.route_url).get_agent_card(
                signature_verifier=sdk_verifier(compat_gateway))
    run(go())


# Fixed: dual-version cards get both the v1.0 and the v0.3 security shapes.
def test_v03_view_of_dual_version_card_asks_for_a_mandate_token(compat_gateway):
    from a2a.compat.v0_3 import types as v03
    card = v03.AgentCard.model_validate(dual_card(compat_gateway))
    scheme = card.security_schemes["mandate"].root
    assert isinstance(scheme, v03.OAuth2SecurityScheme), scheme
    assert scheme.flows.client_credentials.token_url == compat_gateway.token_url
    assert card.security == [{"mandate": ["echo:read"]}]


async def v03_client_send(server: GatewayMandate, text: str, token: str, streaming: bool) -> list[str]:
    """The SDK's v0.3 client (`message/send`, `message/stream`): the client the
    factory makes for a card whose only interface is v0.3, here the gateway's
    card with its v1.0 interface left out."""
    async with http_client(token) as http:
        card = await A2ACardResolver(http, server.route_url).get_agent_card()
        v03_only = [i for i in card.supported_interfaces if i.protocol_version == "0.3"]
        del card.supported_interfaces[:]
        card.supported_interfaces.extend(v03_only)
        client = ClientFactory(ClientConfig(httpx_client=http, streaming=streaming)).create(card)
        kinds = []
        async with client:
            async for event in client.send_message(user_message(text)):
                kinds.append(event.WhichOneof("payload"))
        return kinds


@pytest.mark.parametrize("streaming", [False, True], ids=["message/send", "message/stream"])
def test_sdk_v03_client_through_the_gateway(compat_gateway, compat_agent, streaming):
    text = f"v0.3 {uuid.uuid4().hex}"
    kinds = run(v03_client_send(compat_gateway, text, compat_gateway.token(BOTH_SCOPES), streaming))
    assert kinds == (["task", "status_update", "artifact_update", "artifact_update", "status_update"]
                     if streaming else ["task"])
    [seen] = [s for s in compat_agent.seen() if s["text"] == text]
    assert seen["headers"]["a2a-version"] == "0.3"
    assert seen["headers"]["x-mandate-subject"] == CALLER
    assert "authorization" not in seen["headers"]
    # Policy is written in v1.0 names; the v0.3 method is held to the same rule.
    assert seen["headers"]["x-mandate-operation"] == ("SendStreamingMessage" if streaming else "SendMessage")

    with pytest.raises(A2AClientError) as caught:
        run(v03_client_send(compat_gateway, text, compat_gateway.token("echo:read"), streaming))
    resp = http_status_error(caught.value).response
    assert resp.status_code == 403
    assert parse_challenge(resp.headers["WWW-Authenticate"])[1]["scope"] == "echo:send"
