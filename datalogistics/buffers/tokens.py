"""Bearer capability tokens for the buffer service.

The orchestrator side (which knows each site's secret) issues a token that
grants **one right** (``read``, ``write`` or ``admin``) on **one buffer** of
**one site** until an expiry time; the buffer service checks it with the same
secret. A token is::

    cb1.<base64url(JSON claims)>.<base64url(HMAC-SHA256(secret, "cb1." + claims))>

with claims ``{"site", "buf", "right", "exp", "sub"}`` and, on a read token,
``"con"``: the one consumer its holder is. ``admin`` tokens carry ``buf = "*"``
and let their holder create, list, disable and delete buffers of the site;
data goes in only with a ``write`` token of that buffer and comes out only with
a ``read`` token of that buffer. Only a read token bound to consumer *C* can
say that *C* has drained the buffer (which destroys it once every declared
consumer has): a reader cannot speak for the others.

A missing, malformed, forged or expired token is ``Unauthorized`` (HTTP 401); a
valid token used on another site, buffer or right is ``Forbidden`` (HTTP 403).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import time
from dataclasses import dataclass
from enum import StrEnum

from datalogistics.errors import Forbidden, Unauthorized

PREFIX = "cb1"
ANY_BUFFER = "*"


class Right(StrEnum):
    """What a capability allows."""

    READ = "read"
    WRITE = "write"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class Capability:
    """The verified claims of a token."""

    site: str
    buffer: str
    right: Right
    expires_at: float
    subject: str
    consumer: str | None = None

    def require(self, site: str, buffer: str, right: Right) -> None:
        """Raise ``Forbidden`` unless this capability grants ``right`` on ``buffer`` of ``site``."""
        if self.site != site:
            raise Forbidden(f"token is for site {self.site!r}, this service is site {site!r}")
        if self.right is not right:
            raise Forbidden(
                f"token grants {self.right.value!r}, this operation needs {right.value!r}"
            )
        if right is not Right.ADMIN and self.buffer != buffer:
            raise Forbidden(f"token is for buffer {self.buffer!r}, not {buffer!r}")

    def require_consumer(self, consumer: str) -> None:
        """Raise ``Forbidden`` unless this capability is bound to ``consumer``."""
        if self.consumer != consumer:
            bound = f"consumer {self.consumer!r}" if self.consumer else "no consumer"
            raise Forbidden(f"token is bound to {bound}: it cannot speak for {consumer!r}")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _key(secret: str | bytes) -> bytes:
    key = secret.encode() if isinstance(secret, str) else secret
    if len(key) < 16:
        raise ValueError("a buffer-service secret must be at least 16 bytes; generate a longer one")
    return key


def issue_token(
    secret: str | bytes,
    *,
    site: str,
    buffer: str,
    right: Right | str,
    ttl: float = 3600.0,
    subject: str = "orchestrator",
    now: float | None = None,
    consumer: str | None = None,
) -> str:
    """A token granting ``right`` on ``buffer`` (``"*"`` for admin) of ``site`` for ``ttl`` s.

    ``consumer`` binds a read token to the one consumer it reads for.
    """
    right = Right(right)
    if right is Right.ADMIN:
        buffer = ANY_BUFFER
    elif buffer == ANY_BUFFER:
        raise ValueError("read and write tokens name one buffer; only admin tokens use '*'")
    if consumer is not None and right is not Right.READ:
        raise ValueError("only read tokens are bound to a consumer")
    if not (math.isfinite(ttl) and ttl > 0):
        raise ValueError(f"token ttl must be a finite, positive number of seconds, got {ttl}")
    issued = time.time() if now is None else now
    claims: dict[str, object] = {
        "site": site,
        "buf": buffer,
        "right": right.value,
        "exp": issued + ttl,
        "sub": subject,
    }
    if consumer is not None:
        claims["con"] = consumer
    body = f"{PREFIX}.{_b64(json.dumps(claims, separators=(',', ':')).encode())}"
    sig = hmac.new(_key(secret), body.encode("ascii"), hashlib.sha256).digest()
    return f"{body}.{_b64(sig)}"


def verify_token(secret: str | bytes, token: str | None, now: float | None = None) -> Capability:
    """The capability in ``token``; ``Unauthorized`` if missing, malformed, forged or expired."""
    if not token:
        raise Unauthorized("missing bearer token: send 'Authorization: Bearer <capability token>'")
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != PREFIX:
        raise Unauthorized("malformed capability token (expected cb1.<claims>.<signature>)")
    body = f"{parts[0]}.{parts[1]}"
    expected = hmac.new(_key(secret), body.encode("ascii"), hashlib.sha256).digest()
    try:
        given = _unb64(parts[2])
        claims = json.loads(_unb64(parts[1]))
    except (ValueError, UnicodeDecodeError):
        raise Unauthorized("malformed capability token (bad base64 or JSON)") from None
    if not hmac.compare_digest(expected, given):
        raise Unauthorized("capability token signature does not match this site's secret")
    try:
        cap = Capability(
            site=str(claims["site"]),
            buffer=str(claims["buf"]),
            right=Right(claims["right"]),
            expires_at=float(claims["exp"]),
            subject=str(claims.get("sub", "")),
            consumer=str(claims["con"]) if claims.get("con") is not None else None,
        )
        if not math.isfinite(cap.expires_at):
            raise ValueError("exp is not finite")
    except (KeyError, ValueError, TypeError, AttributeError):
        raise Unauthorized("capability token claims are incomplete") from None
    if cap.expires_at <= (time.time() if now is None else now):
        raise Unauthorized("capability token expired: ask the orchestrator for a new one")
    return cap
