"""Client library for the engine's local API (used by the touchscreen UI and the CLI).

Owns: connecting to the engine's Unix socket, sending commands and matching their
replies, receiving the subscription stream into a bounded local queue, timeouts, and
optional automatic reconnection (resubscribing after the engine restarts).
May import: the standard library and ``app.api.protocol``. No Kivy, no engine modules:
a UI calls ``poll()`` from its frame clock, or ``call_async`` with a callback that it
marshals to its own thread.

Typical use::

    client = EngineClient(name="ui", reconnect=True)
    client.start()                              # background connect/reconnect
    client.subscribe(["state", "events", "alarms"], state_hz=4)
    ...
    for msg in client.poll():                   # non-blocking, from the UI clock
        if msg["type"] == "state": ...
        if msg["type"] == "connection": ...     # {"connected": false, "message": ...}
    client.call("alarm.ack")                    # raises CommandFailed / EngineUnavailable

Synchronous scripts use ``with EngineClient(path) as c: c.call("state.get")``.

The greeting: on every (re)connection the client says ``hello`` with its name and, for
the touchscreen (``name="ui"``) and the service console (``role="console"``), its role,
which gives it one of the engine's reserved connection places (``API.md``). When the
engine closes the connection it says why (a ``goodbye`` message: idle, every place
taken, replaced by a newer connection, ...); that sentence becomes the reason of the
``connection`` message and of ``EngineUnavailable``.
"""

from __future__ import annotations

import collections
import itertools
import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any
from collections.abc import Callable, Iterable, Iterator, Mapping

from app.api import API_VERSION
from app.api import protocol as p


class EngineUnavailable(ConnectionError):
    """No engine answers on the socket, or the connection was lost."""


class EngineTimeout(TimeoutError):
    """The engine did not answer a command in time."""


class CommandFailed(Exception):
    """The engine refused a command. ``code`` is one of ``protocol.ERROR_CODES``."""

    def __init__(self, cmd: str, error: Mapping[str, Any]) -> None:
        self.cmd = cmd
        self.code = str(error.get("code", p.INTERNAL))
        self.message = str(error.get("message", "refused"))
        self.error = dict(error)
        super().__init__(self.message)


def default_role(name: str) -> str | None:
    """The role a client of this name claims unless told otherwise: the touchscreen UI
    (``ui``) gets the UI's reserved places; every other name none."""
    return "ui" if name == "ui" else None


def no_engine_message(path: Path, reason: str = "") -> str:
    """What to tell a person when no engine answers on ``path``."""
    why = f" ({reason})" if reason else ""
    return (
        f"no engine is running on {path}{why}; start it with `lnm engine` (or `lnm run`), "
        "or point to its socket with --socket / $LNM_SOCKET"
    )


class EngineClient:
    """One connection to the engine, thread-safe; optionally reconnecting by itself."""

    def __init__(
        self,
        socket_path: str | os.PathLike[str] | None = None,
        *,
        name: str = "client",
        role: str | None = None,
        timeout_s: float = 3.0,
        reconnect: bool = False,
        retry_s: float = 0.5,
        queue_size: int = 2000,
    ) -> None:
        self.path = Path(socket_path) if socket_path else p.default_socket_path()
        self.name = name
        self.role = role if role is not None else default_role(name)
        self.timeout_s = timeout_s
        self.reconnect = reconnect
        self.retry_s = retry_s
        self.hello: dict[str, Any] = {}
        self.greeting: dict[str, Any] = {}  # the engine's answer to our hello (name, role, place)
        self.dropped = 0  # stream messages lost locally (queue full) or reported by the engine
        self._sock: socket.socket | None = None
        self._send_lock = threading.Lock()
        self._lock = threading.Condition()
        self._queue: collections.deque[dict[str, Any]] = collections.deque()
        self._queue_size = queue_size
        self._pending: dict[int, Callable[[dict[str, Any]], None]] = {}
        self._ids = itertools.count(1)
        self._subscription: dict[str, Any] | None = None
        self._sub_lock = threading.Lock()
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._reader: threading.Thread | None = None
        self._keeper: threading.Thread | None = None
        self._last_error = ""
        self._goodbye = ""  # why the engine is closing the current connection

    # ------------------------------------------------------------------ connection

    def __enter__(self) -> EngineClient:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def last_error(self) -> str:
        return self._last_error

    def connect(self, timeout_s: float | None = None) -> dict[str, Any]:
        """Connect now; returns the engine's hello. Raises EngineUnavailable."""
        self._stop.clear()
        self._open(self.timeout_s if timeout_s is None else timeout_s)
        return self.hello

    def start(self) -> None:
        """Connect in the background and keep reconnecting until ``close()`` (never raises)."""
        self.reconnect = True
        self._stop.clear()
        if self._keeper is None or not self._keeper.is_alive():
            self._keeper = threading.Thread(target=self._keep, name="lnm-api-client", daemon=True)
            self._keeper.start()

    def wait_connected(self, timeout_s: float) -> bool:
        return self._connected.wait(timeout_s)

    def close(self) -> None:
        self._stop.set()
        self._disconnect("closed by the client", notify=False)
        for t in (self._keeper, self._reader):
            if t is not None and t is not threading.current_thread():
                t.join(timeout=2.0)

    def _connect(self, timeout_s: float) -> socket.socket:
        """A connected socket; a listener whose queue is momentarily full (EAGAIN) is
        tried again until ``timeout_s`` has passed."""
        deadline = time.monotonic() + timeout_s
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout_s)
            try:
                sock.connect(str(self.path))
                return sock
            except BlockingIOError:
                sock.close()
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.02)
            except BaseException:
                sock.close()
                raise

    def _open(self, timeout_s: float) -> None:
        try:
            sock = self._connect(timeout_s)
        except FileNotFoundError:
            raise EngineUnavailable(no_engine_message(self.path, "no socket")) from None
        except ConnectionRefusedError:
            raise EngineUnavailable(no_engine_message(self.path, "connection refused")) from None
        except PermissionError:
            raise EngineUnavailable(
                f"not allowed to connect to the engine on {self.path} "
                "(the socket is for the appliance's user and group)"
            ) from None
        except BlockingIOError:
            raise EngineUnavailable(f"the engine on {self.path} is too busy to take a connection "
                                    f"(tried for {timeout_s:g} s)") from None
        except OSError as exc:
            raise EngineUnavailable(no_engine_message(self.path, exc.strerror or str(exc))) from None
        buf = bytearray()
        try:
            hello = self._read_line(sock, buf, timeout_s)
        except (OSError, ValueError) as exc:
            sock.close()
            raise EngineUnavailable(f"the engine on {self.path} did not greet ({exc})") from None
        if hello.get("type") != "hello":
            sock.close()
            message = hello.get("error", {}).get("message", "unexpected greeting")
            raise EngineUnavailable(f"the engine on {self.path} refused the connection: {message}")
        if hello.get("api") != API_VERSION:
            sock.close()
            raise EngineUnavailable(
                f"the engine on {self.path} speaks API version {hello.get('api')}, this client version {API_VERSION}"
            )
        sock.settimeout(0.5)
        self.hello = hello
        self.greeting = {}
        self._goodbye = ""
        self._sock = sock
        # the greeting (and the renewed subscription) go out before anyone can see
        # "connected": no command of the caller can overtake them
        greet: dict[str, Any] = {"client": self.name}
        if self.role:
            greet["role"] = self.role
        self.call_async("hello", self._greeted, **greet)
        with self._sub_lock:  # a subscribe() meanwhile is either sent here or sends itself
            if self._subscription is not None:
                self.call_async("subscribe", None, **self._subscription)
            self._connected.set()
        self._last_error = ""
        # queued before the reader starts: nothing the reader delivers (events, or the
        # news that the connection dropped again) can overtake "connected"
        self._push({"type": "connection", "connected": True, "hello": hello})
        self._reader = threading.Thread(target=self._read_loop, args=(sock, buf), name="lnm-api-reader", daemon=True)
        self._reader.start()

    def _greeted(self, reply: dict[str, Any]) -> None:
        if reply.get("ok"):
            self.greeting = dict(reply.get("result") or {})
        elif (reply.get("error") or {}).get("code") != "disconnected":
            self._goodbye = str((reply.get("error") or {}).get("message") or "the engine refused the greeting")

    @staticmethod
    def _read_line(sock: socket.socket, buf: bytearray, timeout_s: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while b"\n" not in buf:
            if time.monotonic() > deadline:
                raise TimeoutError("timed out")
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed")
            buf += chunk
        nl = buf.index(b"\n")
        line = bytes(buf[:nl])
        del buf[: nl + 1]
        obj = json.loads(line)
        if not isinstance(obj, dict):
            raise ValueError("not a JSON object")
        return obj

    def _keep(self) -> None:
        while not self._stop.is_set():
            if not self._connected.is_set():
                try:
                    self._open(self.timeout_s)
                except EngineUnavailable as exc:
                    if exc.args[0] != self._last_error:
                        self._last_error = str(exc)
                        self._push({"type": "connection", "connected": False, "message": str(exc)})
            self._stop.wait(self.retry_s)

    def _read_loop(self, sock: socket.socket, buf: bytearray) -> None:
        reason = "the engine closed the connection"
        while not self._stop.is_set() and self._sock is sock:
            # lines already buffered first: the greeting's read may have taken more
            while True:
                nl = buf.find(b"\n")
                if nl < 0:
                    break
                line = bytes(buf[:nl])
                del buf[: nl + 1]
                try:
                    msg = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(msg, dict):
                    self._dispatch(msg)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError as exc:
                reason = f"connection lost ({exc.strerror or exc})"
                break
            if not chunk:
                break
            buf += chunk
        if self._goodbye:
            reason = f"the engine closed the connection: {self._goodbye}"
        if self._sock is sock:
            self._disconnect(reason)

    def _disconnect(self, reason: str, notify: bool = True) -> None:
        with self._send_lock:
            sock, self._sock = self._sock, None
        if sock is None:
            return
        self._last_error = reason
        with self._lock:
            pending, self._pending = self._pending, {}
        if notify:  # queued before "not connected" can be seen (``get`` then ends at once)
            self._push({"type": "connection", "connected": False, "message": reason})
        self._connected.clear()
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()
        lost = {"type": "reply", "ok": False, "error": {"code": "disconnected", "message": reason}}
        for cb in pending.values():
            cb(lost)

    def _dispatch(self, msg: dict[str, Any]) -> None:
        if msg.get("type") == "reply":
            rid = msg.get("id")
            with self._lock:
                cb = self._pending.pop(rid, None) if isinstance(rid, int) else None
            if cb is not None:
                cb(msg)
            return
        if msg.get("type") == "goodbye":
            self._goodbye = str(msg.get("message") or msg.get("reason") or "no reason given")
            return
        if msg.get("type") == "dropped":
            count = msg.get("count", 0)
            self.dropped += count if isinstance(count, int) else 0
        self._push(msg)

    def _push(self, msg: dict[str, Any]) -> None:
        with self._lock:
            if len(self._queue) >= self._queue_size:
                self._queue.popleft()
                self.dropped += 1
            self._queue.append(msg)
            self._lock.notify_all()

    # ------------------------------------------------------------------ commands

    def call_async(
        self, cmd: str, callback: Callable[[dict[str, Any]], None] | None, /, **args: Any
    ) -> int:
        """Send a command; ``callback(reply)`` runs on the reader thread. Raises EngineUnavailable."""
        rid = next(self._ids)
        line = p.encode({"id": rid, "cmd": cmd, **args})
        with self._lock:
            self._pending[rid] = callback or (lambda _r: None)
        with self._send_lock:
            sock = self._sock
            if sock is None:
                with self._lock:
                    self._pending.pop(rid, None)
                raise EngineUnavailable(self._last_error or no_engine_message(self.path, "not connected"))
            try:
                sock.sendall(line)
            except OSError as exc:
                with self._lock:
                    self._pending.pop(rid, None)
                sending_failed = f"sending to the engine failed ({exc.strerror or exc})"
            else:
                sending_failed = ""
        if sending_failed:
            # the engine may have closed the connection on purpose and said why (goodbye):
            # the reader gets to that message before the reason is chosen
            reader = self._reader
            if reader is not None and reader is not threading.current_thread():
                reader.join(timeout=1.0)
            if self._goodbye:
                sending_failed = f"the engine closed the connection: {self._goodbye}"
            self._disconnect(sending_failed)
            raise EngineUnavailable(self._last_error or sending_failed)
        return rid

    def call(self, cmd: str, /, timeout_s: float | None = None, **args: Any) -> dict[str, Any]:
        """Send a command and wait for its result. Raises CommandFailed, EngineTimeout, EngineUnavailable."""
        done = threading.Event()
        box: list[dict[str, Any]] = []

        def got(reply: dict[str, Any]) -> None:
            box.append(reply)
            done.set()

        rid = self.call_async(cmd, got, **args)
        wait = self.timeout_s if timeout_s is None else timeout_s
        if not done.wait(wait):
            with self._lock:
                self._pending.pop(rid, None)
            raise EngineTimeout(f"the engine did not answer {cmd!r} within {wait:g} s")
        reply = box[0]
        if reply.get("ok"):
            return dict(reply.get("result") or {})
        error = reply.get("error") or {}
        if error.get("code") == "disconnected":
            raise EngineUnavailable(str(error.get("message")))
        raise CommandFailed(cmd, error)

    def subscribe(self, streams: Iterable[str] | None = None, state_hz: float = 4.0) -> None:
        """Ask for stream messages (kept and renewed after a reconnect)."""
        sub: dict[str, Any] = {"state_hz": float(state_hz)}
        if streams is not None:
            sub["streams"] = list(streams)
        with self._sub_lock:
            self._subscription = sub
            send_now = self.connected
        if send_now:
            self.call("subscribe", **sub)

    # ------------------------------------------------------------------ stream

    def poll(self, max_messages: int = 1000) -> list[dict[str, Any]]:
        """Stream messages received so far (non-blocking)."""
        out: list[dict[str, Any]] = []
        with self._lock:
            while self._queue and len(out) < max_messages:
                out.append(self._queue.popleft())
        return out

    def get(self, timeout_s: float | None = None) -> dict[str, Any] | None:
        """The next stream message, waiting up to ``timeout_s`` (None: forever)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._lock:
            while not self._queue:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                if not self.connected and not self.reconnect and not self._queue:
                    return None
                self._lock.wait(0.2 if remaining is None else min(remaining, 0.2))
            return self._queue.popleft()

    def messages(self, timeout_s: float | None = None) -> Iterator[dict[str, Any]]:
        """Iterate stream messages; ends after ``timeout_s`` of silence, or when the
        connection is lost and ``reconnect`` is off."""
        while True:
            msg = self.get(timeout_s)
            if msg is None:
                return
            yield msg
            if msg.get("type") == "connection" and not msg.get("connected") and not self.reconnect:
                return
