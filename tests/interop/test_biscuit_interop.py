"""(6) Biscuits minted by Mandate are ordinary Biscuits: biscuit-python verifies
them with the root key the metadata publishes, reads their authority block,
attenuates them offline, and the gateway enforces what Python appended.

One Mandate (`biscuit_gateway.BiscuitGatewayMandate`) runs with a client,
`tool-agent`, that may exchange `agent-basic`'s tokens (RFC 8693) for a Biscuit,
and an MCP route `/mcp/files` in front of a small Python MCP server
(`biscuit_gateway.McpUpstream`: `read_file`, `write_file`, `delete_file`,
whose annotations make them read, write and destructive). This mirrors the Rust
end-to-end test `crates/mandate/tests/suite/biscuit.rs`, with every Biscuit
operation on the holder's side done by biscuit-python instead of
`mandate_biscuit`.

(a) minting: the metadata's root keys, verification with `root_key_id`, the
    authority block's facts and expiry check;
(b) attenuation in Python, enforced by the gateway (refusals name the check,
    never reach the upstream, and are audited);
(c) tampering: removed, spliced, altered and forged blocks get 401;
(d) sealing: a sealed token is accepted, and Python cannot append to it;
(e) DPoP-bound Biscuits keep their binding through Python's attenuation.

Not covered: a token attenuated in Python and then again by Mandate's own
`mandate_biscuit::attenuate`, which no Mandate command or endpoint offers yet.
"""
from __future__ import annotations

import datetime
import hashlib
import time

import pytest
import requests
from biscuit_auth import (Algorithm, AuthorizationError, AuthorizerBuilder, Biscuit, BiscuitBuildError,
                          BiscuitBuilder, BiscuitValidationError, BlockBuilder, Fact, KeyPair, PublicKey, Rule,
                          UnverifiedBiscuit)

from biscuit_gateway import (ACTOR_CLIENT, BISCUIT_TYPE, ROUTE, SUBJECT_CLIENT, BiscuitGatewayMandate, Envelope,
                             McpUpstream, b64decode, b64encode, parse_challenges, seal, signed_block_fields)
from dpop_gateway import DpopKey
from mandate_server import RESOURCE

UTC = datetime.timezone.utc
FAR_FUTURE = datetime.datetime(2100, 1, 1, tzinfo=UTC)
LONG_AGO = datetime.datetime(2000, 1, 1, tzinfo=UTC)
INITIALIZE = {"protocolVersion": "2025-06-18", "capabilities": {},
              "clientInfo": {"name": "biscuit-interop", "version": "1"}}


# --- fixtures ---------------------------------------------------------------

@pytest.fixture(scope="module")
def upstream():
    service = McpUpstream().start()
    yield service
    service.stop()


@pytest.fixture(scope="module")
def mandate_bz(tmp_path_factory, upstream) -> BiscuitGatewayMandate:
    """This module's Mandate, with the MCP route in front of `upstream`."""
    mandate = BiscuitGatewayMandate(tmp_path_factory.mktemp("biscuit-gateway"), "EdDSA",
                                    upstream=upstream.url).start()
    yield mandate
    mandate.stop()


@pytest.fixture(scope="module")
def minted(mandate_bz) -> dict:
    """One exchange for a `read write` Biscuit: the token response, and the
    time just before and after it."""
    before = time.time()
    resp = mandate_bz.exchange_for_biscuit("read write")
    after = time.time()
    assert resp.status_code == 200, resp.text
    return {"body": resp.json(), "before": before, "after": after}


@pytest.fixture
def token(minted) -> str:
    return minted["body"]["access_token"]


@pytest.fixture
def roots(mandate_bz):
    """A biscuit-python root key provider over the published keys, by
    `root_key_id`; `roots.asked` lists the ids biscuit-python asked for."""
    return RootProvider(mandate_bz.root_keys_published())


# --- helpers ----------------------------------------------------------------

class RootProvider:
    """The callable biscuit-python takes as `root`: given the token's
    `root_key_id`, the published key with that id (none: refused)."""

    def __init__(self, published: list[dict]):
        self.keys = {k["root_key_id"]: public_key(k) for k in published}
        self.asked: list[int | None] = []

    def __call__(self, root_key_id: int | None = None) -> PublicKey:
        self.asked.append(root_key_id)
        return self.keys[root_key_id]


def public_key(published: dict) -> PublicKey:
    """A `biscuit_root_keys` entry as a biscuit-python key. Mandate publishes
    the algorithm and the raw key (hex) apart; `PublicKey(str)` wants
    Biscuit's text form `ed25519/<hex>`, `from_bytes` the raw bytes."""
    assert published["algorithm"] == "ed25519"
    key = PublicKey.from_bytes(bytes.fromhex(published["public_key"]), Algorithm.Ed25519)
    assert key.to_bytes() == PublicKey(f"{published['algorithm']}/{published['public_key']}").to_bytes()
    return key


def attenuate(token: str, roots, source: str, params: dict | None = None) -> str:
    """The holder's narrowing: verify (biscuit-python's `UnverifiedBiscuit`
    cannot serialize), append a block, serialize."""
    return Biscuit.from_base64(token, roots).append(BlockBuilder(source, params)).to_base64()


def authority_facts(biscuit: Biscuit) -> dict[str, list[list]]:
    """The terms of each vocabulary fact, as an authorizer with nothing of
    its own sees them (the authority block only: appended blocks' facts are
    not trusted)."""
    authorizer = AuthorizerBuilder().build(biscuit)
    facts = {}
    for name, arity in [("issuer", 1), ("subject", 1), ("client", 1), ("audience", 1), ("scope", 1),
                        ("token_id", 1), ("expires", 1), ("actor", 3), ("dpop_jkt", 1)]:
        variables = ", ".join(f"$v{i}" for i in range(arity))
        facts[name] = [f.terms for f in authorizer.query(Rule(f"q({variables}) <- {name}({variables})"))]
    return facts


def block_checks(token: str, index: int) -> list[str]:
    """The checks of one block, as biscuit-python prints them (no `;`)."""
    source = UnverifiedBiscuit.from_base64(token).block_source(index)
    return [line.rstrip(";") for line in source.splitlines() if line.startswith(("check ", "reject "))]


def mcp(mandate_bz, authorization: str, method: str, params: dict | None = None,
        dpop: str | None = None) -> requests.Response:
    """One JSON-RPC request to the MCP route, as an MCP client sends it."""
    headers = {"Authorization": authorization, "Accept": "application/json, text/event-stream"}
    if dpop is not None:
        headers["DPoP"] = dpop
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params or {}}
    return requests.post(mandate_bz.route_url, headers=headers, json=body, timeout=10)


def call_tool(mandate_bz, token: str, name: str, **kw) -> requests.Response:
    return mcp(mandate_bz, f"Bearer {token}", "tools/call", {"name": name, "arguments": {}}, **kw)


def assert_called(resp: requests.Response, upstream: McpUpstream, name: str) -> None:
    assert resp.status_code == 200, (resp.status_code, resp.headers.get("WWW-Authenticate"), resp.text)
    assert resp.json()["result"]["content"][0]["text"] == f"called {name}"
    assert upstream.last_call()["name"] == name


def audit_seq(mandate_bz) -> int:
    """The sequence number of the last audit event so far."""
    return max((e["seq"] for e in mandate_bz.audit()), default=0)


def assert_refused_by_check(mandate_bz, upstream: McpUpstream, token: str, tool: str, block: int,
                            check: str) -> None:
    """Calling `tool` with `token` gets 403 naming `check` of `block` in the
    challenge, the body and a new audit event, and nothing is sent upstream."""
    calls_before, seq_before = len(upstream.tool_calls()), audit_seq(mandate_bz)
    resp = call_tool(mandate_bz, token, tool)
    assert resp.status_code == 403, (resp.status_code, resp.text)
    named = f"biscuit: block {block} check failed: {check}"
    challenge = parse_challenges(resp.headers["WWW-Authenticate"])["Bearer"]
    assert challenge["error"] == "insufficient_scope"
    # RFC 6750 §3: error_description may hold no '"' or '\'; Mandate writes them as "'".
    assert challenge["error_description"] == named.replace('"', "'")
    assert resp.json() == {"error": "insufficient_scope", "error_description": named}
    assert len(upstream.tool_calls()) == calls_before, "a refused call never reaches the upstream"
    # Gateway decisions are audited asynchronously: an earlier test's denial can
    # land after seq_before, so wait for this refusal's own event.
    denied = mandate_bz.audit_until(
        lambda e: e["seq"] > seq_before and e["kind"] == "gateway.denied"
        and f"biscuit_check_failed: {named} " in (e["reason"] or ""))
    assert denied["outcome"] == "failure"
    assert f"reason=biscuit_check_failed: {named} " in denied["reason"], denied
    assert f"route={ROUTE} " in denied["reason"] and "status=403" in denied["reason"], denied


def assert_invalid_token(mandate_bz, upstream: McpUpstream, token: str) -> None:
    """401 `invalid_token` for a tool call and a listing, nothing sent upstream."""
    before = len(upstream.seen)
    for resp in (call_tool(mandate_bz, token, "read_file"), mcp(mandate_bz, f"Bearer {token}", "tools/list")):
        assert resp.status_code == 401, (resp.status_code, resp.text)
        challenge = parse_challenges(resp.headers["WWW-Authenticate"])
        assert challenge["Bearer"]["error"] == "invalid_token", challenge
    assert len(upstream.seen) == before, "a refused token never reaches the upstream"


def as_date(t: datetime.datetime) -> str:
    """A date as Biscuit prints it (RFC 3339, UTC, `Z`)."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- (a) minting ------------------------------------------------------------

def test_metadata_publishes_the_biscuit_root_key(mandate_bz):
    metadata = requests.get(mandate_bz.issuer + "/.well-known/oauth-authorization-server", timeout=10).json()
    assert BISCUIT_TYPE in metadata["mandate_token_types_supported"]
    (published,) = metadata["biscuit_root_keys"]
    assert set(published) == {"kid", "root_key_id", "algorithm", "public_key"}
    assert published["algorithm"] == "ed25519"
    assert len(bytes.fromhex(published["public_key"])) == 32
    # The documented derivation: the first four bytes of SHA-256(kid), big-endian.
    assert published["root_key_id"] == int.from_bytes(hashlib.sha256(published["kid"].encode()).digest()[:4], "big")
    public_key(published)


def test_minted_biscuit_verifies_in_biscuit_python(mandate_bz, minted, token, roots):
    body = minted["body"]
    assert body["issued_token_type"] == BISCUIT_TYPE
    assert body["token_type"] == "Bearer"
    assert body["scope"] == "read write"
    assert "." not in token  # not a JWT: the gateway tells them apart by this

    (published_id,) = roots.keys
    assert UnverifiedBiscuit.from_base64(token).root_key_id() == published_id
    biscuit = Biscuit.from_base64(token, roots)
    assert roots.asked == [published_id], "biscuit-python picked the key by the token's root_key_id"
    assert biscuit.block_count() == 1
    assert Biscuit.from_bytes(bytes(biscuit.to_bytes()), roots).to_base64() == biscuit.to_base64()

    # Any other key, under the same id or as the only key, does not verify it.
    stranger = KeyPair().public_key
    with pytest.raises(BiscuitValidationError):
        Biscuit.from_base64(token, lambda root_key_id=None: stranger)
    with pytest.raises(BiscuitValidationError):
        Biscuit.from_base64(token, stranger)


def test_authority_block_states_the_grant(mandate_bz, minted, token, roots):
    biscuit = Biscuit.from_base64(token, roots)
    facts = authority_facts(biscuit)
    assert facts["issuer"] == [[mandate_bz.issuer]]
    assert facts["subject"] == [[SUBJECT_CLIENT]], "sub stays the original principal"
    assert facts["client"] == [[ACTOR_CLIENT]]
    assert facts["audience"] == [[RESOURCE]]
    assert sorted(s for (s,) in facts["scope"]) == ["read", "write"]
    assert facts["actor"] == [[0, ACTOR_CLIENT, ACTOR_CLIENT]]
    assert facts["dpop_jkt"] == []
    ((token_id,),) = facts["token_id"]
    assert token_id
    ((expires,),) = facts["expires"]
    assert isinstance(expires, datetime.datetime)
    assert minted["before"] < expires.timestamp() <= minted["after"] + minted["body"]["expires_in"] + 1

    # The expiry check is in the authority block, and biscuit-python enforces it.
    assert block_checks(token, 0) == [f"check if time($t), $t < {as_date(expires)}"]

    def authorize_at(t: datetime.datetime) -> int:
        builder = AuthorizerBuilder("allow if true")
        builder.add_fact(Fact("time({t})", {"t": t}))
        return builder.build(biscuit).authorize()

    assert authorize_at(expires - datetime.timedelta(seconds=1)) == 0
    with pytest.raises(AuthorizationError, match="block n°0"):
        authorize_at(expires)

    # The exchange is audited under the Biscuit's token_id, marked as a Biscuit.
    exchanged = mandate_bz.audit_until(lambda e: e["kind"] == "token.exchanged" and e["jti"] == token_id)
    assert exchanged["reason"].startswith("biscuit;")
    assert exchanged["client_id"] == ACTOR_CLIENT and exchanged["subject"] == SUBJECT_CLIENT


def test_unattenuated_biscuit_works_at_the_gateway(mandate_bz, upstream, token):
    """The control for what follows: the authority block alone allows read and
    write tools (the token has `read write`), not destructive ones."""
    for name in ("read_file", "write_file"):
        assert_called(call_tool(mandate_bz, token, name), upstream, name)
    seen = upstream.last_call()
    assert seen["identity"]["x-mandate-subject"] == SUBJECT_CLIENT
    assert seen["identity"]["x-mandate-client-id"] == ACTOR_CLIENT
    assert seen["authorization"] is None, "the token is not passed on"
    before = len(upstream.tool_calls())
    resp = call_tool(mandate_bz, token, "delete_file")
    assert resp.status_code == 403
    assert parse_challenges(resp.headers["WWW-Authenticate"])["Bearer"]["scope"] == "agent:execute"
    assert len(upstream.tool_calls()) == before


# --- (b) attenuation in Python, enforced by the gateway ---------------------

# (name, block source, parameters, a tool it allows, a tool it refuses,
#  the index of the check named for the refusal)
NARROWINGS = [
    ("tool", 'check if tool("read_file")', None, "read_file", "write_file", 0),
    ("scope", 'check all required_scope($s), ["read"].contains($s)', None, "read_file", "write_file", 0),
    ("expired", "check if time($t), $t <= {limit}", {"limit": LONG_AGO}, None, "read_file", 0),
    ("all three", 'check if tool("read_file");\n'
                  "check if time($t), $t <= {limit};\n"
                  'check all required_scope($s), ["read"].contains($s)',
     {"limit": FAR_FUTURE}, "read_file", "write_file", 0),
    ("time and scope", "check if time($t), $t <= {limit};\n"
                       'check all required_scope($s), ["read"].contains($s)',
     {"limit": FAR_FUTURE}, "read_file", "write_file", 1),
]


@pytest.mark.parametrize("name,source,params,allowed,refused,named", NARROWINGS, ids=[n[0] for n in NARROWINGS])
def test_python_attenuation_is_enforced(mandate_bz, upstream, token, roots, name, source, params, allowed,
                                        refused, named):
    narrowed = attenuate(token, roots, source + ";", params)
    checks = block_checks(narrowed, 1)
    assert len(checks) == source.count(";") + 1
    if allowed is not None:
        assert_called(call_tool(mandate_bz, narrowed, allowed), upstream, allowed)
    assert_refused_by_check(mandate_bz, upstream, narrowed, refused, 1, checks[named])
    # The refused tool is one the unattenuated token may call.
    assert_called(call_tool(mandate_bz, token, refused), upstream, refused)


def test_each_python_block_is_run(mandate_bz, upstream, token, roots):
    """Two blocks appended in Python, one after the other: the second narrows
    what the first still allows, and its failed check is named as block 2.
    A listing has no `tool` fact, so a tool check refuses it."""
    first = attenuate(token, roots, 'check if tool($t), ["read_file", "write_file"].contains($t);')
    second = attenuate(first, roots, 'check if tool("read_file");')
    assert Biscuit.from_base64(second, roots).block_count() == 3
    assert_called(call_tool(mandate_bz, first, "write_file"), upstream, "write_file")
    assert_called(call_tool(mandate_bz, second, "read_file"), upstream, "read_file")
    assert_refused_by_check(mandate_bz, upstream, second, "write_file", 2, 'check if tool("read_file")')
    resp = mcp(mandate_bz, f"Bearer {second}", "tools/list")
    assert resp.status_code == 403
    assert "check failed: check if tool($t)" in resp.json()["error_description"]


def test_appended_facts_grant_nothing(mandate_bz, upstream, token, roots):
    """A block may state facts, but only the authority block's are trusted:
    a `scope("agent:execute")` appended in Python does not reach the
    destructive tool."""
    widened = attenuate(token, roots, 'scope("agent:execute"); check if true;')
    before = len(upstream.tool_calls())
    resp = call_tool(mandate_bz, widened, "delete_file")
    assert resp.status_code == 403
    assert parse_challenges(resp.headers["WWW-Authenticate"])["Bearer"]["scope"] == "agent:execute"
    assert len(upstream.tool_calls()) == before


def test_reject_if_narrows_scopes_and_keeps_the_session_usable(mandate_bz, upstream, token, roots):
    """`reject if` (Datalog 3.3) narrows the scopes without refusing requests
    that need none: `initialize` and `tools/list` go through, a write does not."""
    narrowed = attenuate(token, roots, 'reject if required_scope($s), !["read"].contains($s);')
    assert mcp(mandate_bz, f"Bearer {narrowed}", "initialize", INITIALIZE).status_code == 200
    assert mcp(mandate_bz, f"Bearer {narrowed}", "tools/list").status_code == 200
    assert_called(call_tool(mandate_bz, narrowed, "read_file"), upstream, "read_file")
    assert_refused_by_check(mandate_bz, upstream, narrowed, "write_file", 1,
                            'reject if required_scope($s), !["read"].contains($s)')


def test_tools_list_hides_tools_the_biscuit_forbids(mandate_bz, token, roots):
    narrowed = attenuate(token, roots, 'reject if required_scope($s), !["read"].contains($s);')
    resp = mcp(mandate_bz, f"Bearer {narrowed}", "tools/list")
    assert resp.status_code == 200, resp.text
    listed = [t["name"] for t in resp.json()["result"]["tools"]]
    assert "read_file" in listed
    assert call_tool(mandate_bz, narrowed, "write_file").status_code == 403
    assert "write_file" not in listed


# --- (c) tampering ----------------------------------------------------------

def _block_removed(token, roots, mandate_bz):
    """The narrowing block dropped, the proof kept."""
    narrowed = Envelope.parse(attenuate(token, roots, 'check if tool("read_file");'))
    narrowed.blocks.pop()
    return narrowed.serialize()


def _middle_block_removed(token, roots, mandate_bz):
    """Of two appended blocks, the narrowing one dropped; the other kept, and the proof."""
    two = attenuate(attenuate(token, roots, 'check if tool("read_file");'), roots,
                    "check if time($t), $t <= {limit};", {"limit": FAR_FUTURE})
    envelope = Envelope.parse(two)
    del envelope.blocks[0]
    return envelope.serialize()


def _spliced_from_another_biscuit(token, roots, mandate_bz):
    """This token's authority block, with a wide block (and its proof) from
    an attenuation of another Biscuit of the same issuer."""
    other = mandate_bz.exchange_for_biscuit("read write").json()["access_token"]
    wide = Envelope.parse(attenuate(other, roots, "check if time($t), $t <= {limit};", {"limit": FAR_FUTURE}))
    narrow = Envelope.parse(attenuate(token, roots, 'check if tool("read_file");'))
    return Envelope(narrow.root_key_id, narrow.authority, wide.blocks, wide.proof).serialize()


def _proof_from_another_attenuation(token, roots, mandate_bz):
    """Two attenuations of this token: one's blocks with the other's proof."""
    narrow = Envelope.parse(attenuate(token, roots, 'check if tool("read_file");'))
    wide = Envelope.parse(attenuate(token, roots, "check if time($t), $t <= {limit};", {"limit": FAR_FUTURE}))
    return Envelope(narrow.root_key_id, narrow.authority, wide.blocks, narrow.proof).serialize()


def _block_edited(token, roots, mandate_bz):
    """The narrowing block's tool name rewritten in place (same length)."""
    raw = b64decode(attenuate(token, roots, 'check if tool("read_file");'))
    assert raw.count(b"read_file") == 1
    return b64encode(raw.replace(b"read_file", b"wipe_disk"))


def _authority_edited(token, roots, mandate_bz):
    """The authority block's subject rewritten in place (same length)."""
    raw = b64decode(token)
    assert raw.count(SUBJECT_CLIENT.encode()) == 1
    return b64encode(raw.replace(SUBJECT_CLIENT.encode(), b"agent-admin"))


def _signature_flipped(token, roots, mandate_bz):
    """One bit of the appended block's signature flipped."""
    envelope = Envelope.parse(attenuate(token, roots, 'check if tool("read_file");'))
    fields = signed_block_fields(envelope.blocks[0])
    signature = fields[3]
    raw = b64decode(envelope.serialize())
    flipped = bytes([signature[0] ^ 1]) + signature[1:]
    assert raw.count(signature) == 1
    return b64encode(raw.replace(signature, flipped))


def _forged_root(token, roots, mandate_bz):
    """The same authority block, with the published root_key_id, signed by another key."""
    builder = BiscuitBuilder(UnverifiedBiscuit.from_base64(token).block_source(0))
    builder.set_root_key_id(UnverifiedBiscuit.from_base64(token).root_key_id())
    return builder.build(KeyPair().private_key).to_base64()


def _unknown_root_key_id(token, roots, mandate_bz):
    builder = BiscuitBuilder(UnverifiedBiscuit.from_base64(token).block_source(0))
    builder.set_root_key_id(UnverifiedBiscuit.from_base64(token).root_key_id() ^ 1)
    return builder.build(KeyPair().private_key).to_base64()


def _character_flipped(token, roots, mandate_bz):
    """One base64 character in the middle changed (the Rust test's tampering)."""
    narrowed = attenuate(token, roots, 'check if tool("read_file");')
    i = len(narrowed) // 2
    return narrowed[:i] + ("B" if narrowed[i] == "A" else "A") + narrowed[i + 1:]


TAMPERINGS = [_block_removed, _middle_block_removed, _spliced_from_another_biscuit,
              _proof_from_another_attenuation, _block_edited, _authority_edited, _signature_flipped,
              _forged_root, _unknown_root_key_id, _character_flipped]


@pytest.mark.parametrize("tamper", TAMPERINGS, ids=[t.__name__.strip("_") for t in TAMPERINGS])
def test_tampered_biscuit_is_refused(mandate_bz, upstream, token, roots, tamper):
    tampered = tamper(token, roots, mandate_bz)
    assert tampered != token
    if tamper is not _character_flipped:
        # Still a well-formed Biscuit: only its signatures are wrong.
        UnverifiedBiscuit.from_base64(tampered)
    with pytest.raises(BiscuitValidationError):
        Biscuit.from_base64(tampered, roots)
    assert_invalid_token(mandate_bz, upstream, tampered)


def test_envelope_round_trip_is_exact(token, roots):
    """The tampering helpers rewrite the envelope; untouched, the rewrite is
    the token byte for byte, and still verifies."""
    narrowed = attenuate(token, roots, 'check if tool("read_file");')
    assert b64decode(Envelope.parse(narrowed).serialize()) == b64decode(narrowed)
    Biscuit.from_base64(Envelope.parse(narrowed).serialize(), roots)


# --- (d) sealing ------------------------------------------------------------

def test_sealed_biscuit_is_accepted_and_cannot_grow(mandate_bz, upstream, token, roots):
    narrowed = attenuate(token, roots, 'check if tool("read_file");')
    sealed = seal(narrowed, roots)
    assert Envelope.parse(sealed).is_sealed() and not Envelope.parse(narrowed).is_sealed()
    biscuit = Biscuit.from_base64(sealed, roots)  # biscuit-python checks the seal's signature
    assert biscuit.block_count() == 2
    with pytest.raises(BiscuitBuildError, match="sealed"):
        biscuit.append(BlockBuilder('check if tool("read_file");'))
    with pytest.raises(BiscuitBuildError, match="sealed"):
        UnverifiedBiscuit.from_base64(sealed).append(BlockBuilder('check if tool("read_file");'))

    assert_called(call_tool(mandate_bz, sealed, "read_file"), upstream, "read_file")
    assert_refused_by_check(mandate_bz, upstream, sealed, "write_file", 1, 'check if tool("read_file")')

    # The minted token itself, sealed with no block added, works too.
    assert_called(call_tool(mandate_bz, seal(token, roots), "write_file"), upstream, "write_file")


def test_sealed_biscuit_with_a_bad_seal_is_refused(mandate_bz, upstream, token, roots):
    envelope = Envelope.parse(seal(attenuate(token, roots, 'check if tool("read_file");'), roots))
    (final,) = envelope.proof_fields().values()
    envelope.proof = envelope.proof.replace(final, bytes([final[0] ^ 1]) + final[1:])
    tampered = envelope.serialize()
    with pytest.raises(BiscuitValidationError):
        Biscuit.from_base64(tampered, roots)
    assert_invalid_token(mandate_bz, upstream, tampered)


# --- (e) DPoP-bound Biscuits ------------------------------------------------

def test_dpop_bound_biscuit_keeps_its_binding_through_python(mandate_bz, upstream, roots):
    key = DpopKey("ES256")
    first = mandate_bz.exchange_for_biscuit("read", dpop=key.proof("POST", mandate_bz.token_url))
    assert first.status_code == 400 and first.json()["error"] == "use_dpop_nonce", first.text
    nonce = first.headers["DPoP-Nonce"]
    resp = mandate_bz.exchange_for_biscuit("read", dpop=key.proof("POST", mandate_bz.token_url, nonce=nonce))
    assert resp.status_code == 200, resp.text
    assert resp.json()["token_type"] == "DPoP"
    bound = resp.json()["access_token"]
    assert authority_facts(Biscuit.from_base64(bound, roots))["dpop_jkt"] == [[key.thumbprint()]]

    narrowed = attenuate(bound, roots, "check if time($t), $t <= {limit};", {"limit": FAR_FUTURE})
    before = len(upstream.tool_calls())
    resp = call_tool(mandate_bz, narrowed, "read_file")  # Bearer: the binding still holds
    assert resp.status_code == 401
    assert "DPoP" in parse_challenges(resp.headers["WWW-Authenticate"])
    other = DpopKey("ES256")
    resp = mcp(mandate_bz, f"DPoP {narrowed}", "tools/call", {"name": "read_file"},
               dpop=other.proof("POST", mandate_bz.route_url, access_token=narrowed))
    assert resp.status_code == 401, "a proof from another key"
    assert len(upstream.tool_calls()) == before
    resp = mcp(mandate_bz, f"DPoP {narrowed}", "tools/call", {"name": "read_file"},
               dpop=key.proof("POST", mandate_bz.route_url, access_token=narrowed))
    assert_called(resp, upstream, "read_file")


# --- root key rotation -------------------------------------------------------

def test_root_key_id_picks_the_key_after_rotation(tmp_path_factory, upstream):
    """On a Mandate of its own, since rotation changes the published keys."""
    mandate = BiscuitGatewayMandate(tmp_path_factory.mktemp("biscuit-rotation"), "EdDSA",
                                    upstream=upstream.url).start()
    try:
        token = mandate.exchange_for_biscuit("read").json()["access_token"]
        admin_token = (mandate.data_dir / "admin.token").read_text().strip()
        resp = requests.post(mandate.admin_url + "/admin/keys/rotate", params={"purpose": "biscuit"},
                             headers={"Authorization": f"Bearer {admin_token}"}, timeout=10)
        assert resp.status_code == 200, resp.text
        published = mandate.root_keys_published()
        assert len(published) == 2
        for key in published:
            assert key["root_key_id"] == int.from_bytes(hashlib.sha256(key["kid"].encode()).digest()[:4], "big")
        roots = RootProvider(published)
        signer = UnverifiedBiscuit.from_base64(token).root_key_id()
        (newer,) = set(roots.keys) - {signer}
        Biscuit.from_base64(token, roots)
        assert roots.asked == [signer]
        with pytest.raises(BiscuitValidationError):
            Biscuit.from_base64(token, roots.keys[newer])
        # A Biscuit minted now names whichever key signed it, and that key verifies it.
        fresh = mandate.exchange_for_biscuit("read").json()["access_token"]
        roots.asked.clear()
        Biscuit.from_base64(fresh, roots)
        assert roots.asked == [UnverifiedBiscuit.from_base64(fresh).root_key_id()]
    finally:
        mandate.stop()
