"""The peer's token validator, reused as is.

`shared/peers/python-validator/app.py` is the usual way a Python A2A agent is
protected (Starlette middleware around PyJWT + PyJWKClient). Importing that
module would start its Starlette app and read ISSUER/JWKS_URL/AUDIENCE/ALGS
from the environment, so instead we take its `TokenValidator` class out of
the file and run that class's own code, with `ALGS` (a module global there) set
per test. When the peer file is not beside the repository, the verbatim copy
below is used; `test_vendored_validator_matches_peer` catches any drift.
"""
from __future__ import annotations

import ast
import os
from pathlib import Path

import jwt
from jwt import PyJWKClient

from mandate_server import REPO

PEER_APP = Path(os.environ.get(
    "MANDATE_PEER_VALIDATOR",
    REPO.parent / "shared" / "peers" / "python-validator" / "app.py",
))

# Verbatim from shared/peers/python-validator/app.py.
VENDORED_SOURCE = '''
class TokenValidator:
    def __init__(self, issuer: str, jwks_url: str, audience: str):
        self.issuer = issuer
        self.audience = audience
        self.jwks_client = PyJWKClient(jwks_url)

    def validate(self, token: str) -> dict:
        signing_key = self.jwks_client.get_signing_key_from_jwt(token)
        return jwt.decode(token, signing_key.key, algorithms=ALGS,
                          audience=self.audience, issuer=self.issuer)

    def has_scope(self, claims: dict, required_scope: str) -> bool:
        return required_scope in claims.get("scope", "").split(" ")
'''

# The scope the peer's middleware requires before it lets a request through.
PEER_REQUIRED_SCOPE = "agent:execute"


def class_node(source: str, name: str = "TokenValidator") -> ast.ClassDef:
    for node in ast.parse(source).body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            return node
    raise LookupError(f"no class {name} in source")


def peer_source() -> str | None:
    try:
        return PEER_APP.read_text()
    except OSError:
        return None


def load_token_validator(algs: list[str]):
    """The peer's `TokenValidator` class, its `ALGS` global set to `algs`."""
    source = peer_source() or VENDORED_SOURCE
    module = ast.Module(body=[class_node(source)], type_ignores=[])
    namespace = {"jwt": jwt, "PyJWKClient": PyJWKClient, "ALGS": list(algs),
                 "__name__": "peer_validator_app"}
    exec(compile(module, str(PEER_APP), "exec"), namespace)  # noqa: S102 - trusted peer file
    return namespace["TokenValidator"]
