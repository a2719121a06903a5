"""Serving a byte stream to a peer that expects a serial device: a pty or a TCP port.

Owns: ``PtyServer`` and ``TcpServer``, used by ``lnm board-sim`` (the virtual board) and
``lnm link-proxy`` (the fault proxy) for the side the engine connects to.
May import: the standard library only.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import sys
import tty


class PtyServer:
    """A pseudo-terminal in raw mode; the peer opens ``address`` (the slave side) like a
    serial device. ``read(timeout)`` returns what the peer wrote (``b""`` if nothing),
    ``write(data)`` returns how many bytes were taken (0 when the pty buffer is full)."""

    def __init__(self) -> None:
        self.master, self._slave = os.openpty()
        tty.setraw(self._slave)  # bytes pass unchanged: no echo, no line discipline
        os.set_blocking(self.master, False)
        self.address = os.ttyname(self._slave)
        self.connected = True  # the kernel buffers what nobody reads yet

    def read(self, timeout: float) -> bytes:
        r, _w, _x = select.select([self.master], [], [], timeout)
        if not r:
            return b""
        try:
            return os.read(self.master, 65536)
        except BlockingIOError:
            return b""
        except OSError as exc:
            if exc.errno == errno.EIO:  # nobody has the slave open
                return b""
            raise

    def write(self, data: bytes) -> int:
        try:
            return os.write(self.master, data)
        except BlockingIOError:
            return 0
        except OSError as exc:
            if exc.errno in (errno.EIO, errno.EAGAIN):
                return 0
            raise

    def close(self) -> None:
        for fd in (self.master, self._slave):
            try:
                os.close(fd)
            except OSError:
                pass


class TcpServer:
    """Listens on 127.0.0.1:``port`` (0: any free port; ``address`` names it) and serves
    one client at a time; a new client takes over from the last. Without a client,
    writes are discarded."""

    def __init__(self, port: int, name: str = "lnm", peer: str = "client") -> None:
        self._name, self._peer = name, peer
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", port))
        self._listener.listen(1)
        self._listener.setblocking(False)
        self.address = f"socket://127.0.0.1:{self._listener.getsockname()[1]}"
        self._client: socket.socket | None = None

    @property
    def connected(self) -> bool:
        return self._client is not None

    def read(self, timeout: float) -> bytes:
        socks = [self._listener] + ([self._client] if self._client else [])
        r, _w, _x = select.select(socks, [], [], timeout)
        if self._listener in r:
            try:
                client, _addr = self._listener.accept()
            except BlockingIOError:
                client = None
            if client is not None:
                self._drop_client()
                client.setblocking(False)
                client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self._client = client
                print(f"{self._name}: {self._peer} connected", file=sys.stderr, flush=True)
            return b""
        if self._client is not None and self._client in r:
            try:
                data = self._client.recv(65536)
            except BlockingIOError:
                return b""
            except OSError:
                data = b""
            if not data:
                self._drop_client()
                print(f"{self._name}: {self._peer} disconnected", file=sys.stderr, flush=True)
            return data
        return b""

    def write(self, data: bytes) -> int:
        if self._client is None:
            return len(data)
        try:
            return self._client.send(data)
        except BlockingIOError:
            return 0
        except OSError:
            self._drop_client()
            return len(data)

    def _drop_client(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            except OSError:
                pass
            self._client = None

    def close(self) -> None:
        self._drop_client()
        self._listener.close()


__all__ = ["PtyServer", "TcpServer"]
