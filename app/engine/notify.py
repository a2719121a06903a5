"""systemd service notifications (``sd_notify``) without a dependency.

Owns: sending ``READY=1``, ``WATCHDOG=1``, ``STATUS=...`` and ``STOPPING=1`` datagrams to
``$NOTIFY_SOCKET``, and the watchdog period (half of ``$WATCHDOG_USEC``).
May import: the standard library only.

Without ``NOTIFY_SOCKET`` (not started by systemd) every call does nothing.

Test seam: ``Notifier(environ, sink=messages.append)`` hands every message (its fields
joined by newlines, as on the wire) to ``sink`` instead of a socket, so a test sees
exactly what systemd would, e.g. that ``WATCHDOG=1`` stops while a thread is stalled.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable


class Notifier:
    """Sends systemd notifications; every method returns whether the message went out."""

    def __init__(self, environ: dict[str, str] | None = None, sink: Callable[[str], None] | None = None) -> None:
        env = os.environ if environ is None else environ
        self._sink = sink
        self.address = env.get("NOTIFY_SOCKET") or None
        usec = env.get("WATCHDOG_USEC")
        pid = env.get("WATCHDOG_PID")
        self.watchdog_s: float | None = None
        if usec and usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_s = int(usec) / 1e6 / 2.0  # notify at half the timeout
        self.sent = 0

    @property
    def enabled(self) -> bool:
        """Notifications go somewhere (systemd, or the test sink)."""
        return self.address is not None or self._sink is not None

    def send(self, *fields: str) -> bool:
        """One notification of ``KEY=value`` fields."""
        if self._sink is not None:
            self._sink("\n".join(fields))
            self.sent += 1
            return True
        if self.address is None:
            return False
        addr = self.address
        if addr.startswith("@"):  # abstract namespace
            addr = "\0" + addr[1:]
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
                s.connect(addr)
                s.sendall("\n".join(fields).encode("utf-8"))
        except OSError:
            return False
        self.sent += 1
        return True

    def ready(self, status: str = "") -> bool:
        """Start-up is complete."""
        return self.send("READY=1", *((f"STATUS={status}",) if status else ()))

    def watchdog(self) -> bool:
        """The watchdog keep-alive (only while every engine thread is healthy)."""
        return self.send("WATCHDOG=1")

    def status(self, text: str) -> bool:
        """A status line for ``systemctl status``."""
        return self.send(f"STATUS={text}")

    def stopping(self) -> bool:
        """The engine is stopping."""
        return self.send("STOPPING=1")
