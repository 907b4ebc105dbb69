"""A tiny HTTP server on 127.0.0.1 that serves client ID metadata documents
(CIMD) for the MCP gateway interop test, and notes every request for them.

A document's URL is its client ID: `DocumentServer.url(path)`. What a path
answers is set with `serve` (a JSON document, a redirect, or raw bytes);
anything else is a 404. The server runs in a daemon thread of the test process.

Nothing here knows about pytest or about Mandate's code.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from mandate_server import serve_on_loopback, stop_loopback


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass
class Fetch:
    path: str
    headers: dict[str, str]


@dataclass
class DocumentServer:
    answers: dict[str, Answer] = field(default_factory=dict)
    fetches: list[Fetch] = field(default_factory=list)
    _httpd: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def serve(self, path: str, document: dict | None = None, *, status: int = 200,
              headers: dict[str, str] | None = None, body: bytes | None = None) -> str:
        """What `path` answers: `document` as JSON, or `body` as it is. Returns its URL."""
        if body is None:
            body = json.dumps(document).encode()
            headers = {"Content-Type": "application/json", **(headers or {})}
        self.answers[path] = Answer(status, headers or {}, body)
        return self.url(path)

    def fetched(self, path: str) -> list[Fetch]:
        return [f for f in self.fetches if f.path == path]

    def start(self) -> "DocumentServer":
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (the standard library's name)
                server.fetches.append(Fetch(self.path, dict(self.headers)))
                answer = server.answers.get(self.path) or Answer(404, {"Content-Type": "text/plain"}, b"not found")
                self.send_response(answer.status)
                for k, v in answer.headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)

            def log_message(self, *args):
                pass

        self._httpd = serve_on_loopback(Handler, "cimd-documents")
        return self

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        stop_loopback(httpd)
