"""Fixtures: client signing keys made in the test, and real Mandate servers."""
from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from joserfc.jwk import ECKey, OKPKey, RSAKey

from mandate_server import JWT_CLIENTS, MandateServer


def _pem(private_key) -> bytes:
    return private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption())


@pytest.fixture(scope="session")
def client_keys():
    """alg -> joserfc private key, generated here with `cryptography`."""
    return {
        "RS256": RSAKey.import_key(_pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))),
        "ES256": ECKey.import_key(_pem(ec.generate_private_key(ec.SECP256R1()))),
        "EdDSA": OKPKey.import_key(_pem(ed25519.Ed25519PrivateKey.generate())),
    }


@pytest.fixture(scope="session")
def client_jwks(client_keys):
    """client_id -> public JWK Set, as registered in the server's TOML."""
    jwks = {}
    for alg, client_id in JWT_CLIENTS.items():
        public = client_keys[alg].as_dict(private=False)
        public["kid"] = f"{client_id}-k1"
        jwks[client_id] = {"keys": [public]}
    return jwks


@pytest.fixture(scope="session")
def mandate(tmp_path_factory, client_jwks):
    """`mandate(signing_alg, **tokens)`: a running server, one per distinct
    configuration for the whole session, stopped (SIGTERM) at the end."""
    running: dict[tuple, MandateServer] = {}

    def get(signing_alg: str = "EdDSA", **tokens) -> MandateServer:
        key = (signing_alg, tuple(sorted(tokens.items())))
        if key not in running:
            workdir = tmp_path_factory.mktemp(f"mandate-{signing_alg}")
            running[key] = MandateServer(workdir, signing_alg, client_jwks, tokens or None).start()
        return running[key]

    yield get
    for server in running.values():
        server.stop()


@pytest.fixture(scope="session")
def server(mandate) -> MandateServer:
    """The default server (EdDSA access tokens, default policies)."""
    return mandate("EdDSA")
