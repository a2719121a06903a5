"""Byte transports to the board, opened by URL.

Owns: ``open_port(url)`` and the small ``Port`` interface the link reads and writes.
May import: the standard library, pyserial, and (lazily, for ``sim://``) ``firmware_bridge.sim``.

A port moves bytes and nothing else: ``read(max_bytes)`` returns what has arrived (at
most ``max_bytes``), waiting at most ``timeout_s`` for the first byte and returning
``b""`` when nothing came; ``write(data)`` sends all of it; ``close()``. A port that fails
(device unplugged, peer closed the socket, pty gone) raises ``OSError`` (``PortError`` or
pyserial's ``SerialException``, both ``OSError``) from ``read``/``write``; the link then
closes it and reopens it.

URLs:

- a device path, e.g. ``/dev/ttyACM0`` or a pty ``/dev/pts/5`` (pyserial, raw mode);
- ``socket://HOST:PORT``: TCP, e.g. the virtual board's ``lnm board-sim --tcp PORT``;
- ``loop://`` and other pyserial URL handlers (``spy://``, ``rfc2217://``);
- ``sim://...``: the in-process virtual board, ``firmware_bridge.sim.open_sim(url, clock=...)``.
"""

from __future__ import annotations

import os
import select
import socket
from typing import Protocol
from urllib.parse import urlsplit

DEFAULT_READ_TIMEOUT_S = 0.02
DEFAULT_WRITE_TIMEOUT_S = 1.0
DEFAULT_BAUDRATE = 921600  # ignored by USB CDC-ACM; meaningful only for a UART bridge


class Port(Protocol):
    """What the link needs from a transport."""

    url: str

    def read(self, max_bytes: int = 65536) -> bytes: ...

    def write(self, data: bytes) -> None: ...

    def close(self) -> None: ...


class PortError(OSError):
    """A port could not be opened or has failed; the message names the URL."""


def open_port(
    url: str,
    *,
    timeout_s: float = DEFAULT_READ_TIMEOUT_S,
    write_timeout_s: float = DEFAULT_WRITE_TIMEOUT_S,
    baudrate: int = DEFAULT_BAUDRATE,
    clock=None,
) -> Port:
    """Open the board port named by ``url``. Raises ``PortError`` naming the URL."""
    if not isinstance(url, str) or not url.strip():
        raise PortError(f"board port URL is empty ({url!r}); expected e.g. /dev/ttyACM0, socket://HOST:PORT or sim://")
    url = url.strip()
    scheme = urlsplit(url).scheme.lower() if "://" in url else ""
    if scheme == "sim":
        return _open_sim(url, clock)
    if scheme == "socket":
        return SocketPort.open(url, timeout_s=timeout_s, write_timeout_s=write_timeout_s)
    return SerialPort.open(url, timeout_s=timeout_s, write_timeout_s=write_timeout_s, baudrate=baudrate)


def clock_for_url(url: str):
    """The clock a link on ``url`` should run on when none is injected: real time, or for
    ``sim://...?speed=X`` a ``ScaledClock(X)`` so that host and virtual board share one
    time line (the board's 500 ms watchdog counts in the same seconds as the heartbeats)."""
    from firmware_bridge.clock import MonotonicClock, ScaledClock

    if isinstance(url, str) and url.strip().lower().startswith("sim://"):
        from urllib.parse import parse_qs

        speed = parse_qs(urlsplit(url.strip()).query).get("speed")
        if speed:
            try:
                return ScaledClock(float(speed[-1]))
            except ValueError as exc:
                raise PortError(f"cannot open board port {url!r}: speed={speed[-1]!r}: {exc}") from None
    return MonotonicClock()


def _open_sim(url: str, clock) -> Port:
    try:
        from firmware_bridge.sim import open_sim
    except ImportError as exc:
        raise PortError(f"cannot open board port {url!r}: the virtual board is not available ({exc})") from exc
    try:
        return open_sim(url, clock=clock)
    except (ValueError, OSError, KeyError) as exc:
        raise PortError(f"cannot open board port {url!r}: {exc}") from exc


class SocketPort:
    """``socket://HOST:PORT`` over plain TCP with Nagle disabled (low round-trip times)."""

    def __init__(self, url: str, sock: socket.socket, timeout_s: float) -> None:
        self.url = url
        self._sock = sock
        self._timeout_s = timeout_s

    @classmethod
    def open(cls, url: str, *, timeout_s: float, write_timeout_s: float) -> SocketPort:
        parts = urlsplit(url)
        try:
            host, port = parts.hostname, parts.port
        except ValueError as exc:
            raise PortError(f"cannot open board port {url!r}: bad port number ({exc})") from None
        if not host or port is None:
            raise PortError(f"cannot open board port {url!r}: expected socket://HOST:PORT")
        try:
            sock = socket.create_connection((host, port), timeout=max(write_timeout_s, 0.5))
        except OSError as exc:
            raise PortError(f"cannot open board port {url!r}: {exc.strerror or exc}") from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(write_timeout_s)  # bounds sendall; reads go through select
        return cls(url, sock, timeout_s)

    def read(self, max_bytes: int = 65536) -> bytes:
        try:
            ready, _, _ = select.select([self._sock], [], [], self._timeout_s)
            if not ready:
                return b""
            data = self._sock.recv(max_bytes)
        except (OSError, ValueError) as exc:  # ValueError: select on a closed socket
            raise PortError(f"board port {self.url!r}: read failed ({exc})") from exc
        if not data:
            raise PortError(f"board port {self.url!r}: the board closed the connection")
        return data

    def write(self, data: bytes) -> None:
        try:
            self._sock.sendall(data)
        except OSError as exc:
            raise PortError(f"board port {self.url!r}: write failed ({exc})") from exc

    def close(self) -> None:
        try:
            self._sock.close()
        except OSError:
            pass

    def __repr__(self) -> str:
        return f"SocketPort({self.url!r})"


class SerialPort:
    """A device path or pyserial URL. Device paths read through ``select`` + ``os.read``
    so a read returns as soon as bytes arrive, with everything that has arrived."""

    def __init__(self, url: str, serial_obj, timeout_s: float) -> None:
        self.url = url
        self._ser = serial_obj
        self._timeout_s = timeout_s
        try:
            self._fd = serial_obj.fileno()
            os.set_blocking(self._fd, False)  # pyserial opens device paths O_NONBLOCK already
        except (AttributeError, OSError, ValueError, NotImplementedError):
            self._fd = None

    @classmethod
    def open(cls, url: str, *, timeout_s: float, write_timeout_s: float, baudrate: int) -> SerialPort:
        import serial  # pyserial

        try:
            ser = serial.serial_for_url(url, baudrate=baudrate, timeout=timeout_s, write_timeout=write_timeout_s)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise PortError(f"cannot open board port {url!r}: {exc}") from exc
        return cls(url, ser, timeout_s)

    def read(self, max_bytes: int = 65536) -> bytes:
        if self._fd is not None:
            try:
                # streaming data is usually there already: try a non-blocking read first
                # (a raw tty with VMIN=0 returns b"" or EAGAIN when nothing is waiting)
                try:
                    data = os.read(self._fd, max_bytes)
                except BlockingIOError:
                    data = b""
                if data:
                    return data
                ready, _, _ = select.select([self._fd], [], [], self._timeout_s)
                if not ready:
                    return b""
                data = os.read(self._fd, max_bytes)
            except BlockingIOError:
                return b""
            except (OSError, ValueError) as exc:
                raise PortError(f"board port {self.url!r}: read failed ({exc})") from exc
            if not data:  # ready but empty: the device went away (Linux)
                raise PortError(f"board port {self.url!r}: device disconnected")
            return data
        first = self._ser.read(1)  # waits up to timeout_s for the first byte
        if not first:
            return b""
        waiting = self._ser.in_waiting
        return first + self._ser.read(min(waiting, max_bytes - 1)) if waiting else first

    def write(self, data: bytes) -> None:
        self._ser.write(data)  # raises SerialException (an OSError) on failure

    def close(self) -> None:
        try:
            self._ser.close()
        except (OSError, ValueError, TypeError):
            pass

    def __repr__(self) -> str:
        return f"SerialPort({self.url!r})"


__all__ = ["Port", "PortError", "open_port", "clock_for_url", "SerialPort", "SocketPort"]
