"""Station users, sessions and the audit log.

Owns: password hashing and checking (argon2id, ``argon2-cffi``), ``Sessions`` (random
tokens carried in an HttpOnly, SameSite=Strict cookie, Secure over HTTPS; a CSRF token per
session; an absolute lifetime; failed logins slowed down per user and per address), and
``AuditLog`` (append-only JSON lines, each carrying the SHA-256 of the line before it, so
that a removed or edited line shows).
May import: the standard library, ``argon2-cffi``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, UTC
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

_HASHER = PasswordHasher()
# a hash to check against when the user does not exist, so that timing does not tell
_DUMMY_HASH = _HASHER.hash(secrets.token_hex(16))
MIN_PASSWORD = 10
MAX_FAILURES = 5  # per user or address within FAILURE_WINDOW_S
FAILURE_WINDOW_S = 300.0


def hash_password(password: str) -> str:
    """An argon2id hash of a new password (refused when shorter than ``MIN_PASSWORD``)."""
    if len(password) < MIN_PASSWORD:
        raise ValueError(f"the password is too short: at least {MIN_PASSWORD} characters")
    return _HASHER.hash(password)


def check_password(password_hash: str | None, password: str) -> bool:
    """Whether ``password`` matches; a missing user costs the same time as a wrong password."""
    try:
        return _HASHER.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


@dataclass
class Session:
    """One browser's login."""

    token: str
    user: str
    csrf: str
    created: float
    expires: float
    address: str
    views: dict[str, Any] = field(default_factory=dict)


class Sessions:
    """The logged-in sessions (in memory: a restarted station asks everyone to log in again)."""

    def __init__(self, lifetime_s: float) -> None:
        self.lifetime_s = lifetime_s
        self._lock = threading.Lock()
        self._by_token: dict[str, Session] = {}
        self._failures: dict[str, deque[float]] = {}

    def create(self, user: str, address: str) -> Session:
        now = time.time()
        s = Session(secrets.token_urlsafe(32), user, secrets.token_urlsafe(24), now, now + self.lifetime_s, address)
        with self._lock:
            self._by_token[s.token] = s
        return s

    def get(self, token: str | None) -> Session | None:
        if not token:
            return None
        with self._lock:
            s = self._by_token.get(token)
            if s is not None and time.time() >= s.expires:
                del self._by_token[token]
                return None
            return s

    def end(self, token: str) -> Session | None:
        with self._lock:
            return self._by_token.pop(token, None)

    def users(self) -> set[str]:
        now = time.time()
        with self._lock:
            return {s.user for s in self._by_token.values() if s.expires > now}

    def expire(self) -> list[Session]:
        now = time.time()
        with self._lock:
            gone = [s for s in self._by_token.values() if s.expires <= now]
            for s in gone:
                del self._by_token[s.token]
        return gone

    # -- failed logins

    def blocked(self, *keys: str) -> bool:
        now = time.time()
        with self._lock:
            for k in keys:
                q = self._failures.get(k)
                while q and now - q[0] > FAILURE_WINDOW_S:
                    q.popleft()
                if q and len(q) >= MAX_FAILURES:
                    return True
        return False

    def failed(self, *keys: str) -> None:
        now = time.time()
        with self._lock:
            for k in keys:
                self._failures.setdefault(k, deque()).append(now)

    @staticmethod
    def csrf_ok(session: Session, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(session.csrf, token or "")


class AuditLog:
    """Append-only JSON lines: ``{"at", "user", "address", "action", "or", "detail", "prev"}``."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._prev = self._last_hash()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def _last_hash(self) -> str:
        try:
            with open(self.path, "rb") as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                f.seek(max(0, size - 65536))
                lines = f.read().splitlines()
        except FileNotFoundError:
            return "0" * 64
        return hashlib.sha256(lines[-1]).hexdigest() if lines else "0" * 64

    def write(self, user: str | None, address: str, action: str, appliance: str | None = None,
              **detail: Any) -> None:
        with self._lock:
            rec = {"at": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                   "user": user, "address": address, "action": action, "or": appliance, "detail": detail,
                   "prev": self._prev}
            line = json.dumps(rec, separators=(",", ":"), sort_keys=True).encode("utf-8")
            os.write(self._fd, line + b"\n")
            os.fsync(self._fd)
            self._prev = hashlib.sha256(line).hexdigest()

    def close(self) -> None:
        with self._lock:
            os.close(self._fd)


def verify_audit_log(path: Path) -> tuple[bool, int, str]:
    """``(intact, lines, problem)``: every line names the SHA-256 of the line before it."""
    prev = "0" * 64
    n = 0
    with open(path, "rb") as f:
        for n, line in enumerate(f.read().splitlines(), start=1):
            try:
                rec = json.loads(line)
            except ValueError:
                return False, n, f"line {n} is not JSON"
            if rec.get("prev") != prev:
                return False, n, f"line {n} does not follow line {n - 1} (a line was removed or changed)"
            prev = hashlib.sha256(line).hexdigest()
    return True, n, ""
