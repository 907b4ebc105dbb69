"""(5) An MCP server built with the official `mcp` SDK runs behind Mandate's
gateway, and the SDK's own OAuth client, given only the gateway URL, gets in.

The server (`mcp_files_server.py`, tools `read_file`, `write_file`,
`delete_file` annotated read / write / destructive) is a separate process;
Mandate's MCP route `/mcp/files` is in front of it (`mcp_gateway.py`), with
open dynamic registration and one user. The client side is the SDK's `Client`
over its Streamable HTTP transport, with its `OAuthClientProvider` as the
httpx2 auth; a scripted user (`mcp_browser.Browser`) submits Mandate's real
sign-in and consent forms when the SDK sends it to the authorization URL.

(a) the upstream, the discovery documents (the route's protected-resource
metadata names its level scopes; the tokenless 401 names the scope to start
with) and registration (an empty `scope` is no scope; a consent-only client's
ceiling is every known scope), (b) the SDK alone from the bare gateway URL, on
the documented route and on one with a route-wide scope, step-up included,
(c) a read-only grant, step-up and more consent, in both protocol eras, and a
user consenting to less than asked, (d) refresh rotation and reuse detection,
through the SDK and directly, a refused refresh leaving its token usable, and
RFC 7009 revocation of a refresh token, (e) client ID metadata documents
(CIMD): the SDK's provider with a document served by the test
(`mcp_client_documents.py`) signs in without registering, and bad documents
get an error page.

Every SDK scenario starts from nothing but the gateway URL (except the stale
copy of a client in (d), restored with its old credentials and tokens): the
provider discovers, registers dynamically (or, in (e), uses its document URL
as client ID) and authorizes by itself. Mandate advertises
`client_id_metadata_document_supported`; an SDK client without a document URL
registers dynamically (checked in (a)). The SDK's constructor takes only https
document URLs, and a test can serve one only over http on loopback (Mandate's
`insecure_allow_http_client_metadata_on_loopback`), so (e) sets the URL on the
provider's context after construction, and the plain constructor call is the
one xfail (strict).

The four problems this suite found (level scopes missing from the metadata and
the challenge, an empty registered `scope`, a registration ceiling that blocked
step-up, a refused refresh spending its token) are fixed; their tests are plain
tests now. See README.md.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import secrets
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlencode, urlsplit

import anyio
import httpx2
import jwt
import pytest
import requests
from mcp import Client
from mcp.client.auth import OAuthClientProvider
from mcp.client.auth.oauth2 import check_registration_usable
from mcp.client.auth.utils import (
    build_oauth_authorization_server_metadata_discovery_urls,
    build_protected_resource_metadata_discovery_urls,
    create_client_registration_request,
    extract_field_from_www_auth,
    get_client_metadata_scopes,
    handle_registration_response,
    should_use_client_metadata_url,
    validate_metadata_issuer,
)
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import (
    OAuthClientInformationFull,
    OAuthClientMetadata,
    OAuthMetadata,
    OAuthToken,
    ProtectedResourceMetadata,
)
from mcp.shared.auth_utils import check_resource_allowed, resource_url_from_server_url

from mcp_browser import Browser
from mcp_client_documents import DocumentServer
from mcp_gateway import FILES_SCOPES, PASSWORD, ROUTE, USERNAME, FilesServer, McpGatewayMandate

# The SDK's loopback redirect URI; nothing listens there (the scripted browser
# reads the redirect instead of following it).
REDIRECT_URI = "http://127.0.0.1:33418/callback"
PRM_PATH = "/.well-known/oauth-protected-resource" + ROUTE
ALL_FILES = set(FILES_SCOPES)
# Client modes: "auto" probes server/discover and settles on the stateless
# 2026-07-28 era; "legacy" is the initialize handshake (2025-11-25, sessions).
MODES = {"auto": "2026-07-28", "legacy": "2025-11-25"}
SDK_TIMEOUT = 90  # seconds for one scenario; each normally takes well under 5


# --- fixtures ---------------------------------------------------------------

@pytest.fixture(scope="module")
def files_server(tmp_path_factory):
    server = FilesServer(tmp_path_factory.mktemp("mcp-files")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, files_server):
    """The route as documented: no route-wide scope, one scope per tool level."""
    server = McpGatewayMandate(tmp_path_factory.mktemp("mcp-gateway"), "EdDSA", upstream=files_server.url).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def narrow_gateway(tmp_path_factory, files_server):
    """The same route, but every call also needs `files:read` (route `scopes`), so
    that the tokenless 401 challenge names a scope."""
    server = McpGatewayMandate(tmp_path_factory.mktemp("mcp-gateway-narrow"), "EdDSA", upstream=files_server.url,
                               route_scopes=["files:read"]).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def write_gateway(tmp_path_factory, files_server):
    """A route whose own scope (`files:write`) is not its read level's, to tell
    which of the two the tokenless challenge names. Only its documents are read."""
    server = McpGatewayMandate(tmp_path_factory.mktemp("mcp-gateway-write"), "EdDSA", upstream=files_server.url,
                               route_scopes=["files:write"]).start()
    yield server
    server.stop()


# --- helpers ----------------------------------------------------------------

def run(scenario, *args):
    """Runs an async scenario with a time limit; an error raised inside the SDK's
    task groups comes out as itself, not wrapped in exception groups."""
    async def main():
        with anyio.fail_after(SDK_TIMEOUT):
            return await scenario(*args)
    try:
        return asyncio.run(main())
    except BaseExceptionGroup as group:
        leaf: BaseException = group
        while isinstance(leaf, BaseExceptionGroup):
            leaf = leaf.exceptions[0]
        raise leaf from group


@dataclass
class MemoryStorage:
    """The SDK's `TokenStorage` protocol, in memory."""

    client_info: OAuthClientInformationFull | None = None
    tokens: OAuthToken | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


@dataclass
class Exchange:
    method: str
    url: str
    status: int
    request_headers: dict[str, str]
    form: dict[str, str]  # a form-encoded request body
    challenge: str | None  # WWW-Authenticate
    body: dict | None = None  # JSON body of /token, /register and error responses
    sent: dict | None = None  # a JSON request body (JSON-RPC to the route, metadata to /register)

    @property
    def rpc(self) -> dict | None:
        """The JSON-RPC request sent to the route."""
        return self.sent if self.path == ROUTE else None

    @property
    def tool(self) -> str | None:
        """The tool a `tools/call` names."""
        if self.rpc and self.rpc.get("method") == "tools/call":
            return (self.rpc.get("params") or {}).get("name")
        return None

    @property
    def path(self) -> str:
        return urlsplit(self.url).path


@dataclass
class Recorder:
    """httpx2 event hooks noting every request the SDK makes, its own OAuth
    requests included."""

    exchanges: list[Exchange] = field(default_factory=list)

    async def _on_response(self, response: httpx2.Response) -> None:
        request = response.request
        form, sent = {}, None
        content_type = request.headers.get("content-type", "")
        if content_type.startswith("application/x-www-form-urlencoded"):
            form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
        elif content_type.startswith("application/json"):
            sent = json.loads(request.content)
        body = None
        if request.url.path in ("/token", "/register") or response.status_code >= 400:
            await response.aread()  # the SDK reads it again from memory
            try:
                body = response.json()
            except ValueError:
                body = None
        self.exchanges.append(Exchange(request.method, str(request.url), response.status_code, dict(request.headers),
                                       form, response.headers.get("www-authenticate"), body, sent))

    @property
    def hooks(self) -> dict:
        return {"response": [self._on_response]}

    def at(self, path: str, **form) -> list[Exchange]:
        return [x for x in self.exchanges
                if x.path == path and all(x.form.get(k) == v for k, v in form.items())]


def sdk_metadata(name: str, auth_method: str | None = None) -> OAuthClientMetadata:
    """What an MCP client built on the SDK registers: its defaults
    (`authorization_code` + `refresh_token`, `response_types` code, native)."""
    return OAuthClientMetadata(client_name=name, redirect_uris=[REDIRECT_URI], token_endpoint_auth_method=auth_method)


async def register_with_sdk(server: McpGatewayMandate, metadata: OAuthClientMetadata) -> OAuthClientInformationFull:
    """Dynamic registration with the SDK's own request builder and response
    checks, as its provider does it (the body is `metadata`, `scope` included)."""
    asm = OAuthMetadata.model_validate(server.metadata())
    request = create_client_registration_request(asm, metadata, server.issuer)
    async with httpx2.AsyncClient(timeout=10) as http:
        response = await http.send(request)
    info = await handle_registration_response(response)
    check_registration_usable(info)
    info.issuer = str(asm.issuer)  # the binding the provider records (SEP-2352)
    return info


def provider_for(server: McpGatewayMandate, metadata: OAuthClientMetadata, storage: MemoryStorage,
                 browser: Browser) -> OAuthClientProvider:
    """The SDK's OAuth client, told only the gateway URL of the MCP server."""
    return OAuthClientProvider(server.route_url, metadata, storage,
                               redirect_handler=browser.redirect_handler, callback_handler=browser.callback_handler)


@asynccontextmanager
async def sdk_client(server: McpGatewayMandate, provider: OAuthClientProvider, recorder: Recorder, mode: str = "auto"):
    async with httpx2.AsyncClient(auth=provider, timeout=httpx2.Timeout(30, read=120),
                                  event_hooks=recorder.hooks) as http:
        async with Client(streamable_http_client(server.route_url, http_client=http), mode=mode) as client:
            yield client


def expire(provider: OAuthClientProvider) -> None:
    """Ages the SDK's access token past its expiry, by the SDK's own clock (its
    `OAuthContext.token_expiry_time`), instead of waiting out `expires_in`."""
    provider.context.token_expiry_time = time.time() - 1


def tool_names(listed) -> list[str]:
    return sorted(t.name for t in listed.tools)


def text_of(result) -> str:
    assert not result.is_error, result
    return "".join(c.text for c in result.content if c.type == "text")


def claims(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


def scope_set(s: str | None) -> set[str]:
    return set((s or "").split())


def new_browser(server: McpGatewayMandate) -> Browser:
    return Browser(server.issuer, USERNAME, PASSWORD)


def challenge_param(challenge: str | None, name: str) -> str | None:
    """The SDK's own WWW-Authenticate parser, on a recorded header value."""
    response = httpx2.Response(401, headers={"WWW-Authenticate": challenge} if challenge else {})
    return extract_field_from_www_auth(response, name)


def step_up_challenge(recorder: Recorder, tool: str) -> Exchange:
    """The one 403 the gateway gave the SDK's call of `tool`, which the SDK then
    sent again, once, with its new token, and got through."""
    calls = [x for x in recorder.exchanges if x.path == ROUTE and x.tool == tool]
    assert [x.status for x in calls] == [403, 200], [(x.status, x.challenge) for x in calls]
    assert calls[0].rpc == calls[1].rpc
    assert calls[0].request_headers["authorization"] != calls[1].request_headers["authorization"]
    return calls[0]


# --- (a) the upstream, and the documents the SDK discovers --------------------

def test_upstream_lists_three_annotated_tools(files_server):
    """Without the gateway, the SDK client sees all three tools and their hints
    (which are what the gateway's levels come from)."""
    async def scenario():
        async with Client(files_server.url, mode="legacy") as client:
            return (await client.list_tools()).tools

    tools = {t.name: t.annotations for t in run(scenario)}
    assert set(tools) == {"read_file", "write_file", "delete_file"}
    assert tools["read_file"].read_only_hint is True
    assert (tools["write_file"].read_only_hint, tools["write_file"].destructive_hint) == (False, False)
    assert tools["delete_file"].destructive_hint is True


def test_discovery_documents_pass_the_sdks_checks(gateway):
    """A tokenless request gets the challenge; the protected-resource and the
    authorization-server metadata it leads to pass the checks the SDK's provider
    makes (RFC 9728 resource match, RFC 8414 issuer match), and the AS offers
    what the SDK's authorization code flow needs. CIMD is advertised, so an SDK
    client given a document URL would use it; one without registers
    dynamically."""
    r = requests.post(gateway.route_url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, timeout=10)
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"].startswith("Bearer ")
    prm_url = challenge_param(r.headers["WWW-Authenticate"], "resource_metadata")
    assert prm_url == gateway.issuer + PRM_PATH
    # The SDK tries the challenge's URL first, then the path-based well-known URL: the same here.
    assert build_protected_resource_metadata_discovery_urls(prm_url, gateway.route_url)[:2] == [prm_url, prm_url]

    prm = ProtectedResourceMetadata.model_validate_json(requests.get(prm_url, timeout=10).content)
    assert str(prm.resource) == gateway.route_url
    assert check_resource_allowed(resource_url_from_server_url(gateway.route_url), str(prm.resource))
    assert [str(s) for s in prm.authorization_servers] == [gateway.issuer]
    assert prm.bearer_methods_supported == ["header"]

    asm_url = build_oauth_authorization_server_metadata_discovery_urls(gateway.issuer, gateway.route_url)[0]
    assert asm_url == gateway.issuer + "/.well-known/oauth-authorization-server"
    asm = OAuthMetadata.model_validate_json(requests.get(asm_url, timeout=10).content)
    validate_metadata_issuer(asm, str(prm.authorization_servers[0]))
    assert str(asm.authorization_endpoint) == gateway.issuer + "/authorize"
    assert str(asm.token_endpoint) == gateway.issuer + "/token"
    assert str(asm.registration_endpoint) == gateway.issuer + "/register"
    assert asm.code_challenge_methods_supported == ["S256"]
    assert "code" in asm.response_types_supported
    assert {"authorization_code", "refresh_token"} <= set(asm.grant_types_supported)
    assert {"none", "client_secret_basic", "client_secret_post"} <= set(asm.token_endpoint_auth_methods_supported)
    assert asm.authorization_response_iss_parameter_supported is True
    assert ALL_FILES <= set(asm.scopes_supported)
    # Client ID metadata documents are advertised: an SDK client given a
    # document URL uses it instead of registering (section (e)); one without
    # registers dynamically.
    assert asm.client_id_metadata_document_supported is True
    assert should_use_client_metadata_url(asm, "https://agent.example.com/oauth/client.json")
    assert not should_use_client_metadata_url(asm, None)


def known_scopes(server: McpGatewayMandate) -> set[str]:
    """Every scope the AS knows (its metadata's `scopes_supported`): the files
    route's and the interop servers' other resource's."""
    known = set(server.metadata()["scopes_supported"])
    assert ALL_FILES < known
    return known


# The scope a tokenless request is challenged with: the route's own scopes, or,
# for an MCP route without any, what its read level takes.
START_SCOPES = {"gateway": {"files:read"}, "narrow_gateway": {"files:read"}, "write_gateway": {"files:write"}}


@pytest.mark.parametrize("which", list(START_SCOPES))
def test_protected_resource_metadata_and_challenge_name_the_level_scopes(request, which):
    """The route's protected-resource metadata lists the scopes of its levels
    (and its own), and a tokenless request is challenged with the scope to start
    with: the read level's when the route has no scope of its own (the documented
    route), else the route's. The SDK asks for the challenge's scope; without
    one it would take the metadata's whole list."""
    server = request.getfixturevalue(which)
    r = requests.post(server.route_url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, timeout=10)
    assert r.status_code == 401
    challenge = r.headers["WWW-Authenticate"]
    assert challenge_param(challenge, "error") is None  # no token: no error code (RFC 6750 §3.1)
    assert scope_set(challenge_param(challenge, "scope")) == START_SCOPES[which]

    prm = ProtectedResourceMetadata.model_validate_json(
        requests.get(server.issuer + PRM_PATH, timeout=10).content)
    assert set(prm.scopes_supported) == ALL_FILES
    asm = OAuthMetadata.model_validate(server.metadata())
    grants = sdk_metadata("probe").grant_types
    assert scope_set(get_client_metadata_scopes(challenge_param(challenge, "scope"), prm, asm, grants)) \
        == START_SCOPES[which]
    assert scope_set(get_client_metadata_scopes(None, prm, asm, grants)) == ALL_FILES


REGISTERED_SCOPES = {"empty": "", "blank": "  ", "omitted": None, "the-challenge": "files:read",
                     "all-files": " ".join(sorted(ALL_FILES))}


@pytest.mark.parametrize("case", list(REGISTERED_SCOPES))
def test_consent_only_registration_gets_every_known_scope(gateway, case):
    """What the SDK's provider registers, through its own request builder and
    response checks: an empty `scope` (what it sends when discovery found no
    scope) counts as none. A client that can only get tokens through a user's
    consent (no `client_credentials`) gets every known scope as its ceiling,
    whatever `scope` it names, so that it can step up later; consent is what
    limits its tokens."""
    metadata = sdk_metadata(f"Registered scope: {case}")
    metadata.scope = REGISTERED_SCOPES[case]
    body = metadata.model_dump(by_alias=True, mode="json", exclude_none=True)
    assert body.get("scope") == REGISTERED_SCOPES[case]
    assert "client_credentials" not in body["grant_types"]
    info = run(register_with_sdk, gateway, metadata)
    assert scope_set(info.scope) == known_scopes(gateway)
    assert info.grant_types == ["authorization_code", "refresh_token"]


def test_open_registration_refuses_client_credentials(gateway):
    """The ceiling above is only for consent-only clients: open registration
    does not hand out machine identities at all."""
    r = requests.post(gateway.issuer + "/register", json={
        "client_name": "Machine", "grant_types": ["client_credentials"], "scope": "files:read"}, timeout=10)
    assert r.status_code == 400 and r.json()["error"] == "invalid_client_metadata", r.text


# --- (b) the SDK alone, from the bare gateway URL ---------------------------------

async def sign_in_and_read(server: McpGatewayMandate, provider: OAuthClientProvider, recorder: Recorder):
    async with sdk_client(server, provider, recorder) as client:
        listed = tool_names(await client.list_tools())
        read = text_of(await client.call_tool("read_file", {"path": "notes.txt"}))
        return listed, read


def check_discovery_and_registration(server: McpGatewayMandate, files_server: FilesServer, recorder: Recorder,
                                     storage: MemoryStorage, scopes: set[str]) -> dict:
    """The SDK's requests up to its first token: 401 (challenged with `scopes`),
    PRM, AS metadata, registration (asking for `scopes`, given every known
    scope), token; all of them to the gateway, none to the upstream. The
    provider registered once. Returns the registration response."""
    gateway_netloc = urlsplit(server.issuer).netloc
    assert {urlsplit(x.url).netloc for x in recorder.exchanges} == {gateway_netloc}
    first = recorder.exchanges[0]
    assert (first.method, first.path, first.status) == ("POST", ROUTE, 401)
    assert challenge_param(first.challenge, "resource_metadata") == server.issuer + PRM_PATH
    assert scope_set(challenge_param(first.challenge, "scope")) == scopes
    paths = [(x.method, x.path, x.status) for x in recorder.exchanges[1:5]]
    assert paths == [("GET", PRM_PATH, 200), ("GET", "/.well-known/oauth-authorization-server", 200),
                     ("POST", "/register", 201), ("POST", "/token", 200)], paths
    [registered] = recorder.at("/register")
    assert scope_set(registered.sent["scope"]) == scopes  # what the SDK asked for: the challenge's
    registration = registered.body
    assert registration["client_id"] == storage.client_info.client_id
    assert registration["grant_types"] == ["authorization_code", "refresh_token"]
    assert registration["redirect_uris"] == [REDIRECT_URI]
    assert scope_set(registration["scope"]) == known_scopes(server)  # its ceiling, to step up within
    assert storage.client_info.issuer == server.issuer
    assert files_server.base_url not in str([x.url for x in recorder.exchanges])
    return registration


@pytest.mark.parametrize("which", ["gateway", "narrow_gateway"])
def test_sdk_alone_signs_in_lists_and_calls(request, files_server, which):
    """The SDK's provider, told only the route's gateway URL, does everything
    itself: discovery, dynamic registration, PKCE, sign-in and consent for the
    scope the 401 named, the token (RFC 8707 `resource` = the route URL, RFC
    9207 `iss` checked), then lists the tools and calls one. On the documented
    route (scopes per level only) and on one with a route-wide scope."""
    server = request.getfixturevalue(which)
    browser = new_browser(server)
    browser.choices = [["files:read"]]
    storage, recorder = MemoryStorage(), Recorder()
    provider = provider_for(server, sdk_metadata("Files agent"), storage, browser)

    listed, read = run(sign_in_and_read, server, provider, recorder)

    assert listed == ["read_file"]
    assert read == "hello from the files server"
    check_discovery_and_registration(server, files_server, recorder, storage, {"files:read"})
    assert storage.client_info.token_endpoint_auth_method == "client_secret_basic"
    assert storage.client_info.client_secret

    [visit] = browser.visits
    assert visit.login_shown and visit.offered == ["files:read"]
    assert visit.params["client_id"] == storage.client_info.client_id
    assert visit.params["redirect_uri"] == REDIRECT_URI
    assert visit.params["resource"] == server.route_url
    assert visit.params["code_challenge_method"] == "S256"
    assert scope_set(visit.params["scope"]) == {"files:read"}
    assert visit.result["iss"] == server.issuer
    assert visit.result["state"] == visit.params["state"]

    [token_request] = recorder.at("/token")
    assert token_request.form["grant_type"] == "authorization_code"
    assert token_request.form["resource"] == server.route_url
    assert token_request.request_headers["authorization"].startswith("Basic ")  # client_secret_basic
    token = claims(storage.tokens.access_token)
    assert token["aud"] == server.route_url
    assert token["client_id"] == storage.client_info.client_id
    assert scope_set(token["scope"]) == {"files:read"}
    assert storage.tokens.refresh_token


def test_step_up_beyond_the_first_challenge(narrow_gateway, files_server):
    """On a route with a route-wide scope the SDK registers with the scope of
    the first challenge, and Mandate still lets it step up: a write is refused
    with a challenge naming every scope it needs (the route's and the write
    level's), the SDK re-authorizes, with the same client, for the union, the
    signed-in user consents to more, and the call goes through."""
    browser = new_browser(narrow_gateway)
    browser.choices = [["files:read"], ["files:read", "files:write"]]
    storage, recorder = MemoryStorage(), Recorder()
    provider = provider_for(narrow_gateway, sdk_metadata("Files agent"), storage, browser)

    async def scenario():
        async with sdk_client(narrow_gateway, provider, recorder) as client:
            text_of(await client.call_tool("read_file", {"path": "notes.txt"}))
            return text_of(await client.call_tool("write_file", {"path": "narrow.txt", "content": "more"}))

    assert run(scenario) == "wrote 4 characters to narrow.txt"
    [registered] = recorder.at("/register")
    assert scope_set(registered.sent["scope"]) == {"files:read"}
    refused = step_up_challenge(recorder, "write_file")
    assert challenge_param(refused.challenge, "error") == "insufficient_scope"
    assert scope_set(challenge_param(refused.challenge, "scope")) == {"files:read", "files:write"}
    first, second = browser.visits
    assert first.login_shown and first.offered == ["files:read"]
    assert not second.login_shown
    assert second.params["client_id"] == first.params["client_id"] == storage.client_info.client_id
    assert scope_set(second.params["scope"]) == {"files:read", "files:write"}
    assert set(second.offered) == {"files:read", "files:write"}
    assert scope_set(claims(storage.tokens.access_token)["scope"]) == {"files:read", "files:write"}
    assert files_server.debug()["files"]["narrow.txt"] == "more"


# --- (c) read only, step-up, more consent -------------------------------------------

@pytest.mark.parametrize("mode", list(MODES))
def test_read_only_grant_then_step_up(gateway, files_server, mode):
    """The SDK registers and asks for what the 401 named, `files:read`, and the
    user allows it: the SDK sees only `read_file`, and a call of `write_file`
    is refused by the gateway (403, never forwarded) with a step-up challenge.
    The SDK re-authorizes, with the client it registered, for the union of what
    it had and what the challenge names; the signed-in user consents to more on
    the consent page (no second sign-in), and the same call goes through. Once
    more for `delete_file`."""
    browser = new_browser(gateway)
    storage, recorder = MemoryStorage(), Recorder()
    provider = provider_for(gateway, sdk_metadata(f"Files agent ({mode})"), storage, browser)
    path = f"step-up-{mode}.txt"
    seen: dict[str, object] = {}

    async def scenario():
        browser.choices = [["files:read"]]
        async with sdk_client(gateway, provider, recorder, mode) as client:
            seen["protocol"] = client.protocol_version
            seen["read_only_tools"] = tool_names(await client.list_tools())
            seen["read_only_token"] = storage.tokens
            seen["read"] = text_of(await client.call_tool("read_file", {"path": "notes.txt"}))
            seen["calls_before_write"] = list(files_server.debug()["calls"])

            browser.choices = [["files:read", "files:write"]]
            seen["write"] = text_of(await client.call_tool("write_file", {"path": path, "content": "step up"}))
            seen["write_tools"] = tool_names(await client.list_tools())
            seen["write_token"] = storage.tokens

            browser.choices = [["files:read", "files:write", "files:delete"]]
            seen["delete"] = text_of(await client.call_tool("delete_file", {"path": path}))
            seen["all_tools"] = tool_names(await client.list_tools())
            seen["all_token"] = storage.tokens

    run(scenario)
    assert seen["protocol"] == MODES[mode]

    # Read only: registered once, for what the first challenge named.
    [registered] = recorder.at("/register")
    assert registered.status == 201 and scope_set(registered.sent["scope"]) == {"files:read"}
    client_id = storage.client_info.client_id
    first = browser.visits[0]
    assert first.login_shown
    assert first.params["resource"] == gateway.route_url
    assert first.params["client_id"] == client_id
    assert scope_set(first.params["scope"]) == {"files:read"}
    assert first.offered == ["files:read"]
    assert scope_set(seen["read_only_token"].scope) == {"files:read"}
    assert seen["read_only_tools"] == ["read_file"]
    assert seen["read"] == "hello from the files server"

    # Step up to write: refused at the gateway, never forwarded.
    assert not [c for c in seen["calls_before_write"] if c["path"] == path]
    refused = step_up_challenge(recorder, "write_file")
    assert challenge_param(refused.challenge, "error") == "insufficient_scope"
    assert challenge_param(refused.challenge, "scope") == "files:write"
    assert challenge_param(refused.challenge, "resource_metadata") == gateway.issuer + PRM_PATH
    second = browser.visits[1]
    assert not second.login_shown  # the session from the first sign-in
    assert second.params["client_id"] == client_id
    assert scope_set(second.params["scope"]) == {"files:read", "files:write"}
    assert set(second.offered) == {"files:read", "files:write"}
    assert scope_set(seen["write_token"].scope) == {"files:read", "files:write"}
    assert seen["write"] == "wrote 7 characters to " + path
    assert seen["write_tools"] == ["read_file", "write_file"]

    # Step up to delete.
    refused = step_up_challenge(recorder, "delete_file")
    assert challenge_param(refused.challenge, "scope") == "files:delete"
    third = browser.visits[2]
    assert not third.login_shown
    assert third.params["client_id"] == client_id
    assert scope_set(third.params["scope"]) == ALL_FILES
    assert scope_set(seen["all_token"].scope) == ALL_FILES
    assert seen["delete"] == "deleted " + path
    assert seen["all_tools"] == ["delete_file", "read_file", "write_file"]
    assert len(browser.visits) == 3
    assert len(recorder.at("/register")) == 1  # step-up never registers again

    # Each refused call reached the upstream once: after its step-up.
    debug = files_server.debug()
    assert [c["tool"] for c in debug["calls"] if c["path"] == path] == ["write_file", "delete_file"]
    assert path not in debug["files"]
    # What the upstream saw of the last call: the caller's identity, not its token.
    [last] = [r for r in debug["requests"] if r.get("name") == "delete_file"
              and r["headers"].get("x-mandate-client-id") == client_id]
    headers = last["headers"]
    token = claims(seen["all_token"].access_token)
    assert "authorization" not in headers
    assert headers["x-mandate-subject"] == token["sub"]
    assert headers["x-mandate-issuer"] == gateway.issuer
    assert scope_set(headers["x-mandate-scope"]) == ALL_FILES
    assert headers["host"] == urlsplit(files_server.url).netloc
    assert headers["x-forwarded-host"] == urlsplit(gateway.issuer).netloc
    # Only the gateway was ever contacted.
    assert {urlsplit(x.url).netloc for x in recorder.exchanges} == {urlsplit(gateway.issuer).netloc}


def test_user_may_consent_to_less_than_asked(gateway):
    """The registration ceiling is not what a token gets: the consent page offers
    what the client asked for, and the token holds only what the user left
    checked."""
    auth = direct_client(gateway, "Direct, narrowed consent")
    issued = direct_tokens(gateway, auth, sorted(ALL_FILES), approve=["files:read"])
    assert scope_set(issued["scope"]) == {"files:read"}
    assert scope_set(claims(issued["access_token"])["scope"]) == {"files:read"}
    # Nor can a refresh take back what the user left out.
    r = token_request(gateway, auth, grant_type="refresh_token", refresh_token=issued["refresh_token"],
                      scope="files:read files:write")
    assert r.status_code == 400 and r.json()["error"] == "invalid_scope", r.text


# --- (d) refresh rotation and reuse detection, revocation ----------------------------

def test_refresh_rotation_and_reuse_through_the_sdk(gateway):
    """A public client (`none`), registered by the SDK itself. When its access
    token has expired the SDK refreshes, and gets a new refresh token each time.
    A stale copy of the client that still holds the rotated token presents it:
    Mandate refuses it (400 invalid_grant) and revokes the family, so the SDK
    falls back to a new authorization, and the original client's newer refresh
    token is refused too."""
    browser = new_browser(gateway)
    storage, recorder = MemoryStorage(), Recorder()
    provider = provider_for(gateway, sdk_metadata("Files agent (public)", auth_method="none"), storage, browser)
    seen: dict[str, OAuthToken] = {}

    async def read(p: OAuthClientProvider, r: Recorder):
        async with sdk_client(gateway, p, r) as client:
            return text_of(await client.call_tool("read_file", {"path": "notes.txt"}))

    async def scenario():
        browser.choices = [["files:read"]]
        async with sdk_client(gateway, provider, recorder) as client:
            text_of(await client.call_tool("read_file", {"path": "notes.txt"}))
            seen["first"] = storage.tokens
            expire(provider)
            text_of(await client.call_tool("read_file", {"path": "notes.txt"}))
            seen["second"] = storage.tokens
            expire(provider)
            text_of(await client.call_tool("read_file", {"path": "notes.txt"}))
            seen["third"] = storage.tokens

    run(scenario)
    info = storage.client_info
    [registered] = recorder.at("/register")
    assert registered.status == 201 and registered.sent["token_endpoint_auth_method"] == "none"
    assert info.token_endpoint_auth_method == "none" and info.client_secret is None
    first, second, third = seen["first"], seen["second"], seen["third"]
    refreshes = recorder.at("/token", grant_type="refresh_token")
    assert [x.form["refresh_token"] for x in refreshes] == [first.refresh_token, second.refresh_token]
    for x in refreshes:
        assert x.status == 200, x.body
        assert x.form["client_id"] == info.client_id
        assert x.form["resource"] == gateway.route_url
        assert "authorization" not in x.request_headers  # a public client
    assert len({first.refresh_token, second.refresh_token, third.refresh_token}) == 3
    assert len({first.access_token, second.access_token, third.access_token}) == 3
    assert scope_set(third.scope) == {"files:read"}
    assert claims(third.access_token)["aud"] == gateway.route_url
    assert len(browser.visits) == 1  # refreshing needs no user

    # A stale copy of the client (say, restored from a backup) with the first,
    # long rotated, refresh token and an expired access token.
    stale_storage, stale_recorder = MemoryStorage(info, first), Recorder()
    stale = provider_for(gateway, sdk_metadata("Files agent (public)", auth_method="none"), stale_storage, browser)
    expire(stale)
    assert run(read, stale, stale_recorder) == "hello from the files server"
    [reused] = stale_recorder.at("/token", grant_type="refresh_token")
    assert reused.form["refresh_token"] == first.refresh_token
    assert reused.status == 400 and reused.body["error"] == "invalid_grant", reused.body
    # The SDK then starts over with the client it has (no new registration),
    # for what the 401 names. The user is signed in and consented to that
    # already, so the browser goes straight back with a code (no page; the
    # scripted browser fails on any page it is not told to expect), and the
    # new code gets new tokens.
    assert not stale_recorder.at("/register")
    assert [x.status for x in stale_recorder.at("/token", grant_type="authorization_code")] == [200]
    again = browser.visits[1]
    assert not again.login_shown and again.offered is None
    assert again.params["client_id"] == info.client_id
    assert scope_set(again.params["scope"]) == {"files:read"}
    assert stale_storage.tokens.refresh_token not in {first.refresh_token, second.refresh_token,
                                                      third.refresh_token}

    # The whole family was revoked: the original client's current refresh token too.
    expire(provider)
    before = len(recorder.exchanges)
    assert run(read, provider, recorder) == "hello from the files server"
    later = recorder.exchanges[before:]
    [revoked] = [x for x in later if x.path == "/token" and x.form.get("grant_type") == "refresh_token"]
    assert revoked.form["refresh_token"] == third.refresh_token
    assert revoked.status == 400 and revoked.body["error"] == "invalid_grant", revoked.body
    assert [x.status for x in later if x.form.get("grant_type") == "authorization_code"] == [200]
    assert len(browser.visits) == 3 and browser.visits[2].offered is None


def direct_client(server: McpGatewayMandate, name: str) -> tuple[str, str]:
    """A confidential client registered with plain HTTP; (client_id, client_secret)."""
    r = requests.post(server.issuer + "/register", json={
        "client_name": name, "redirect_uris": [REDIRECT_URI],
        "grant_types": ["authorization_code", "refresh_token"]}, timeout=10)
    assert r.status_code == 201, r.text
    return r.json()["client_id"], r.json()["client_secret"]


def direct_tokens(server: McpGatewayMandate, auth: tuple[str, str], scopes: list[str],
                  approve: list[str] | None = None) -> dict:
    """A code for `scopes` through the real forms (PKCE S256), the user leaving
    `approve` (default: all of them) checked, redeemed at /token."""
    approve = scopes if approve is None else approve
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    browser = new_browser(server)
    browser.choices = [approve]
    visit = browser.authorize(server.issuer + "/authorize?" + urlencode({
        "response_type": "code", "client_id": auth[0], "redirect_uri": REDIRECT_URI,
        "scope": " ".join(scopes), "resource": server.route_url, "state": "s1",
        "code_challenge": challenge, "code_challenge_method": "S256"}))
    assert visit.login_shown and set(visit.offered) == set(scopes)
    assert visit.result["state"] == "s1" and visit.result["iss"] == server.issuer
    r = token_request(server, auth, grant_type="authorization_code", code=visit.result["code"],
                      redirect_uri=REDIRECT_URI, code_verifier=verifier, resource=server.route_url)
    assert r.status_code == 200, r.text
    assert scope_set(r.json()["scope"]) == set(approve)
    return r.json()


def token_request(server: McpGatewayMandate, auth: tuple[str, str], **form) -> requests.Response:
    r = requests.post(server.token_url, data=form, auth=auth, timeout=10)
    assert r.headers["Cache-Control"] == "no-store"
    return r


def test_refresh_rotation_and_reuse_directly(gateway):
    """The same rules with plain HTTP: a confidential client gets a code through
    the forms, redeems it, and refreshes. Every refresh rotates and may narrow
    the scope; presenting a rotated token is refused and revokes the whole
    family, the newest token included."""
    auth = direct_client(gateway, "Direct")
    issued = direct_tokens(gateway, auth, ["files:read", "files:write"])
    r1 = issued["refresh_token"]

    r = token_request(gateway, auth, grant_type="refresh_token", refresh_token=r1)
    assert r.status_code == 200, r.text
    refreshed = r.json()
    r2 = refreshed["refresh_token"]
    assert r2 != r1 and refreshed["access_token"] != issued["access_token"]
    assert scope_set(refreshed["scope"]) == {"files:read", "files:write"}
    assert claims(refreshed["access_token"])["aud"] == gateway.route_url

    r = token_request(gateway, auth, grant_type="refresh_token", refresh_token=r2, scope="files:read")
    assert r.status_code == 200, r.text
    assert scope_set(r.json()["scope"]) == {"files:read"}
    r3 = r.json()["refresh_token"]
    assert r3 not in (r1, r2)

    # r1 was rotated long ago: refused, and its family is gone (r3 included).
    r = token_request(gateway, auth, grant_type="refresh_token", refresh_token=r1)
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant", r.text
    r = token_request(gateway, auth, grant_type="refresh_token", refresh_token=r3)
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant", r.text


REFUSED_REFRESHES = {
    "wider-scope": ({"scope": "files:read files:delete"}, "invalid_scope"),
    "other-resource": ({"resource": "https://api.example.com"}, "invalid_target"),
}


@pytest.mark.parametrize("case", list(REFUSED_REFRESHES))
def test_refused_refresh_leaves_the_token_usable(gateway, case):
    """A refresh that widens the scope or changes the resource is refused, and
    the refusal does not spend the refresh token: the client's natural retry,
    the same token without the bad parameter, is a plain refresh (not reuse),
    and rotation goes on from there."""
    bad, error = REFUSED_REFRESHES[case]
    auth = direct_client(gateway, "Direct, refused refresh")
    r1 = direct_tokens(gateway, auth, ["files:read"])["refresh_token"]
    r = token_request(gateway, auth, grant_type="refresh_token", refresh_token=r1, **bad)
    assert r.status_code == 400 and r.json()["error"] == error, r.text
    assert "access_token" not in r.json() and "refresh_token" not in r.json()

    r = token_request(gateway, auth, grant_type="refresh_token", refresh_token=r1)
    assert r.status_code == 200, r.text
    retried = r.json()
    assert scope_set(retried["scope"]) == {"files:read"}
    assert claims(retried["access_token"])["aud"] == gateway.route_url
    r2 = retried["refresh_token"]
    assert r2 != r1
    # r1 is spent now (by the retry, not by the refusal): reusing it revokes the family.
    r = token_request(gateway, auth, grant_type="refresh_token", refresh_token=r2)
    assert r.status_code == 200, r.text
    r = token_request(gateway, auth, grant_type="refresh_token", refresh_token=r1)
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant", r.text


def revoke(server: McpGatewayMandate, auth: tuple[str, str], token: str, **form) -> requests.Response:
    return requests.post(server.revocation_url, data={"token": token, **form}, auth=auth, timeout=10)


def test_refresh_token_revocation(gateway):
    """RFC 7009 for refresh tokens: a client revokes its current refresh token
    (`token_type_hint=refresh_token`; Mandate revokes the token's family, of
    which it is the only unspent member), and it can no longer be used. Another
    client may not revoke it, and that refusal leaves it usable; an unknown
    token is answered with success (RFC 7009 §2.2)."""
    auth = direct_client(gateway, "Direct, revoking")
    other = direct_client(gateway, "Direct, someone else")
    r1 = direct_tokens(gateway, auth, ["files:read"])["refresh_token"]

    r = revoke(gateway, other, r1, token_type_hint="refresh_token")
    assert r.status_code == 400 and r.json()["error"] == "unauthorized_client", r.text
    r = token_request(gateway, auth, grant_type="refresh_token", refresh_token=r1)
    assert r.status_code == 200, r.text
    r2 = r.json()["refresh_token"]

    r = revoke(gateway, auth, "not-a-token-we-issued", token_type_hint="refresh_token")
    assert r.status_code == 200, r.text
    r = revoke(gateway, auth, r2, token_type_hint="refresh_token")
    assert r.status_code == 200, r.text
    assert r.headers["Cache-Control"] == "no-store"
    r = token_request(gateway, auth, grant_type="refresh_token", refresh_token=r2)
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant", r.text
    r = revoke(gateway, auth, r2)  # revoked already, and no hint: still success
    assert r.status_code == 200, r.text


# --- (e) client ID metadata documents ------------------------------------------------
#
# The SDK's provider, given a `client_metadata_url`, uses that URL as its client
# ID instead of registering, when the AS metadata says
# `client_id_metadata_document_supported: true`. Its constructor accepts only
# https URLs with a path (`is_valid_client_metadata_url`). Mandate fetches
# documents with the bundled web PKI roots only (no self-signed certificate can
# be trusted) and from public addresses only, so the one way to serve a
# document locally is over http on loopback, with Mandate's danger setting
# `insecure_allow_http_client_metadata_on_loopback`, which the SDK's
# constructor refuses (the xfail below). The SDK's flow itself does not check
# the scheme again, so the sign-in test sets the URL on the provider's context
# after construction: everything from discovery on is the SDK's own code.

CIMD_REFUSED = ("mcp 2.3.0 OAuthClientProvider refuses a client_metadata_url that is not https "
                "(ValueError: client_metadata_url must be a valid HTTPS URL with a non-root pathname); "
                "a test can only serve its document over http on loopback")


@pytest.fixture(scope="module")
def documents():
    server = DocumentServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def cimd_gateway(tmp_path_factory, files_server):
    """The documented route, on a Mandate that also fetches client metadata
    documents over http on loopback (the named danger setting, for tests only).
    Open registration stays on, to show the SDK does not use it."""
    server = McpGatewayMandate(tmp_path_factory.mktemp("mcp-gateway-cimd"), "EdDSA", upstream=files_server.url,
                               registration={"insecure_allow_http_client_metadata_on_loopback": True}).start()
    yield server
    server.stop()


def client_document(url: str, metadata: OAuthClientMetadata) -> dict:
    """The SDK client's metadata as a client ID metadata document: what it
    would have registered, plus `client_id`, the document's own URL."""
    return {"client_id": url, **metadata.model_dump(mode="json", exclude_none=True)}


def cimd_metadata(name: str) -> OAuthClientMetadata:
    # A URL client ID has no secret: the SDK uses `none` (create_client_info_from_metadata_url).
    return sdk_metadata(name, auth_method="none")


def authorize_url(server: McpGatewayMandate, client_id: str, state: str = "s1") -> str:
    challenge = base64.urlsafe_b64encode(hashlib.sha256(b"v" * 43).digest()).rstrip(b"=").decode()
    return server.issuer + "/authorize?" + urlencode({
        "response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT_URI,
        "scope": "files:read", "resource": server.route_url, "state": state,
        "code_challenge": challenge, "code_challenge_method": "S256"})


@pytest.mark.xfail(strict=True, raises=ValueError, reason=CIMD_REFUSED)
def test_sdk_takes_an_http_client_metadata_url(cimd_gateway, documents):
    """What an application would write: the document URL given to the
    provider's constructor. The constructor refuses it (not https)."""
    metadata = cimd_metadata("Files agent (http document)")
    url = documents.serve("/sdk-http/client.json", client_document(documents.url("/sdk-http/client.json"), metadata))
    browser = new_browser(cimd_gateway)
    browser.choices = [["files:read"]]
    provider = OAuthClientProvider(cimd_gateway.route_url, metadata, MemoryStorage(),
                                   redirect_handler=browser.redirect_handler,
                                   callback_handler=browser.callback_handler, client_metadata_url=url)
    listed, _ = run(sign_in_and_read, cimd_gateway, provider, Recorder())
    assert listed == ["read_file"]


def test_sdk_signs_in_with_a_client_id_metadata_document(cimd_gateway, files_server, documents):
    """The SDK's provider with a client ID metadata document served by the
    test: it sees `client_id_metadata_document_supported`, never calls
    /register, and sends the user to /authorize with the document's URL as
    client ID. Mandate fetches the document (the sign-in page names the client
    by the document's `client_name`), the user signs in and consents through
    the real forms, the code is redeemed by a public client (`none`, no
    Authorization header), and the SDK lists the tools and calls one through
    the gateway. An expired token is refreshed with the same client ID (the
    document lists `refresh_token`)."""
    metadata = cimd_metadata("Files agent (document)")
    path = "/agents/files/client.json"
    url = documents.serve(path, client_document(documents.url(path), metadata))
    browser = new_browser(cimd_gateway)
    browser.choices = [["files:read"]]
    storage, recorder = MemoryStorage(), Recorder()
    provider = provider_for(cimd_gateway, metadata, storage, browser)
    provider.context.client_metadata_url = url  # past the constructor's https-only check (see above)

    async def scenario():
        async with sdk_client(cimd_gateway, provider, recorder) as client:
            listed = tool_names(await client.list_tools())
            read = text_of(await client.call_tool("read_file", {"path": "notes.txt"}))
            first = storage.tokens
            expire(provider)
            again = text_of(await client.call_tool("read_file", {"path": "notes.txt"}))
            return listed, read, first, again

    listed, read, first, again = run(scenario)
    assert listed == ["read_file"]
    assert read == again == "hello from the files server"

    # Discovery, then straight to the token: no registration.
    assert cimd_gateway.metadata()["client_id_metadata_document_supported"] is True
    assert not recorder.at("/register")
    paths = [(x.method, x.path, x.status) for x in recorder.exchanges[:5]]
    assert paths == [("POST", ROUTE, 401), ("GET", PRM_PATH, 200),
                     ("GET", "/.well-known/oauth-authorization-server", 200), ("POST", "/token", 200),
                     ("POST", ROUTE, 200)], paths
    assert {urlsplit(x.url).netloc for x in recorder.exchanges} == {urlsplit(cimd_gateway.issuer).netloc}
    info = storage.client_info
    assert info.client_id == url and info.token_endpoint_auth_method == "none" and info.client_secret is None

    # The user's side: the real forms, for the document's client.
    [visit] = browser.visits
    assert visit.params["client_id"] == url
    assert visit.params["redirect_uri"] == REDIRECT_URI
    assert visit.params["resource"] == cimd_gateway.route_url
    assert visit.login_shown and visit.offered == ["files:read"]
    assert "Files agent (document)" in visit.pages[0]
    assert visit.result["iss"] == cimd_gateway.issuer and visit.result["state"] == visit.params["state"]
    assert documents.fetched(path), "Mandate never fetched the document"

    # The token endpoint: a public client named by its URL, code then refresh.
    [code] = recorder.at("/token", grant_type="authorization_code")
    [refresh] = recorder.at("/token", grant_type="refresh_token")
    for x in (code, refresh):
        assert x.status == 200, x.body
        assert x.form["client_id"] == url
        assert x.form["resource"] == cimd_gateway.route_url
        assert "authorization" not in x.request_headers
    assert refresh.form["refresh_token"] == first.refresh_token
    for token in (first, storage.tokens):
        c = claims(token.access_token)
        assert c["client_id"] == url and c["aud"] == cimd_gateway.route_url
        assert scope_set(c["scope"]) == {"files:read"}
    assert storage.tokens.refresh_token != first.refresh_token
    assert len(browser.visits) == 1
    assert files_server.base_url not in str([x.url for x in recorder.exchanges])


def bad_documents(documents: DocumentServer) -> dict[str, str]:
    """Documents Mandate must refuse, served at their own paths; name -> URL."""
    def doc(path: str, **changes) -> str:
        d = {**client_document(documents.url(path), cimd_metadata("Bad agent")), **changes}
        return documents.serve(path, {k: v for k, v in d.items() if v is not None})

    return {
        "other-client-id": doc("/bad/other.json", client_id=documents.url("/bad/elsewhere.json")),
        "shared-secret": doc("/bad/secret.json", token_endpoint_auth_method="client_secret_basic"),
        "client-credentials": doc("/bad/cc.json", grant_types=["client_credentials"]),
        "no-redirect-uris": doc("/bad/noredirect.json", redirect_uris=None),
        "redirected": documents.serve("/bad/redirect.json", status=302,
                                      headers={"Location": documents.url("/agents/files/client.json")}, body=b""),
        "too-large": doc("/bad/large.json", client_name="x" * 100, padding="y" * 6000),
        "missing": documents.url("/bad/missing.json"),
    }


BAD_DOCUMENTS = ["other-client-id", "shared-secret", "client-credentials", "no-redirect-uris", "redirected",
                 "too-large", "missing"]


@pytest.mark.parametrize("case", BAD_DOCUMENTS)
def test_authorize_refuses_a_bad_client_metadata_document(cimd_gateway, documents, case):
    """A document whose `client_id` is not its own URL (or that asks for a
    shared secret or `client_credentials`, lists no redirect URI, redirects,
    exceeds 5 KB, or is not there) names no client: /authorize shows an error
    page (400) and never redirects to the `redirect_uri` it was given. A good
    document at the same server, asked the same way, gets the sign-in page."""
    url = bad_documents(documents)[case]
    before = len(documents.fetches)
    r = requests.get(authorize_url(cimd_gateway, url), allow_redirects=False, timeout=10)
    assert r.status_code == 400, (r.status_code, r.headers.get("Location"), r.text[:500])
    assert "Location" not in r.headers
    assert r.headers["Content-Type"].startswith("text/html")
    assert urlsplit(url).path in [f.path for f in documents.fetches[before:]]  # it was fetched, and refused

    good_path = "/good/client.json"
    good = documents.serve(good_path, client_document(documents.url(good_path), cimd_metadata("Good agent")))
    r = requests.get(authorize_url(cimd_gateway, good), allow_redirects=False, timeout=10)
    assert r.status_code == 200 and "/login" in r.text, r.text[:500]


def test_without_the_danger_setting_loopback_documents_are_refused(gateway, documents):
    """A Mandate without `insecure_allow_http_client_metadata_on_loopback`
    still advertises CIMD (for https documents on public addresses) but does not
    fetch an http document on loopback: error page, no redirect, no fetch."""
    assert gateway.metadata()["client_id_metadata_document_supported"] is True
    path = "/strict/client.json"
    url = documents.serve(path, client_document(documents.url(path), cimd_metadata("Loopback agent")))
    r = requests.get(authorize_url(gateway, url), allow_redirects=False, timeout=10)
    assert r.status_code == 400 and "Location" not in r.headers, (r.status_code, r.text[:500])
    assert not documents.fetched(path)
