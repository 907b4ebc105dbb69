"""Processes for the A2A gateway interop test: the SDK echo agent
(`a2a_agent.py`) and a Mandate whose gateway has a route in front of it.

Like `mandate_server.py`, nothing here knows about pytest.
"""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from mandate_server import AGENT_SECRET, READY_TIMEOUT, START_ATTEMPTS, MandateServer, base_config, free_port

HERE = Path(__file__).resolve().parent

# The agent's audience, its scopes, the client that calls it, and its route.
ECHO_RESOURCE = "https://echo-agent.example.com"
ECHO_SCOPES = {"echo:read": "Talk to the echo agent", "echo:send": "Send messages"}
CALLER = "caller"
ROUTE = "/agents/echo"


def _stop(proc: subprocess.Popen | None) -> int | None:
    """SIGTERM, then wait; SIGKILL only if it does not stop in time."""
    if proc is None:
        return None
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()


@dataclass
class EchoAgent:
    """`a2a_agent.py` running on a free loopback port (`--v03-compat` if `v03_compat`)."""

    workdir: Path
    v03_compat: bool = False
    port: int = 0
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "agent.log"

    def seen(self) -> list[dict]:
        """What the agent saw of each message: `{"headers": {...}, "text": ...}`."""
        r = requests.get(self.url + "/debug/requests", timeout=10)
        r.raise_for_status()
        return r.json()

    def start(self) -> "EchoAgent":
        self.workdir.mkdir(parents=True, exist_ok=True)
        for _ in range(START_ATTEMPTS):
            self.port = free_port()
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(
                    [sys.executable, str(HERE / "a2a_agent.py"), "--port", str(self.port),
                     *(["--v03-compat"] if self.v03_compat else [])],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=HERE,
                )
            deadline = time.monotonic() + READY_TIMEOUT
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    if requests.get(self.url + "/.well-known/agent-card.json", timeout=1).ok:
                        return self
                except requests.ConnectionError:
                    pass
                time.sleep(0.05)
            self.stop()
        raise RuntimeError(f"the echo agent did not start; log:\n{self.log_path.read_text(errors='replace')}")

    def stop(self) -> int | None:
        proc, self.proc = self.proc, None
        return _stop(proc)


def gateway_config(port: int, admin_port: int, signing_alg: str, upstream: str) -> dict:
    """The interop servers' base configuration plus the echo agent's resource,
    its client and a gateway route in front of it."""
    config = base_config(port, admin_port, signing_alg, {})
    config["resources"].append({"id": ECHO_RESOURCE, "name": "Echo agent", "scopes": ECHO_SCOPES})
    config["clients"].append({
        "client_id": CALLER,
        "grant_types": ["client_credentials"],
        "scopes": list(ECHO_SCOPES),
        "secret_env": "AGENT_SECRET",
    })
    config["gateway"] = {
        "default_route": ROUTE,
        "routes": [{
            "path": ROUTE,
            "upstream": upstream,
            "protocol": "a2a",
            "resource": ECHO_RESOURCE,
            "name": "Echo agent",
            "scopes": ["echo:read"],
            "operations": {"SendMessage": ["echo:send"], "SendStreamingMessage": ["echo:send"]},
            "skills": {"echo": ["echo:send"]},
        }],
    }
    return config


@dataclass
class GatewayMandate(MandateServer):
    """A `MandateServer` whose configuration has the echo route (see `gateway_config`)."""

    upstream: str = ""

    @property
    def route_url(self) -> str:
        return self.issuer + ROUTE

    def token(self, scope: str, client_id: str = CALLER, resource: str = ECHO_RESOURCE) -> str:
        """A client_credentials access token (client_secret_basic)."""
        r = requests.post(self.token_url, data={"grant_type": "client_credentials", "resource": resource,
                                                "scope": scope},
                          auth=(client_id, AGENT_SECRET), timeout=10)
        r.raise_for_status()
        return r.json()["access_token"]

    def config(self, port: int, admin_port: int) -> dict:
        return gateway_config(port, admin_port, self.signing_alg, self.upstream)
