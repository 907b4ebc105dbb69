"""A tiny MCP server built only with the official `mcp` SDK (its `MCPServer`,
formerly FastMCP), for the MCP gateway interop test (`test_mcp_gateway.py`).

    python3 mcp_files_server.py --port 8123

serves, on 127.0.0.1:

- `/mcp`: MCP over Streamable HTTP (stateful sessions, the SDK's defaults,
  including its DNS-rebinding protection for a loopback host), no auth of its
  own: Mandate's gateway sits in front of it. Three tools over an in-memory
  file store, with the annotations the gateway reads:
  - `read_file` (`readOnlyHint: true`): the gateway's `read` level;
  - `write_file` (`readOnlyHint: false`, `destructiveHint: false`): `write`;
  - `delete_file` (`destructiveHint: true`): `destructive`.
- `GET /debug/requests`: what it saw of each MCP POST (the request headers,
  the JSON-RPC method and tool name), the tool calls it ran and the files it
  holds. This is a test hook, not part of MCP; the test reads it directly from
  the server, never through the gateway.
"""
from __future__ import annotations

import argparse
import json

import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.types import ToolAnnotations
from starlette.requests import Request
from starlette.responses import JSONResponse

FILES: dict[str, str] = {"notes.txt": "hello from the files server"}
SEEN: list[dict] = []  # one entry per MCP POST
CALLS: list[dict] = []  # one entry per tool run

server = MCPServer("Files", instructions="Reads, writes and deletes small text files.")


@server.tool(annotations=ToolAnnotations(title="Read a file", read_only_hint=True))
def read_file(path: str) -> str:
    """Returns the content of a file."""
    CALLS.append({"tool": "read_file", "path": path})
    if path not in FILES:
        raise ValueError(f"no such file: {path}")
    return FILES[path]


@server.tool(annotations=ToolAnnotations(title="Write a file", read_only_hint=False, destructive_hint=False))
def write_file(path: str, content: str) -> str:
    """Creates or replaces a file."""
    CALLS.append({"tool": "write_file", "path": path})
    FILES[path] = content
    return f"wrote {len(content)} characters to {path}"


@server.tool(annotations=ToolAnnotations(title="Delete a file", destructive_hint=True))
def delete_file(path: str) -> str:
    """Deletes a file."""
    CALLS.append({"tool": "delete_file", "path": path})
    if FILES.pop(path, None) is None:
        raise ValueError(f"no such file: {path}")
    return f"deleted {path}"


@server.custom_route("/debug/requests", methods=["GET"])
async def debug_requests(_: Request) -> JSONResponse:
    return JSONResponse({"requests": SEEN, "calls": CALLS, "files": FILES})


def recording(app):
    """ASGI wrapper: notes the headers, method and tool name of each MCP POST."""

    async def wrapped(scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or not scope["path"].startswith("/mcp"):
            return await app(scope, receive, send)
        entry = {"headers": {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}}
        SEEN.append(entry)
        chunks: list[bytes] = []

        async def receive_and_note():
            message = await receive()
            if message["type"] == "http.request":
                chunks.append(message.get("body", b""))
                if not message.get("more_body"):
                    try:
                        rpc = json.loads(b"".join(chunks))
                        entry["method"] = rpc.get("method")
                        entry["name"] = (rpc.get("params") or {}).get("name")
                    except (ValueError, AttributeError):
                        pass
            return message

        await app(scope, receive_and_note, send)

    return wrapped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    # host="127.0.0.1" turns on the SDK's DNS-rebinding protection (Host must
    # be 127.0.0.1:*, localhost:* or [::1]:*), which the gateway has to satisfy.
    app = server.streamable_http_app(streamable_http_path="/mcp", host="127.0.0.1")
    uvicorn.run(recording(app), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
