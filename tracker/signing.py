"""Ed25519 signatures over small JSON documents: checkpoints, export manifests, erasure and purge records.

A signed document is a JSON object with two extra keys: ``key_id`` (``ed25519:`` and the first 16 hex
digits of the SHA-256 of the raw 32-byte public key) and ``signature`` (base64 of the 64-byte Ed25519
signature). What is signed is the canonical JSON (docs/events.md) of the document without
``signature``, ``key_id`` included, as UTF-8 bytes; docs/audit.md shows how to check it with the
``openssl`` command line alone.

Keys are PEM files made by ``tracker audit keygen``: the private key (PKCS#8, unencrypted, mode 0600)
and its public half beside it (``.pub``, SubjectPublicKeyInfo). Their paths come from options or the
environment (:data:`KEY_ENV`, :data:`PUBLIC_KEY_ENV`); a key never enters the database, a log or an
error message.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from tracker.errors import AuditError
from tracker.events import canonical_json

KEY_ENV = "TRACKER_SIGNING_KEY"
PUBLIC_KEY_ENV = "TRACKER_PUBLIC_KEY"


class SigningError(AuditError):
    """A key that cannot be read, or a signature that does not hold; the message says which and where."""


@dataclass(frozen=True)
class VerifyKey:
    """A trusted public key, and its id."""

    key: Ed25519PublicKey
    key_id: str


@dataclass(frozen=True)
class SigningKey:
    """A private key, with its public half."""

    key: Ed25519PrivateKey
    public: VerifyKey


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "ed25519:" + hashlib.sha256(raw).hexdigest()[:16]


def _verify_key(public: Ed25519PublicKey) -> VerifyKey:
    return VerifyKey(public, key_id(public))


def generate_key(path: Path) -> tuple[Path, str]:
    """Write a new private key to ``path`` (mode 0600, never over an existing file) and its ``.pub``.

    Returns the public key's path and the key id.
    """
    private = Ed25519PrivateKey.generate()
    public_path = path.with_name(path.name + ".pub")
    for existing in (path, public_path):
        if existing.exists():
            raise SigningError(f"{existing}: already exists; refusing to overwrite a key")
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as out:
        out.write(pem)
    public = private.public_key()
    public_path.write_bytes(
        public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return public_path, key_id(public)


def load_signing_key(path: str | Path | None) -> SigningKey:
    """The private key at ``path``, or at $TRACKER_SIGNING_KEY when ``path`` is None."""
    where = _key_path(path, KEY_ENV, "a signing key")
    try:
        key = serialization.load_pem_private_key(where.read_bytes(), password=None)
    except OSError as exc:
        raise SigningError(f"{where}: cannot read the signing key: {exc.strerror}") from None
    except (ValueError, TypeError):
        message = f"{where}: not an unencrypted PEM private key (make one with `tracker audit keygen`)"
        raise SigningError(message) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningError(f"{where}: not an Ed25519 key")
    return SigningKey(key, _verify_key(key.public_key()))


def load_verify_key(path: str | Path | None) -> VerifyKey:
    """The public key at ``path`` (or $TRACKER_PUBLIC_KEY); a private key file is accepted too."""
    where = _key_path(path, PUBLIC_KEY_ENV, "a public key")
    try:
        data = where.read_bytes()
    except OSError as exc:
        raise SigningError(f"{where}: cannot read the public key: {exc.strerror}") from None
    try:
        public = serialization.load_pem_public_key(data)
    except ValueError:
        try:
            private = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError):
            raise SigningError(f"{where}: not a PEM public key (the .pub file `tracker audit keygen` wrote)") from None
        if not isinstance(private, Ed25519PrivateKey):
            raise SigningError(f"{where}: not an Ed25519 key") from None
        public = private.public_key()
    if not isinstance(public, Ed25519PublicKey):
        raise SigningError(f"{where}: not an Ed25519 key")
    return _verify_key(public)


def _key_path(path: str | Path | None, env: str, what: str) -> Path:
    if path is None:
        path = os.environ.get(env) or None
    if path is None:
        raise SigningError(f"{what} is needed: give its path with the option or in ${env}")
    return Path(path)


def signed_bytes(document: Mapping[str, Any]) -> bytes:
    """The bytes a signature covers: canonical JSON of ``document`` without ``signature``."""
    return canonical_json({key: value for key, value in document.items() if key != "signature"}).encode()


def sign_document(document: Mapping[str, Any], key: SigningKey) -> dict[str, Any]:
    """``document`` with ``key_id`` and ``signature`` added (any previous ones replaced)."""
    unsigned = {name: value for name, value in document.items() if name not in ("key_id", "signature")}
    unsigned["key_id"] = key.public.key_id
    signature = key.key.sign(signed_bytes(unsigned))
    return {**unsigned, "signature": base64.b64encode(signature).decode("ascii")}


def verify_document(document: Mapping[str, Any], keys: Trusted, what: str = "document") -> None:
    """Raise :class:`SigningError` naming ``what`` unless ``document`` carries a good signature by one of
    the trusted ``keys`` (the one its ``key_id`` names)."""
    trusted = as_keys(keys)
    signature = document.get("signature")
    if not isinstance(signature, str):
        raise SigningError(f"{what}: not signed (no signature)")
    key = next((candidate for candidate in trusted if candidate.key_id == document.get("key_id")), None)
    if key is None:
        plural = "s" if len(trusted) > 1 else ""
        raise SigningError(
            f"{what}: signed by key {document.get('key_id')!r}, not by the trusted key{plural} {key_ids(trusted)}"
        )
    try:
        raw = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        raise SigningError(f"{what}: the signature is not base64") from None
    try:
        key.key.verify(raw, signed_bytes(document))
    except InvalidSignature:
        raise SigningError(f"{what}: bad signature (the document was changed after signing, or forged)") from None


# One trusted key, or several (the current one and those it replaced: key rotation).
Trusted = VerifyKey | Sequence[VerifyKey]


def as_keys(keys: Trusted) -> list[VerifyKey]:
    return [keys] if isinstance(keys, VerifyKey) else list(keys)


def key_ids(keys: Trusted) -> str:
    return ", ".join(key.key_id for key in as_keys(keys))


def load_verify_keys(paths: Sequence[str | Path]) -> list[VerifyKey]:
    """The public keys at ``paths``, or at the paths $TRACKER_PUBLIC_KEY lists (separated by ``:``) when
    none is given; an empty list when neither names one."""
    if not paths:
        paths = [path for path in os.environ.get(PUBLIC_KEY_ENV, "").split(os.pathsep) if path]
    return [load_verify_key(path) for path in paths]
