"""Runs a real `mandate serve` for the interoperability tests.

One `MandateServer` is one process with its own free ports, TOML configuration
and data directory. Nothing here knows about pytest; `conftest.py` wires it into
fixtures.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
import tomllib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[2]
DEFAULT_BINARY = REPO / "target" / "debug" / "mandate"

# The one resource every server protects, and the scopes it defines.
# "agent:execute" is the scope the peer validator's middleware demands.
RESOURCE = "https://api.example.com"
RESOURCE_SCOPES = {
    "read": "Read things",
    "write": "Write things",
    "agent:execute": "Run the agent",
}

# Shared secret of the secret-based clients (>= 32 characters). Letters, digits
# and '-' only: authlib's client_secret_basic does not form-encode the secret
# before Base64 as RFC 6749 section 2.3.1 asks, so '+' or '%' would not survive.
AGENT_SECRET = "interop-agent-secret-0123456789-abcdefgh"

# Access-token signing algorithms, and one private_key_jwt client per
# assertion algorithm Mandate accepts.
SIGNING_ALGS = ["EdDSA", "ES256", "RS256"]
JWT_CLIENTS = {"RS256": "agent-jwt", "ES256": "agent-jwt-es256", "EdDSA": "agent-jwt-eddsa"}

READY_TIMEOUT = 20.0  # seconds to wait for /readyz (normally well under 1 s)
START_ATTEMPTS = 3  # a free port can be taken between probing and binding


def binary() -> Path:
    """`MANDATE_BIN` if set, else `<repo>/target/debug/mandate`."""
    return Path(os.environ.get("MANDATE_BIN") or DEFAULT_BINARY)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- a tiny TOML writer (the standard library only reads TOML) --------------

def serve_on_loopback(handler: type[BaseHTTPRequestHandler], name: str) -> ThreadingHTTPServer:
    """Serves `handler` on 127.0.0.1 at a free port from a daemon thread (the
    test upstreams and document hosts); `server_address[1]` is the port."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name=name, daemon=True).start()
    return server


def stop_loopback(server: ThreadingHTTPServer | None) -> None:
    """Stops a server from `serve_on_loopback` (None: nothing to stop)."""
    if server is not None:
        server.shutdown()
        server.server_close()


def _toml_key(k: str) -> str:
    return k if k.replace("_", "").replace("-", "").isalnum() else json.dumps(k)


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        # JSON string escapes are a subset of TOML basic-string escapes.
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"cannot write {type(v).__name__} as TOML")


def to_toml(config: dict) -> str:
    """Top-level scalars, then tables, then arrays of tables (inline values below)."""
    lines: list[str] = []
    tables, arrays = {}, {}
    for k, v in config.items():
        if isinstance(v, dict):
            tables[k] = v
        elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            arrays[k] = v
        else:
            lines.append(f"{_toml_key(k)} = {_toml_value(v)}")
    for name, table in tables.items():
        lines += ["", f"[{name}]"] + [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in table.items()]
    for name, items in arrays.items():
        for item in items:
            lines += ["", f"[[{name}]]"] + [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in item.items()]
    text = "\n".join(lines) + "\n"
    if tomllib.loads(text) != json.loads(json.dumps(config)):
        raise AssertionError("TOML writer round-trip mismatch")
    return text


def base_config(port: int, admin_port: int, signing_alg: str, client_jwks: dict[str, dict],
                tokens: dict | None = None) -> dict:
    """The configuration every test server runs with.

    `client_jwks` maps a private_key_jwt client id to its public JWK Set.
    """
    issuer = f"http://127.0.0.1:{port}"
    clients = [
        {
            "client_id": "agent-basic",
            "name": "Agent",
            "grant_types": ["client_credentials"],
            "scopes": ["read", "write", "agent:execute"],
            "secret_env": "AGENT_SECRET",  # client_secret_basic by default
        },
        {
            "client_id": "agent-post",
            "grant_types": ["client_credentials"],
            "scopes": ["read"],
            "secret_env": "AGENT_SECRET",
            "token_endpoint_auth_method": "client_secret_post",
        },
    ]
    for client_id, jwks in client_jwks.items():
        clients.append({
            "client_id": client_id,
            "grant_types": ["client_credentials"],
            "scopes": ["read"],
            "token_endpoint_auth_method": "private_key_jwt",
            "jwks": jwks,
        })
    return {
        "issuer": issuer,
        "listen": f"127.0.0.1:{port}",
        "admin": {"listen": f"127.0.0.1:{admin_port}"},
        "tokens": {"signing_alg": signing_alg, "access_token_ttl": "15m", **(tokens or {})},
        "resources": [{"id": RESOURCE, "name": "Example API", "scopes": RESOURCE_SCOPES}],
        "clients": clients,
    }


@dataclass
class MandateServer:
    """A running `mandate serve`."""

    workdir: Path
    signing_alg: str
    client_jwks: dict[str, dict] = field(default_factory=dict)
    tokens: dict | None = None
    issuer: str = ""
    admin_port: int = 0
    data_dir: Path | None = None
    proc: subprocess.Popen | None = None
    _metadata: dict | None = None

    # -- endpoints ----------------------------------------------------------
    @property
    def token_url(self) -> str:
        return self.issuer + "/token"

    @property
    def introspection_url(self) -> str:
        return self.issuer + "/introspect"

    @property
    def revocation_url(self) -> str:
        return self.issuer + "/revoke"

    @property
    def jwks_url(self) -> str:
        return self.issuer + "/jwks.json"

    @property
    def log_path(self) -> Path:
        return self.workdir / "server.log"

    def metadata(self) -> dict:
        if self._metadata is None:
            r = requests.get(self.issuer + "/.well-known/oauth-authorization-server", timeout=10)
            r.raise_for_status()
            self._metadata = r.json()
        return self._metadata

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    # -- lifecycle ----------------------------------------------------------
    def start(self) -> "MandateServer":
        exe = binary()
        if not exe.is_file():
            raise RuntimeError(f"mandate binary not found at {exe}: run `cargo build -p mandate` "
                               "or set MANDATE_BIN")
        last_error = ""
        for _ in range(START_ATTEMPTS):
            if self._start_once(exe):
                return self
            last_error = self.log_tail()
        raise RuntimeError(f"mandate did not become ready; last log:\n{last_error}")

    def config(self, port: int, admin_port: int) -> dict:
        """The configuration to start with; subclasses add routes, clients, ..."""
        return base_config(port, admin_port, self.signing_alg, self.client_jwks, self.tokens)

    def _start_once(self, exe: Path) -> bool:
        port, admin_port = free_port(), free_port()
        while admin_port == port:
            admin_port = free_port()
        config = self.config(port, admin_port)
        self.issuer = config["issuer"]
        self.admin_port = admin_port
        self._metadata = None
        self.workdir.mkdir(parents=True, exist_ok=True)
        config_path = self.workdir / "mandate.toml"
        config_path.write_text(to_toml(config))
        self.data_dir = data_dir = self.workdir / f"data-{port}"
        # Only the variables the test means: no MANDATE_* override from the
        # caller's shell (MANDATE_LOG_FORMAT and friends), no colour codes.
        env = {k: v for k, v in os.environ.items() if not k.startswith("MANDATE_")}
        env.update(AGENT_SECRET=AGENT_SECRET, NO_COLOR="1")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [str(exe), "serve", "--config", str(config_path), "--data-dir", str(data_dir)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
            )
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False  # exited: most likely a port taken meanwhile
            try:
                if requests.get(self.issuer + "/readyz", timeout=1).status_code == 200:
                    return True
            except requests.ConnectionError:
                pass
            time.sleep(0.05)
        self.stop()
        return False

    def stop(self) -> int | None:
        """SIGTERM, then wait; SIGKILL only if it does not stop in time."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                return proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        return proc.wait()
