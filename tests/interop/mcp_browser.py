"""A scripted user with a browser, for the MCP gateway interop test: it follows
an authorization URL and submits Mandate's real sign-in and consent forms over
HTTP with `requests` (cookies kept, redirects not followed), and hands the
redirect's `code`, `state` and `iss` back to the MCP SDK's OAuth client.

Nothing here knows about pytest or about Mandate's code: only its HTML forms.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser
from urllib.parse import parse_qs, urljoin, urlsplit

import anyio
import requests
from mcp.shared.auth import AuthorizationCodeResult


@dataclass
class Form:
    action: str
    hidden: dict[str, str] = field(default_factory=dict)
    fields: list[str] = field(default_factory=list)  # text and password inputs
    checkboxes: list[tuple[str, str]] = field(default_factory=list)  # (name, value)
    buttons: list[tuple[str, str]] = field(default_factory=list)  # (name, value)


class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[Form] = []

    def handle_starttag(self, tag, attrs):
        a = {k: (v or "") for k, v in attrs}
        if tag == "form":
            self.forms.append(Form(action=a.get("action", "")))
        elif not self.forms:
            return
        elif tag == "input":
            kind, name = a.get("type", "text"), a.get("name", "")
            if kind == "hidden":
                self.forms[-1].hidden[name] = a.get("value", "")
            elif kind == "checkbox":
                self.forms[-1].checkboxes.append((name, a.get("value", "")))
            elif name:
                self.forms[-1].fields.append(name)
        elif tag == "button" and a.get("name"):
            self.forms[-1].buttons.append((a["name"], a.get("value", "")))


def forms(page: str) -> list[Form]:
    parser = _FormParser()
    parser.feed(page)
    return parser.forms


@dataclass
class Visit:
    """One trip through the authorization endpoint."""

    url: str  # the authorization URL the client sent the user to
    params: dict[str, str]  # its query
    login_shown: bool = False
    offered: list[str] | None = None  # scopes on the consent page; None: no consent page
    approved: list[str] | None = None  # scopes left checked
    redirect: str = ""  # where the browser was finally sent
    pages: list[str] = field(default_factory=list)  # the sign-in and consent pages shown, as HTML
    result: dict[str, str] = field(default_factory=dict)  # that redirect's query


class Browser:
    """A user's browser: one cookie jar, the user's credentials, and the scopes
    to leave checked at each consent page it meets, in order (`choices`)."""

    def __init__(self, issuer: str, username: str, password: str):
        self.issuer = issuer
        self.username = username
        self.password = password
        self.http = requests.Session()
        self.choices: list[list[str]] = []
        self.visits: list[Visit] = []

    def _submit(self, form: Form, data: dict) -> requests.Response:
        return self.http.post(urljoin(self.issuer, form.action), data=data, allow_redirects=False, timeout=10)

    def authorize(self, url: str) -> Visit:
        """Follows `url` through sign-in and consent to the redirect back to the client."""
        visit = Visit(url=url, params={k: v[0] for k, v in parse_qs(urlsplit(url).query).items()})
        self.visits.append(visit)
        r = self.http.get(url, allow_redirects=False, timeout=10)
        for _ in range(3):
            if r.status_code != 200:
                break
            visit.pages.append(r.text)
            page = forms(r.text)
            form = next((f for f in page if f.action in ("/login", "/consent")), None)
            if form is None:
                raise AssertionError(f"no sign-in or consent form at {r.url}:\n{r.text[:2000]}")
            if form.action == "/login":
                assert not visit.login_shown, f"the sign-in failed:\n{r.text[:2000]}"
                visit.login_shown = True
                r = self._submit(form, {**form.hidden, "username": self.username, "password": self.password})
            else:
                visit.offered = [value for name, value in form.checkboxes if name == "scope"]
                if not self.choices:
                    raise AssertionError(f"an unexpected consent page, offering {visit.offered}")
                visit.approved = self.choices.pop(0)
                assert ("decision", "approve") in form.buttons, form.buttons
                r = self._submit(form, {**form.hidden, "scope": visit.approved, "decision": "approve"})
        if r.status_code != 302:
            raise AssertionError(f"expected a redirect back to the client, got {r.status_code}:\n{r.text[:2000]}")
        visit.redirect = r.headers["Location"]
        visit.result = {k: v[0] for k, v in parse_qs(urlsplit(visit.redirect).query).items()}
        return visit

    # -- the MCP SDK's OAuthClientProvider handlers ----------------------------
    async def redirect_handler(self, authorization_url: str) -> None:
        await anyio.to_thread.run_sync(self.authorize, authorization_url)

    async def callback_handler(self) -> AuthorizationCodeResult:
        result = self.visits[-1].result
        if "code" not in result:
            raise AssertionError(f"the authorization endpoint sent the user back with {result}")
        return AuthorizationCodeResult(code=result["code"], state=result.get("state"), iss=result.get("iss"))
