"""Processes for the MCP gateway interop test: the SDK files server
(`mcp_files_server.py`) and a Mandate whose gateway has an MCP route in
front of it, with open dynamic registration and one user.

Like `mandate_server.py` and `a2a_gateway.py`, nothing here knows about pytest.
"""
from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from a2a_gateway import _stop
from mandate_server import READY_TIMEOUT, START_ATTEMPTS, MandateServer, base_config, free_port

HERE = Path(__file__).resolve().parent

# The MCP route, its scopes and the scopes of each tool permission level.
ROUTE = "/mcp/files"
FILES_SCOPES = {
    "files:read": "Read your files",
    "files:write": "Create and change your files",
    "files:delete": "Delete your files",
}
LEVELS = {"read": ["files:read"], "write": ["files:write"], "destructive": ["files:delete"]}

# The user who signs in on Mandate's login form (passwords: at least 12 characters).
USERNAME = "alice"
PASSWORD = "correct horse battery staple"


@dataclass
class FilesServer:
    """`mcp_files_server.py` running on a free loopback port."""

    workdir: Path
    port: int = 0
    proc: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The MCP endpoint (what the gateway route forwards to)."""
        return self.base_url + "/mcp"

    @property
    def log_path(self) -> Path:
        return self.workdir / "mcp-server.log"

    def debug(self) -> dict:
        """`{"requests": [...], "calls": [...], "files": {...}}`, read directly (not through the gateway)."""
        r = requests.get(self.base_url + "/debug/requests", timeout=10)
        r.raise_for_status()
        return r.json()

    def start(self) -> "FilesServer":
        self.workdir.mkdir(parents=True, exist_ok=True)
        for _ in range(START_ATTEMPTS):
            self.port = free_port()
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(
                    [sys.executable, str(HERE / "mcp_files_server.py"), "--port", str(self.port)],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=HERE,
                )
            deadline = time.monotonic() + READY_TIMEOUT
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    if requests.get(self.base_url + "/debug/requests", timeout=1).ok:
                        return self
                except requests.ConnectionError:
                    pass
                time.sleep(0.05)
            self.stop()
        raise RuntimeError(f"the MCP files server did not start; log:\n{self.log_path.read_text(errors='replace')}")

    def stop(self) -> int | None:
        proc, self.proc = self.proc, None
        return _stop(proc)


def mcp_gateway_config(port: int, admin_port: int, signing_alg: str, upstream: str,
                       route_scopes: list[str] | None = None, registration: dict | None = None) -> dict:
    """The interop servers' base configuration plus open registration (with the
    `registration` settings on top), the files resource (its id is the route's
    own gateway URL, as MCP clients expect) and an MCP route in front of
    `upstream` (needing `route_scopes` for every call, on top of each tool's
    level)."""
    config = base_config(port, admin_port, signing_alg, {})
    resource = config["issuer"] + ROUTE
    config["registration"] = {"mode": "open", **(registration or {})}
    config["resources"].append({"id": resource, "name": "Files", "scopes": FILES_SCOPES})
    config["gateway"] = {
        "routes": [{
            "path": ROUTE,
            "upstream": upstream,
            "protocol": "mcp",
            "resource": resource,
            "name": "Files",
            "scopes": route_scopes or [],
            "levels": LEVELS,
        }],
    }
    return config


@dataclass
class McpGatewayMandate(MandateServer):
    """A `MandateServer` with the MCP route (see `mcp_gateway_config`) and one user."""

    upstream: str = ""
    route_scopes: list[str] | None = None
    registration: dict | None = None  # extra `[registration]` settings

    @property
    def route_url(self) -> str:
        """The MCP server's URL as clients know it: the gateway's, never the upstream's."""
        return self.issuer + ROUTE

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def admin_token(self) -> str:
        return (self.data_dir / "admin.token").read_text().strip()

    def create_user(self, username: str = USERNAME, password: str = PASSWORD) -> None:
        r = requests.post(self.admin_url + "/admin/users", json={"username": username, "password": password},
                          headers={"Authorization": f"Bearer {self.admin_token()}"}, timeout=10)
        if r.status_code >= 300:
            raise RuntimeError(f"creating user {username!r}: {r.status_code} {r.text}")

    def start(self) -> "McpGatewayMandate":
        super().start()
        self.create_user()
        return self

    def config(self, port: int, admin_port: int) -> dict:
        return mcp_gateway_config(port, admin_port, self.signing_alg, self.upstream, self.route_scopes,
                                  self.registration)
