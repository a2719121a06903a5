"""The local API server: a Unix socket, many clients, one thread, never blocking the engine.

Owns: listening on the socket (permissions 0660), reading request lines, answering
``hello``/``ping``/``subscribe``/``unsubscribe`` itself, handing every other validated
request to the engine's handler, and fanning out published stream messages to
subscribers.
May import: the standard library and ``app.api.protocol``.

Rules that keep the engine safe from its clients:

- ``publish`` and the ``respond`` callback only append to a per-client bounded queue and
  wake the server thread; they never touch a socket, so a slow or dead client cannot
  stall the engine.
- A client whose queue is full loses its oldest *stream* messages (counted and reported
  to it in a ``dropped`` message); replies are never dropped. A client that has not read
  anything for ``stall_timeout_s`` while data waits, or whose unanswered replies pile up,
  is disconnected.
- State snapshots are thinned per client to the rate it asked for.
- A request the engine has not answered within ``request_timeout_s`` gets a ``timeout``
  error reply.
"""

from __future__ import annotations

import collections
import errno
import logging
import os
import selectors
import socket
import threading
import time
from pathlib import Path
from typing import Any, Callable, Mapping

from app.api import protocol as p

log = logging.getLogger("lnm.api")

Handler = Callable[[p.Request, Callable[[Mapping[str, Any]], None]], None]


class SocketInUse(OSError):
    """Another engine already listens on the socket path."""


class _Client:
    def __init__(self, sock: socket.socket, num: int, limit_msgs: int, limit_bytes: int) -> None:
        self.sock = sock
        self.num = num
        self.name = f"api#{num}"
        self.peer = _peer(sock)
        self.inbuf = bytearray()
        self.out: collections.deque[tuple[bool, bytes]] = collections.deque()  # (is_stream, data)
        self.out_bytes = 0
        self.partial = b""  # unsent tail of the message being written
        self.streams: set[str] = set()
        self.state_period_s = 0.25
        self.last_state_sent = -1e9
        self.dropped = 0
        self.dropped_reported = 0
        self.last_progress = time.monotonic()
        self.pending: dict[Any, float] = {}  # request id -> deadline
        self.limit_msgs = limit_msgs
        self.limit_bytes = limit_bytes
        self.closing = False

    def label(self) -> str:
        return f"{self.name}{self.peer}"


def _peer(sock: socket.socket) -> str:
    try:
        import struct

        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, uid, _gid = struct.unpack("3i", creds)
        return f"(pid {pid}, uid {uid})"
    except (OSError, AttributeError):
        return ""


class ApiServer:
    """Serve the API on ``path``; ``handler(request, respond)`` is the engine's entry point.

    ``handler`` runs in the server thread and must return quickly (the engine queues the
    request and calls ``respond(reply_dict)`` later, from any thread).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        handler: Handler,
        hello: Callable[[], Mapping[str, Any]],
        *,
        mode: int = 0o660,
        max_queue_msgs: int = 400,
        max_queue_bytes: int = 4 * 1024 * 1024,
        stall_timeout_s: float = 10.0,
        request_timeout_s: float = 5.0,
        max_clients: int = 16,
        on_client: Callable[[str, str], None] | None = None,
        slow_commands: Mapping[str, float] | None = None,
    ) -> None:
        self.path = Path(path)
        self._handler = handler
        self._hello = hello
        self._mode = mode
        self._limit_msgs = max_queue_msgs
        self._limit_bytes = max_queue_bytes
        self._stall_s = stall_timeout_s
        self._request_timeout_s = request_timeout_s
        self._max_clients = max_clients
        self._on_client = on_client
        self._slow = dict(slow_commands or {})  # command -> its own reply timeout (s)
        self._lock = threading.Lock()
        self._clients: dict[int, _Client] = {}
        self._next = 1
        self._latest: dict[str, bytes] = {}  # last message per "sticky" stream (state, alarms)
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._wake_pending = False
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.counters = collections.Counter()

    # ------------------------------------------------------------------ life cycle

    def start(self) -> None:
        self._listener = self._bind()
        self._listener.setblocking(False)
        self._sel.register(self._listener, selectors.EVENT_READ, "listen")
        self._sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._thread = threading.Thread(target=self._run, name="lnm-api", daemon=True)
        self._thread.start()

    def _bind(self) -> socket.socket:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() or self.path.is_symlink():
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            probe.settimeout(0.5)
            try:
                probe.connect(str(self.path))
            except OSError:
                self.path.unlink()  # stale socket of a dead engine
            else:
                raise SocketInUse(errno.EADDRINUSE, f"another engine is already listening on {self.path}")
            finally:
                probe.close()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o117)  # the socket is created 0660 at once, never world-accessible
        try:
            sock.bind(str(self.path))
        finally:
            os.umask(old)
        os.chmod(self.path, self._mode)
        sock.listen(16)
        return sock

    def close(self) -> None:
        self._stop.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        with self._lock:
            clients = list(self._clients.values())
            self._clients.clear()
        for c in clients:
            _close_quietly(c.sock)
        if self._listener is not None:
            _close_quietly(self._listener)
            try:
                self.path.unlink()
            except OSError:
                pass
        _close_quietly(self._wake_r)
        _close_quietly(self._wake_w)
        try:
            self._sel.close()
        except (OSError, ValueError):
            pass

    @property
    def client_count(self) -> int:
        with self._lock:
            return len(self._clients)

    def subscribed_streams(self) -> set[str]:
        """Every stream some client subscribes to (the engine skips building the others)."""
        with self._lock:
            out: set[str] = set()
            for c in self._clients.values():
                out |= c.streams
            return out

    def client_names(self) -> list[str]:
        with self._lock:
            return [c.label() for c in self._clients.values()]

    # ------------------------------------------------------------------ publishing (any thread)

    def publish(self, stream: str, message: Mapping[str, Any], sticky: bool = False) -> None:
        """Queue a stream message for every subscriber of ``stream``; never blocks.

        ``sticky`` keeps it as the stream's latest value, sent at once to new subscribers.
        """
        data = p.encode(message)
        now = time.monotonic()
        with self._lock:
            if sticky:
                self._latest[stream] = data
            for c in self._clients.values():
                if stream not in c.streams or c.closing:
                    continue
                if stream == "state":
                    if now - c.last_state_sent < c.state_period_s * 0.9:
                        continue
                    c.last_state_sent = now
                self._enqueue(c, data, is_stream=True)
        self._wake()

    def _enqueue(self, c: _Client, data: bytes, is_stream: bool) -> None:
        """Caller holds the lock."""
        c.out.append((is_stream, data))
        c.out_bytes += len(data)
        while len(c.out) > c.limit_msgs or c.out_bytes > c.limit_bytes:
            for i, (s, d) in enumerate(c.out):
                if s:
                    del c.out[i]
                    c.out_bytes -= len(d)
                    c.dropped += 1
                    self.counters["dropped"] += 1
                    break
            else:  # only replies left and still over the limit: the client does not read
                c.closing = True
                break

    def _respond(self, c: _Client, reply: Mapping[str, Any]) -> None:
        """The engine's answer to a request it was handed (any thread)."""
        data = p.encode(reply)
        with self._lock:
            if c.num not in self._clients or c.closing:
                return
            rid = reply.get("id")
            if rid not in c.pending:
                return  # already answered with a timeout
            del c.pending[rid]
            self._enqueue(c, data, is_stream=False)
        self._wake()

    def _send(self, c: _Client, message: Mapping[str, Any]) -> None:
        """A message from the server itself (server thread)."""
        with self._lock:
            self._enqueue(c, p.encode(message), is_stream=False)
        self._wake()

    def _wake(self) -> None:
        if self._wake_pending:
            return
        self._wake_pending = True
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass

    # ------------------------------------------------------------------ server thread

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                events = self._sel.select(timeout=0.1)
            except (OSError, ValueError):
                break
            for key, mask in events:
                if key.data == "listen":
                    self._accept()
                elif key.data == "wake":
                    try:
                        while self._wake_r.recv(4096):
                            pass
                    except (BlockingIOError, InterruptedError):
                        pass
                    except OSError:
                        pass
                    # cleared after draining: a wake-up lost in between is caught below,
                    # because the write interest is recomputed from the queues every loop
                    self._wake_pending = False
                else:
                    c = key.data
                    if mask & selectors.EVENT_READ:
                        self._read(c)
                    if mask & selectors.EVENT_WRITE:
                        self._write(c)
            self._housekeeping()

    def _accept(self) -> None:
        if self._listener is None:
            return
        while True:
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("API accept failed: %s", exc)
                return
            sock.setblocking(False)
            with self._lock:
                if len(self._clients) >= self._max_clients:
                    refuse = True
                else:
                    refuse = False
                    c = _Client(sock, self._next, self._limit_msgs, self._limit_bytes)
                    self._next += 1
                    self._clients[c.num] = c
            if refuse:
                try:
                    sock.send(p.encode({"type": "error", "error": {"code": p.BAD_STATE, "message": f"too many clients (at most {self._max_clients})"}}))
                except OSError:
                    pass
                _close_quietly(sock)
                continue
            self.counters["connections"] += 1
            self._sel.register(sock, selectors.EVENT_READ, c)
            with self._lock:
                self._enqueue(c, p.encode(dict(self._hello())), is_stream=False)
            if self._on_client:
                self._on_client("connected", c.label())

    def _read(self, c: _Client) -> None:
        try:
            data = c.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(c, "disconnected")
            return
        c.inbuf += data
        while True:
            nl = c.inbuf.find(b"\n")
            if nl < 0:
                if len(c.inbuf) > p.MAX_LINE_BYTES:
                    self._reply_direct(c, None, p.ApiError(p.BAD_REQUEST, f"request line longer than {p.MAX_LINE_BYTES} bytes"))
                    with self._lock:
                        c.closing = True
                break
            line = bytes(c.inbuf[:nl]).strip()
            del c.inbuf[: nl + 1]
            if line:
                self._request(c, line)

    def _request(self, c: _Client, line: bytes) -> None:
        self.counters["requests"] += 1
        req_id: Any = None
        try:
            obj = p.decode_line(line)
            req_id = obj.get("id") if isinstance(obj.get("id"), (int, str)) and not isinstance(obj.get("id"), bool) else None
            req_id, cmd, args = p.parse_request(obj)
        except p.ApiError as err:
            self.counters["rejected"] += 1
            self._reply_direct(c, req_id, err)
            return
        name = cmd.name
        if name == "ping":
            self._send(c, p.reply_ok(req_id, {"pong": True}))
            return
        if name == "hello":
            c.name = f"{args['client']}#{c.num}"
            self._send(c, p.reply_ok(req_id, {"client": c.name}))
            return
        if name == "subscribe":
            streams = set(args.get("streams") or p.STREAMS)
            period = 1.0 / float(args.get("state_hz", 4.0))
            with self._lock:
                c.streams = streams
                c.state_period_s = period
                c.last_state_sent = -1e9
            self._send(c, p.reply_ok(req_id, {"streams": sorted(streams), "state_hz": round(1.0 / period, 3)}))
            with self._lock:  # the latest state and alarm messages at once
                for stream in ("state", "alarms"):
                    if stream in streams and stream in self._latest:
                        self._enqueue(c, self._latest[stream], is_stream=True)
                        if stream == "state":
                            c.last_state_sent = time.monotonic()
            self._wake()
            return
        if name == "unsubscribe":
            with self._lock:
                c.streams = set()
            self._send(c, p.reply_ok(req_id, {}))
            return
        deadline = time.monotonic() + self._slow.get(name, self._request_timeout_s)
        with self._lock:
            c.pending[req_id] = deadline
        request = p.Request(req_id, name, args, client=c.name, deadline_s=deadline)
        try:
            self._handler(request, lambda reply, _c=c: self._respond(_c, reply))
        except Exception as exc:  # noqa: BLE001 - the handler's failure is reported to the client
            log.exception("API handler failed")
            self._respond(c, p.reply_error(req_id, p.ApiError(p.INTERNAL, f"engine failed to take the request: {exc}")))

    def _reply_direct(self, c: _Client, req_id: Any, err: p.ApiError) -> None:
        self._send(c, p.reply_error(req_id, err))

    def _write(self, c: _Client) -> None:
        while True:
            with self._lock:
                if not c.partial:
                    if c.dropped > c.dropped_reported:
                        c.partial = p.encode({"type": "dropped", "count": c.dropped - c.dropped_reported, "total": c.dropped})
                        c.dropped_reported = c.dropped
                    elif c.out:
                        _s, d = c.out.popleft()
                        c.out_bytes -= len(d)
                        c.partial = d
                    else:
                        break
                data = c.partial
            try:
                n = c.sock.send(data)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._drop(c, "write failed")
                return
            c.last_progress = time.monotonic()
            with self._lock:
                c.partial = data[n:]
            if n < len(data):
                return

    def _housekeeping(self) -> None:
        now = time.monotonic()
        timed_out: list[tuple[_Client, Any]] = []
        to_drop: list[tuple[_Client, str]] = []
        with self._lock:
            clients = list(self._clients.values())
            for c in clients:
                for rid, deadline in list(c.pending.items()):
                    if now > deadline:
                        timed_out.append((c, rid))
                has_data = bool(c.out or c.partial or c.dropped > c.dropped_reported)
                if c.closing and not has_data:
                    to_drop.append((c, "closed"))
                elif c.closing and now - c.last_progress > 1.0:
                    to_drop.append((c, "not reading (queue full of replies)"))
                elif has_data and now - c.last_progress > self._stall_s:
                    to_drop.append((c, f"not reading for {self._stall_s:g} s"))
                if not has_data:
                    c.last_progress = now
        for c, rid in timed_out:
            with self._lock:
                c.pending.pop(rid, None)
                self._enqueue(c, p.encode(p.reply_error(rid, p.ApiError(p.TIMEOUT, "the engine did not answer in time"))), is_stream=False)
        for c, why in to_drop:
            self._drop(c, why)
        with self._lock:
            clients = list(self._clients.values())
        for c in clients:
            want = selectors.EVENT_READ
            if c.out or c.partial or c.dropped > c.dropped_reported:
                want |= selectors.EVENT_WRITE
            try:
                key = self._sel.get_key(c.sock)
                if key.events != want:
                    self._sel.modify(c.sock, want, c)
            except (KeyError, ValueError, OSError):
                pass

    def _drop(self, c: _Client, why: str) -> None:
        with self._lock:
            if self._clients.pop(c.num, None) is None:
                return
        try:
            self._sel.unregister(c.sock)
        except (KeyError, ValueError, OSError):
            pass
        _close_quietly(c.sock)
        self.counters["disconnects"] += 1
        if self._on_client:
            self._on_client(f"disconnected ({why})", c.label())


def _close_quietly(sock: socket.socket) -> None:
    try:
        sock.close()
    except OSError:
        pass
