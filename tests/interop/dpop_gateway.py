"""Pieces for the DPoP interop test (`test_dpop_interop.py`): DPoP proofs made
with joserfc, a tiny upstream HTTP service, and a Mandate whose gateway has a
plain `http` route in front of it.

Like `mandate_server.py` and `a2a_gateway.py`, nothing here knows about pytest,
and nothing here imports Mandate code: proofs are built only with joserfc
(RFC 9449 §4.2), the way any Python client would build them.
"""
from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
import uuid
import warnings
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from joserfc import jwt
from joserfc.jwk import ECKey, OctKey, OKPKey, RSAKey

from mandate_server import MandateServer, base_config, serve_on_loopback, stop_loopback

# The protected agent: its audience, its scope, and its gateway route.
PAY_RESOURCE = "https://pay-agent.example.com"
PAY_SCOPES = {"pay:read": "See payments", "pay:send": "Send payments"}
ROUTE = "/agents/pay"

# A confidential client that may ask for DPoP-bound tokens, and one that must
# (`require_dpop`, Mandate's form of RFC 9449 §5.2 `dpop_bound_access_tokens`).
CALLER = "dpop-caller"
BOUND_ONLY = "dpop-required"

# Proof signing algorithms, each with joserfc's key generator.
PROOF_ALGS = {
    "EdDSA": lambda: OKPKey.generate_key("Ed25519"),
    "ES256": lambda: ECKey.generate_key("P-256"),
    "RS256": lambda: RSAKey.generate_key(2048),
}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def ath(access_token: str) -> str:
    """RFC 9449 §4.2: base64url(SHA-256(ASCII(access token)))."""
    return b64url(hashlib.sha256(access_token.encode("ascii")).digest())


class DpopKey:
    """A client's DPoP key pair (joserfc) and the proofs it signs."""

    def __init__(self, alg: str = "ES256"):
        self.alg = alg
        self.key = PROOF_ALGS[alg]()

    def public_jwk(self) -> dict:
        return self.key.as_dict(private=False)

    def thumbprint(self) -> str:
        """The RFC 7638 SHA-256 thumbprint, as joserfc computes it."""
        return self.key.thumbprint()

    def proof(self, htm: str, htu: str, *, nonce: str | None = None, access_token: str | None = None,
              iat: int | None = None, jti: str | None = None, drop: tuple[str, ...] = (),
              header: dict | None = None, alg: str | None = None, signing_key=None) -> str:
        """A DPoP proof JWT (RFC 9449 §4.2) for one request.

        By default a well-formed proof: `typ: dpop+jwt`, this key's `alg` and public
        `jwk`, a fresh `jti`, `iat` now, `ath` when `access_token` is given.
        `drop` removes claims, `header` replaces header members, and `alg` /
        `signing_key` sign with something else: the tests' ways of making bad proofs.
        """
        claims = {
            "jti": jti or str(uuid.uuid4()),
            "htm": htm,
            "htu": htu,
            "iat": int(time.time()) if iat is None else iat,
        }
        if nonce is not None:
            claims["nonce"] = nonce
        if access_token is not None:
            claims["ath"] = ath(access_token)
        for name in drop:
            claims.pop(name, None)
        protected = {"typ": "dpop+jwt", "alg": alg or self.alg, "jwk": self.public_jwk(), **(header or {})}
        key = self.key if signing_key is None else signing_key
        with warnings.catch_warnings():
            # joserfc flags "none" (and "EdDSA") as deprecated; the tests send them on purpose.
            warnings.simplefilter("ignore")
            return jwt.encode(protected, claims, key, algorithms=[protected["alg"]])

    def hmac_proof(self, htm: str, htu: str, **kw) -> str:
        """HS256 over the proof, keyed with the public JWK's own bytes, while the
        header still names this (asymmetric) public key: the key-confusion attack."""
        secret = OctKey.import_key(json.dumps(self.public_jwk(), sort_keys=True).encode())
        return self.proof(htm, htu, alg="HS256", signing_key=secret, **kw)

    def unsigned_proof(self, htm: str, htu: str, **kw) -> str:
        """`alg: none`, empty signature."""
        return self.proof(htm, htu, alg="none", signing_key=None, **kw)


# --- the upstream: a few lines of standard-library HTTP ---------------------

@dataclass
class Upstream:
    """A plain HTTP service on a free loopback port (in a thread of the test
    process) that answers every request with 200 and remembers what it saw."""

    port: int = 0
    seen: list[dict] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def count(self) -> int:
        with self._lock:
            return len(self.seen)

    def last(self) -> dict:
        with self._lock:
            return self.seen[-1]

    def start(self) -> "Upstream":
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                with upstream._lock:
                    upstream.seen.append({"method": self.command, "path": self.path,
                                          "headers": {k.lower(): v for k, v in self.headers.items()}})
                body = json.dumps({"ok": True, "method": self.command, "path": self.path}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_DELETE = _answer

            def log_message(self, *args):  # keep pytest's output clean
                pass

        self._server = serve_on_loopback(Handler, "dpop-upstream")
        self.port = self._server.server_address[1]
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        stop_loopback(server)


# --- the Mandate -------------------------------------------------------------

def dpop_gateway_config(port: int, admin_port: int, signing_alg: str, upstream: str) -> dict:
    """The interop servers' base configuration plus the pay agent's resource,
    two clients for it, and a plain `http` gateway route in front of `upstream`.
    DPoP settings stay at their defaults: server nonces at the token endpoint on."""
    config = base_config(port, admin_port, signing_alg, {})
    config["resources"].append({"id": PAY_RESOURCE, "name": "Pay agent", "scopes": PAY_SCOPES})
    for client_id, require_dpop in ((CALLER, False), (BOUND_ONLY, True)):
        config["clients"].append({
            "client_id": client_id,
            "grant_types": ["client_credentials"],
            "scopes": list(PAY_SCOPES),
            "secret_env": "AGENT_SECRET",  # client_secret_basic
            "require_dpop": require_dpop,
        })
    config["gateway"] = {
        "routes": [{
            "path": ROUTE,
            "upstream": upstream,
            "protocol": "http",
            "resource": PAY_RESOURCE,
            "name": "Pay agent",
            "scopes": ["pay:read"],
        }],
    }
    return config


@dataclass
class DpopGatewayMandate(MandateServer):
    """A `MandateServer` with the pay route (see `dpop_gateway_config`)."""

    upstream: str = ""

    @property
    def route_url(self) -> str:
        return self.issuer + ROUTE

    def config(self, port: int, admin_port: int) -> dict:
        return dpop_gateway_config(port, admin_port, self.signing_alg, self.upstream)
