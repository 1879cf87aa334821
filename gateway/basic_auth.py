"""HTTP Basic auth (RFC 7617), read the same way by every server of the gateway: the local OCPP
server (chargers) and the status page (people).

Credentials are bytes: a client may send any, and ``hmac.compare_digest`` on bytes is constant
time without a TypeError on non-ASCII input, as it would raise on str.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac


def basic_credentials(headers: list[str]) -> tuple[bytes, bytes] | None:
    """User and password of the one Basic ``Authorization`` header, or None (none, several, another
    scheme, not base64, no colon)."""
    if len(headers) != 1:
        return None
    scheme, _, token = headers[0].strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, colon, password = base64.b64decode(token.strip(), validate=True).partition(b":")
    except (binascii.Error, ValueError):
        return None
    return (user, password) if colon else None


def same_secret(given: bytes, expected: bytes) -> bool:
    """Constant-time comparison: the time taken says nothing about where they differ, nor (digests
    of equal length are compared, not the secrets) about the secret's length."""
    return hmac.compare_digest(hashlib.sha256(given).digest(), hashlib.sha256(expected).digest())
