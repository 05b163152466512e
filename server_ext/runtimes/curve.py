"""Keys for container kernels on other hosts: CurveZMQ for the sockets, a shared secret for the rest.

A container kernel on a Ray node listens on TCP with CurveZMQ (encryption and
server authentication; ipykernel reads `curve_publickey`/`curve_secretkey`
from its connection file). Its key pair is made on the node and only the
public key leaves it. The control plane makes its own key pair per
container and sends only its public key. Both sides then compute the same
X25519 shared secret (CurveZMQ keys are Curve25519 keys), from which come
the kernel's HMAC key, the key that seals the container's secret values
on their way to the node, and the CurveZMQ client key pair that the kernel's
ZAP authenticator alone admits (`client_keypair`): none of them ever travels,
in clear or otherwise. A client that knows only the kernel's public key (which
does travel, through Ray) completes no handshake.
"""

from __future__ import annotations

import json
import os

import zmq
from zmq.utils import z85


def keypair() -> tuple[str, str]:
    """A fresh Curve25519 key pair, (public, secret), Z85 text."""
    public, secret = zmq.curve_keypair()
    return public.decode("ascii"), secret.decode("ascii")


def _derive(own_secret: str, peer_public: str, purpose: bytes, context: str) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    shared = X25519PrivateKey.from_private_bytes(z85.decode(own_secret)).exchange(
        X25519PublicKey.from_public_bytes(z85.decode(peer_public)))
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                info=b"cellhop/" + purpose + b"/" + context.encode()).derive(shared)


def hmac_key(own_secret: str, peer_public: str, context: str) -> str:
    """The kernel's message-signing key (hex), the same on both sides of the exchange."""
    return _derive(own_secret, peer_public, b"hmac", context).hex()


def client_keypair(own_secret: str, peer_public: str, context: str) -> tuple[str, str]:
    """The CurveZMQ client key pair (public, secret; Z85) of container `context`'s clients, the same on both
    sides of the exchange: the node admits only its public key, the control plane hands the pair to the
    container's clients (notebook, provisioner) as it does the HMAC key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    private = X25519PrivateKey.from_private_bytes(_derive(own_secret, peer_public, b"curve-client", context))
    raw = serialization.Encoding.Raw
    secret = private.private_bytes(raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    public = private.public_key().public_bytes(raw, serialization.PublicFormat.Raw)
    return z85.encode(public).decode("ascii"), z85.encode(secret).decode("ascii")


def seal(values: dict[str, str], own_secret: str, peer_public: str, context: str) -> bytes:
    """`values` encrypted and authenticated (ChaCha20-Poly1305) for the peer; b"" when empty."""
    if not values:
        return b""
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    nonce = os.urandom(12)
    box = ChaCha20Poly1305(_derive(own_secret, peer_public, b"seal", context))
    return nonce + box.encrypt(nonce, json.dumps(values).encode(), context.encode())


def unseal(sealed: bytes, own_secret: str, peer_public: str, context: str) -> dict[str, str]:
    if not sealed:
        return {}
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    box = ChaCha20Poly1305(_derive(own_secret, peer_public, b"seal", context))
    return json.loads(box.decrypt(sealed[:12], sealed[12:], context.encode()))
