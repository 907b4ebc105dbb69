"""The audit trail as an auditor outside Mandate checks it: the hash chain
recomputed with Python's standard library alone (the canonical JSON that
ARCHITECTURE.md describes, SHA-256), from the anchor retention leaves, over
the admin API."""
from __future__ import annotations

import hashlib
import json

import requests

from mandate_server import AGENT_SECRET, RESOURCE

FIELDS = ("client_id", "subject", "audience", "scopes", "jti")


def event_hash(e: dict) -> str:
    """SHA-256 of the canonical JSON: fields in this order, null when absent,
    no white space, only what JSON must escape escaped."""
    canonical = {"seq": e["seq"], "prev_hash": e["prev_hash"], "time_ms": e["time_ms"],
                 "kind": e["kind"]}
    canonical.update((f, e.get(f)) for f in FIELDS)
    canonical["outcome"] = e["outcome"]
    canonical["reason"] = e.get("reason")
    text = json.dumps(canonical, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def verify(anchor: dict, events: list[dict]) -> str:
    """The head hash, or an AssertionError naming the first broken link."""
    seq, prev = anchor["seq"], anchor["hash"]
    for e in events:
        assert e["seq"] == seq + 1, f"gap before seq {e['seq']}"
        assert e["prev_hash"] == prev, f"seq {e['seq']}: prev_hash does not link"
        assert event_hash(e) == e["hash"], f"seq {e['seq']}: content does not match its hash"
        seq, prev = e["seq"], e["hash"]
    return prev


class Admin:
    def __init__(self, server):
        self.url = f"http://127.0.0.1:{server.admin_port}"
        token = (server.data_dir / "admin.token").read_text().strip()
        self.headers = {"Authorization": f"Bearer {token}"}

    def get(self, path: str, **params) -> requests.Response:
        return requests.get(self.url + path, params=params, headers=self.headers, timeout=10)

    def post(self, path: str, body: dict) -> requests.Response:
        return requests.post(self.url + path, json=body, headers=self.headers, timeout=10)

    def events(self) -> list[dict]:
        out, after = [], 0
        while True:
            r = self.get("/admin/audit", after=after, limit=1000)
            r.raise_for_status()
            page = r.json()
            if not page:
                return out
            out += page
            after = page[-1]["seq"]


def test_chain_recomputed_in_python_from_the_anchor(server):
    for _ in range(3):
        resp = requests.post(server.token_url, timeout=10, auth=("agent-basic", AGENT_SECRET),
                             data={"grant_type": "client_credentials", "resource": RESOURCE})
        assert resp.status_code == 200, resp.text
    admin = Admin(server)
    anchor = admin.get("/admin/audit/anchor").json()
    events = admin.events()
    assert sum(e["kind"] == "token.issued" for e in events) >= 3
    head = verify(anchor, events)
    assert head == events[-1]["hash"]
    if anchor["seq"] == 0:
        assert anchor["hash"] == "0" * 64

    # An edited field, a removed event, a reordered pair: each is caught.
    edited = [dict(e) for e in events]
    edited[-1]["client_id"] = "someone-else"
    for broken in (edited, events[:-2] + events[-1:], events[:-2] + events[-1:-3:-1]):
        try:
            verify(anchor, broken)
        except AssertionError:
            continue
        raise AssertionError(f"a tampered chain verified: {[e['seq'] for e in broken]}")


def test_retention_on_demand_refuses_less_than_an_hour(server):
    admin = Admin(server)
    before = admin.get("/admin/audit/anchor").json()
    resp = admin.post("/admin/audit/prune", {"older_than_secs": 600})
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"] == "invalid_request"
    # A fresh server holds nothing an hour old: nothing goes, the anchor stays.
    resp = admin.post("/admin/audit/prune", {"older_than_secs": 3600})
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"removed": 0, "anchor": before}
    verify(before, admin.events())
