"""Pieces for the Biscuit interop test (`test_biscuit_interop.py`): a small MCP
upstream, a Mandate whose gateway has an MCP route in front of it and a client
that may exchange tokens for Biscuits, and the few Biscuit operations
biscuit-python does not offer (reading and rewriting the token's protobuf
envelope, sealing).

Like `mandate_server.py` and `dpop_gateway.py`, nothing here knows about
pytest, and nothing here imports Mandate code: tokens are read, verified and
attenuated with biscuit-python alone, and the envelope is handled with the
Biscuit specification's `schema.proto` and `cryptography`.
"""
from __future__ import annotations

import base64
import json
import re
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests
from biscuit_auth import Biscuit
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from mandate_server import (AGENT_SECRET, RESOURCE, MandateServer, base_config, serve_on_loopback,
                            stop_loopback)

# RFC 8693 token exchange, and Mandate's token type for a Biscuit.
EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
BISCUIT_TYPE = "urn:mandate:params:oauth:token-type:biscuit"

# The client whose token is exchanged (from `base_config`), and the client
# that exchanges it: it may act for the first, as in the Rust end-to-end test.
SUBJECT_CLIENT = "agent-basic"
ACTOR_CLIENT = "tool-agent"

# The MCP route, in front of the upstream below. Its audience is the interop
# servers' one resource, whose scopes are read, write and agent:execute.
ROUTE = "/mcp/files"
LEVELS = {"read": ["read"], "write": ["write"], "destructive": ["agent:execute"]}


# --- the upstream: a minimal MCP server (JSON-RPC over HTTP POST) ----------

# read_file is read-only, write_file additive, delete_file destructive (MCP
# annotations, from which the gateway takes each tool's level).
TOOLS = [
    {"name": "read_file", "inputSchema": {"type": "object"}, "annotations": {"readOnlyHint": True}},
    {"name": "write_file", "inputSchema": {"type": "object"},
     "annotations": {"readOnlyHint": False, "destructiveHint": False}},
    {"name": "delete_file", "inputSchema": {"type": "object"}, "annotations": {"destructiveHint": True}},
]


@dataclass
class McpUpstream:
    """An MCP server on a free loopback port, in a thread of the test process:
    `initialize`, `tools/list` and `tools/call` over plain JSON answers. It
    remembers every JSON-RPC message it got (the gateway's own catalog session
    included), with the `X-Mandate-*` headers that came with it."""

    port: int = 0
    seen: list[dict] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def tool_calls(self) -> list[str]:
        """The tools called so far, in order (the gateway never calls one itself)."""
        with self._lock:
            return [m["name"] for m in self.seen if m["method"] == "tools/call"]

    def last_call(self) -> dict:
        with self._lock:
            return [m for m in self.seen if m["method"] == "tools/call"][-1]

    def start(self) -> "McpUpstream":
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _send(self, status: int, body: dict | None = None, headers: dict | None = None):
                data = json.dumps(body).encode() if body is not None else b""
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                if body is not None:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    msg = json.loads(self.rfile.read(length) or b"null")
                except ValueError:
                    return self._send(400, {"jsonrpc": "2.0", "id": None,
                                            "error": {"code": -32700, "message": "Parse error"}})
                method = msg.get("method", "") if isinstance(msg, dict) else ""
                params = msg.get("params") or {} if isinstance(msg, dict) else {}
                with upstream._lock:
                    upstream.seen.append({
                        "method": method,
                        "name": params.get("name") if isinstance(params, dict) else None,
                        "identity": {k.lower(): v for k, v in self.headers.items()
                                     if k.lower().startswith("x-mandate-")},
                        "authorization": self.headers.get("Authorization"),
                    })
                if method.startswith("notifications/"):
                    return self._send(202)
                headers = {}
                if method == "initialize":
                    result = {"protocolVersion": "2025-06-18", "capabilities": {"tools": {}},
                              "serverInfo": {"name": "files", "version": "1"}}
                    headers["Mcp-Session-Id"] = "session-1"
                elif method == "tools/list":
                    result = {"tools": TOOLS}
                elif method == "tools/call":
                    result = {"content": [{"type": "text", "text": f"called {params.get('name')}"}]}
                else:
                    return self._send(200, {"jsonrpc": "2.0", "id": msg.get("id"),
                                            "error": {"code": -32601, "message": "Method not found"}})
                self._send(200, {"jsonrpc": "2.0", "id": msg.get("id"), "result": result}, headers)

            def do_DELETE(self):  # the end of the gateway's catalog session
                self._send(200)

            def do_GET(self):  # no server-to-client stream
                self._send(405)

            def log_message(self, *args):  # keep pytest's output clean
                pass

        self._server = serve_on_loopback(Handler, "mcp-upstream")
        self.port = self._server.server_address[1]
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        stop_loopback(server)


# --- the Mandate -------------------------------------------------------------

def biscuit_gateway_config(port: int, admin_port: int, signing_alg: str, upstream: str) -> dict:
    """The interop servers' base configuration plus a client that may exchange
    `agent-basic`'s tokens (RFC 8693), and an MCP route in front of `upstream`
    whose tool levels need `read`, `write` and `agent:execute`."""
    config = base_config(port, admin_port, signing_alg, {})
    config["clients"].append({
        "client_id": ACTOR_CLIENT,
        "grant_types": [EXCHANGE],
        "scopes": ["read", "write"],
        "resources": [RESOURCE],
        "secret_env": "AGENT_SECRET",  # client_secret_basic
        "may_act_for": [SUBJECT_CLIENT],
    })
    config["gateway"] = {
        "routes": [{
            "path": ROUTE,
            "upstream": upstream,
            "protocol": "mcp",
            "resource": RESOURCE,
            "name": "Files",
            "levels": LEVELS,
        }],
    }
    return config


@dataclass
class BiscuitGatewayMandate(MandateServer):
    """A `MandateServer` with the MCP route (see `biscuit_gateway_config`)."""

    upstream: str = ""

    @property
    def route_url(self) -> str:
        return self.issuer + ROUTE

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def config(self, port: int, admin_port: int) -> dict:
        return biscuit_gateway_config(port, admin_port, self.signing_alg, self.upstream)

    def root_keys_published(self) -> list[dict]:
        """`biscuit_root_keys` of the AS metadata, fetched afresh."""
        r = requests.get(self.issuer + "/.well-known/oauth-authorization-server", timeout=10)
        r.raise_for_status()
        return r.json()["biscuit_root_keys"]

    def subject_token(self, scope: str = "read write") -> str:
        """A client_credentials token of `agent-basic` for the resource."""
        r = requests.post(self.token_url, auth=(SUBJECT_CLIENT, AGENT_SECRET), timeout=10,
                          data={"grant_type": "client_credentials", "resource": RESOURCE, "scope": scope})
        r.raise_for_status()
        return r.json()["access_token"]

    def exchange_for_biscuit(self, scope: str = "read write", dpop: str | None = None,
                             subject_token: str | None = None) -> requests.Response:
        """RFC 8693 exchange of an `agent-basic` token, by `tool-agent`, for a Biscuit."""
        form = {
            "grant_type": EXCHANGE,
            "subject_token": subject_token or self.subject_token(),
            "subject_token_type": ACCESS_TOKEN_TYPE,
            "requested_token_type": BISCUIT_TYPE,
            "scope": scope,
            "resource": RESOURCE,
        }
        headers = {"DPoP": dpop} if dpop is not None else {}
        return requests.post(self.token_url, auth=(ACTOR_CLIENT, AGENT_SECRET), data=form,
                             headers=headers, timeout=10)

    def audit(self) -> list[dict]:
        """Every audit event so far, through the admin API."""
        token = (self.data_dir / "admin.token").read_text().strip()
        r = requests.get(self.admin_url + "/admin/audit", params={"after": 0, "limit": 10000},
                         headers={"Authorization": f"Bearer {token}"}, timeout=10)
        r.raise_for_status()
        return r.json()

    def audit_until(self, predicate, timeout: float = 10.0) -> dict:
        """The last audit event matching `predicate`, waiting for the audit
        writer (it records gateway decisions without holding up the response)."""
        deadline = time.monotonic() + timeout
        while True:
            found = [e for e in self.audit() if predicate(e)]
            if found:
                return found[-1]
            if time.monotonic() > deadline:
                raise AssertionError("no such audit event; last events:\n"
                                     + "\n".join(json.dumps(e) for e in self.audit()[-10:]))
            time.sleep(0.05)


# --- WWW-Authenticate ---------------------------------------------------------

CHALLENGE_PART = re.compile(r'([A-Za-z][\w.-]*)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,]*)|([A-Za-z][\w.-]*)')


def parse_challenges(value: str) -> dict[str, dict[str, str]]:
    """A `WWW-Authenticate` value (RFC 9110 §11.6.1) -> {scheme: {param: value}}."""
    challenges: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for m in CHALLENGE_PART.finditer(value):
        name, raw, scheme = m.groups()
        if scheme:
            current = challenges.setdefault(scheme, {})
        elif current is not None:
            current[name.lower()] = raw[1:-1] if raw.startswith('"') else raw
    return challenges


# --- the Biscuit envelope (schema.proto of the Biscuit specification) -------
#
#   message Biscuit     { optional uint32 rootKeyId = 1; required SignedBlock authority = 2;
#                         repeated SignedBlock blocks = 3; required Proof proof = 4; }
#   message SignedBlock { required bytes block = 1; required PublicKey nextKey = 2;
#                         required bytes signature = 3; ... }
#   message PublicKey   { required Algorithm algorithm = 1; required bytes key = 2; }
#   message Proof       { oneof Content { bytes nextSecret = 1; bytes finalSignature = 2; } }

def b64decode(token: str) -> bytes:
    """A Biscuit's bytes (URL-safe base64, padded or not)."""
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


def b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode()


def _varint(data: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        b = data[i]
        i += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, i


def _put_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def pb_decode(data: bytes) -> list[tuple[int, int, int | bytes]]:
    """One protobuf message -> its fields in order: (number, wire type, value)."""
    fields, i = [], 0
    while i < len(data):
        key, i = _varint(data, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(data, i)
        elif wire == 2:
            length, i = _varint(data, i)
            value, i = data[i:i + length], i + length
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, i = data[i:i + size], i + size
        else:
            raise ValueError(f"unsupported wire type {wire}")
        fields.append((number, wire, value))
    return fields


def pb_encode(fields: list[tuple[int, int, int | bytes]]) -> bytes:
    out = bytearray()
    for number, wire, value in fields:
        out += _put_varint(number << 3 | wire)
        if wire == 0:
            out += _put_varint(value)
        elif wire == 2:
            out += _put_varint(len(value)) + value
        else:
            out += value
    return bytes(out)


@dataclass
class Envelope:
    """A Biscuit's outer message, split into its signed blocks and its proof."""

    root_key_id: int | None
    authority: bytes  # SignedBlock
    blocks: list[bytes]  # SignedBlock each
    proof: bytes  # Proof

    @classmethod
    def parse(cls, token: str) -> "Envelope":
        root_key_id, authority, blocks, proof = None, b"", [], b""
        for number, _, value in pb_decode(b64decode(token)):
            if number == 1:
                root_key_id = value
            elif number == 2:
                authority = value
            elif number == 3:
                blocks.append(value)
            elif number == 4:
                proof = value
        return cls(root_key_id, authority, blocks, proof)

    def serialize(self) -> str:
        fields: list[tuple[int, int, int | bytes]] = []
        if self.root_key_id is not None:
            fields.append((1, 0, self.root_key_id))
        fields.append((2, 2, self.authority))
        fields += [(3, 2, b) for b in self.blocks]
        fields.append((4, 2, self.proof))
        return b64encode(pb_encode(fields))

    def last_block(self) -> bytes:
        return self.blocks[-1] if self.blocks else self.authority

    def proof_fields(self) -> dict[int, bytes]:
        return {number: value for number, _, value in pb_decode(self.proof)}

    def is_sealed(self) -> bool:
        return 2 in self.proof_fields()


def signed_block_fields(signed_block: bytes) -> dict[int, int | bytes]:
    return {number: value for number, _, value in pb_decode(signed_block)}


def seal(token: str, root) -> str:
    """Seals a Biscuit: no block can be added to the result.

    biscuit-python's own `Biscuit.seal()` is used where it exists (`root` is
    the key or key provider to parse the token with). Version 0.4.0 has none,
    so the seal is then made as the specification (and biscuit-auth's
    `SerializedBiscuit::seal`) makes it: the proof's next secret key signs
    the last block's payload, its next key's algorithm (i32, little-endian)
    and bytes, and its signature; that signature replaces the secret in the
    proof."""
    if hasattr(Biscuit, "seal"):
        return Biscuit.from_base64(token, root).seal().to_base64()
    envelope = Envelope.parse(token)
    secret = envelope.proof_fields()[1]  # nextSecret: an unsealed token's proof
    last = signed_block_fields(envelope.last_block())
    next_key = {number: value for number, _, value in pb_decode(last[2])}
    algorithm, key = next_key.get(1, 0), next_key[2]
    if algorithm != 0:
        raise ValueError("only Ed25519 next keys are sealed here")
    private = Ed25519PrivateKey.from_private_bytes(secret)
    if private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw) != key:
        raise ValueError("the proof's secret is not the last block's next key")
    payload = last[1] + struct.pack("<i", algorithm) + key + last[3]
    envelope.proof = pb_encode([(2, 2, private.sign(payload))])
    return envelope.serialize()
