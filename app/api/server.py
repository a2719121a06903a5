"""The local API server: a Unix socket, many clients, one thread, never blocking the engine.

Owns: listening on the socket (permissions 0660), reading request lines within limits,
the greeting and the connection places (reserved ones for the touchscreen and the
service console), answering ``hello``/``ping``/``subscribe``/``unsubscribe`` itself,
handing every other validated request to the engine's handler, and fanning out published
stream messages to subscribers.
May import: the standard library and ``app.api.protocol``.

Rules that keep the engine safe from its clients:

- ``publish`` and the ``respond`` callback only append to a per-client bounded queue and
  wake the server thread; they never touch a socket, so a slow or dead client cannot
  stall the engine. They wait at most ``LOCK_WAIT_S`` for the server's lock (and only
  ``LOCK_RETRY_S`` while it is known to be stuck): a stuck server thread never holds up
  the engine.
- A client whose queue is full loses its oldest *stream* messages (counted and reported
  to it in a ``dropped`` message); replies are never dropped. A client that has not read
  anything for ``stall_timeout_s`` while data waits, or whose unanswered replies pile up,
  is disconnected.
- Every line is parsed within limits (``protocol.decode_line``); whatever a client sends
  costs it an error reply or its connection, never the server thread. A bug met while
  serving one client disconnects that client only.
- A connection must say ``hello`` within ``greet_timeout_s``; until then only ``ping`` is
  answered. At most ``max_waiting`` connections of each kind (trusted peer or not) may
  wait for their greeting; a newer one pushes the oldest out. A connection without a
  subscription that sends nothing for ``idle_timeout_s`` is closed (with a ``goodbye``).
- Places: ``max_clients`` ordinary places, plus ``reserved`` places per role (``ui``,
  ``console``) that only a *trusted* peer may take: one whose user (``SO_PEERCRED``) is
  the engine's own user or root (see ``API.md``, "Connection places"). When every place
  of its role is taken, a newer trusted connection of that role replaces the oldest.
- At most ``max_in_flight`` requests per connection wait for the engine at once, so a
  flood of lines never floods the engine's queue.
- State snapshots are thinned per client to the rate it asked for.
- A request the engine has not answered within ``request_timeout_s`` gets a ``timeout``
  error reply.
"""

from __future__ import annotations

import collections
import errno
import functools
import logging
import os
import selectors
import socket
import struct
import threading
import time
from pathlib import Path
from typing import Any
from collections.abc import Callable, Mapping

from app.api import protocol as p

log = logging.getLogger("lnm.api")

Handler = Callable[[p.Request, Callable[[Mapping[str, Any]], None]], None]

GREET_TIMEOUT_S = 5.0
IDLE_TIMEOUT_S = 60.0
MAX_CLIENTS = 16
RESERVED = {"ui": 2, "console": 2}
MAX_WAITING = 8
MAX_IN_FLIGHT = 32
LOCK_WAIT_S = 0.25  # longest a publishing thread waits for the server's lock
LOCK_RETRY_S = 0.005  # ... and while the lock is known to be stuck
ACCEPTS_PER_ROUND = 64  # connections taken per turn of the loop (greetings are read in between)
LISTEN_BACKLOG = 128  # connections the kernel holds for us: a burst never makes a connect fail
CLOSING_GRACE_S = 1.0  # a closing connection gets this long to take its last messages
FAILURES_BEFORE_EXIT = 20  # consecutive failed turns of the loop: the thread ends (and is restarted)


class SocketInUse(OSError):
    """Another engine already listens on the socket path."""


def default_trust(uid: int, pid: int) -> bool:
    """A peer may take a reserved place when it runs as the engine's own user or as root."""
    return uid in (os.geteuid(), 0)


def _peer_credentials(sock: socket.socket) -> tuple[int, int] | None:
    """``(pid, uid)`` of the process at the other end (Linux), or None."""
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, uid, _gid = struct.unpack("3i", creds)
    except (OSError, AttributeError, struct.error):
        return None
    return pid, uid


class _Client:
    def __init__(self, sock: socket.socket, num: int, limit_msgs: int, limit_bytes: int, now: float) -> None:
        self.sock = sock
        self.num = num
        self.name = f"api#{num}"
        creds = _peer_credentials(sock)
        self.pid: int | None = creds[0] if creds else None
        self.uid: int | None = creds[1] if creds else None
        self.peer = f"(pid {self.pid}, uid {self.uid})" if creds else ""
        self.trusted = False
        self.greeted = False
        self.role: str | None = None
        self.slot: str | None = None  # "normal" or "reserved" once greeted
        self.connected_at = now
        self.last_request = now
        self.eof = False  # the peer will send nothing more (it may still read)
        self.inbuf = bytearray()
        self.out: collections.deque[tuple[bool, bytes]] = collections.deque()  # (is_stream, data)
        self.out_bytes = 0
        self.partial = b""  # unsent tail of the message being written
        self.streams: set[str] = set()
        self.state_period_s = 0.25
        self.last_state_sent = -1e9
        self.dropped = 0
        self.dropped_reported = 0
        self.last_progress = now
        self.pending: dict[Any, float] = {}  # request id -> deadline
        self.limit_msgs = limit_msgs
        self.limit_bytes = limit_bytes
        self.closing = False

    def label(self) -> str:
        return f"{self.name}{self.peer}"

    def has_data(self) -> bool:
        return bool(self.out or self.partial or self.dropped > self.dropped_reported)


class ApiServer:
    """Serve the API on ``path``; ``handler(request, respond)`` is the engine's entry point.

    ``handler`` runs in the server thread and must return quickly (the engine queues the
    request and calls ``respond(reply_dict)`` later, from any thread). ``heartbeat`` is
    called at every turn of the server's loop (at least ten times a second) for the
    engine's thread supervision; ``latest`` seeds the sticky stream messages (a restarted
    server keeps what its predecessor last published).
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
        max_clients: int = MAX_CLIENTS,
        reserved: Mapping[str, int] | None = None,
        max_waiting: int = MAX_WAITING,
        max_in_flight: int = MAX_IN_FLIGHT,
        greet_timeout_s: float = GREET_TIMEOUT_S,
        idle_timeout_s: float = IDLE_TIMEOUT_S,
        trust: Callable[[int, int], bool] = default_trust,
        on_client: Callable[[str, str], None] | None = None,
        slow_commands: Mapping[str, float] | None = None,
        heartbeat: Callable[[], None] | None = None,
        latest: Mapping[str, bytes] | None = None,
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
        self._reserved = dict(RESERVED if reserved is None else reserved)
        self._max_waiting = max_waiting
        self._max_in_flight = max_in_flight
        self._greet_s = greet_timeout_s
        self._idle_s = idle_timeout_s
        self._trust = trust
        self._on_client = on_client
        self._slow = dict(slow_commands or {})  # command -> its own reply timeout (s)
        self._heartbeat = heartbeat
        self._lock = threading.Lock()
        self._lock_stuck = False
        self._clients: dict[int, _Client] = {}
        self._streams_union: frozenset[str] = frozenset()
        self._next = 1
        self._latest: dict[str, bytes] = dict(latest or {})  # last message per "sticky" stream (state, alarms)
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._wake_pending = False
        self._listener: socket.socket | None = None
        self._accept_paused_until: float | None = None
        self._quiet_closed = 0  # connections closed without a greeting since the last summary
        self._quiet_logged_at = 0.0
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.counters: collections.Counter[str] = collections.Counter()

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
        sock.listen(LISTEN_BACKLOG)
        return sock

    def close(self, join_timeout_s: float = 2.0) -> None:
        """Stop serving: every client is disconnected and the socket file removed.

        Also for a server whose thread is stuck (the supervision replaces it): waits at
        most ``join_timeout_s`` for the thread and for the lock it may hold."""
        self._stop.set()
        self._wake()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=join_timeout_s)
        locked = self._lock.acquire(timeout=join_timeout_s)
        try:
            clients = list(self._clients.values())
            self._clients.clear()
            self._streams_union = frozenset()
        finally:
            if locked:
                self._lock.release()
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
        except (OSError, ValueError, KeyError):
            pass

    @property
    def alive(self) -> bool:
        """The server thread runs (it was started and has not ended)."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def client_count(self) -> int:
        return len(self._clients)

    def subscribed_streams(self) -> set[str]:
        """Every stream some client subscribes to (the engine skips building the others).
        Never waits: the server thread keeps the answer up to date."""
        return set(self._streams_union)

    def client_names(self) -> list[str]:
        return [c.label() for c in list(self._clients.values())]

    def latest(self) -> dict[str, bytes]:
        """The sticky stream messages (for a server that takes over)."""
        return dict(self._latest)

    # ------------------------------------------------------------------ publishing (any thread)

    def _acquire(self) -> bool:
        """The lock, for a thread other than the server's: waits at most ``LOCK_WAIT_S``,
        and only ``LOCK_RETRY_S`` while the lock is known to be stuck (the thread hangs)."""
        if self._lock_stuck:  # a short try only: the server thread may just be turning
            if not self._lock.acquire(timeout=LOCK_RETRY_S):
                return False
            self._lock_stuck = False
            return True
        if self._lock.acquire(timeout=LOCK_WAIT_S):
            return True
        self._lock_stuck = True
        log.error("API server lock held for more than %.2f s: messages to clients are dropped until it is free",
                  LOCK_WAIT_S)
        return False

    def publish(self, stream: str, message: Mapping[str, Any], sticky: bool = False) -> None:
        """Queue a stream message for every subscriber of ``stream``; never blocks.

        ``sticky`` keeps it as the stream's latest value, sent at once to new subscribers.
        """
        data = p.encode(message)
        if sticky:
            self._latest[stream] = data
        if stream not in self._streams_union:
            return
        now = time.monotonic()
        if not self._acquire():
            self.counters["publish_skipped"] += 1
            return
        try:
            for c in self._clients.values():
                if stream not in c.streams or c.closing:
                    continue
                if stream == "state":
                    if now - c.last_state_sent < c.state_period_s * 0.9:
                        continue
                    c.last_state_sent = now
                self._enqueue(c, data, is_stream=True)
        finally:
            self._lock.release()
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
        if not self._acquire():
            self.counters["replies_skipped"] += 1
            return
        try:
            if c.num not in self._clients or c.closing:
                return
            rid = reply.get("id")
            if rid not in c.pending:
                return  # already answered with a timeout
            del c.pending[rid]
            self._enqueue(c, data, is_stream=False)
        finally:
            self._lock.release()
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
        failures = 0
        while not self._stop.is_set():
            if self._heartbeat is not None:
                self._heartbeat()
            try:
                events = self._sel.select(timeout=0.1)
            except (OSError, ValueError) as exc:
                if not self._stop.is_set():
                    log.critical("API socket selector failed (%s): the API thread ends", exc)
                break
            try:
                for key, mask in events:
                    self._on_ready(key, mask)
                self._housekeeping()
            except Exception:  # noqa: BLE001 - the thread's last barrier: log, count, carry on
                failures += 1
                self.counters["thread_errors"] += 1
                log.exception("API server step failed (%d in a row)", failures)
                if failures >= FAILURES_BEFORE_EXIT:
                    log.critical("API server failed %d times in a row: the API thread ends", failures)
                    break
            else:
                failures = 0

    def _on_ready(self, key: selectors.SelectorKey, mask: int) -> None:
        if key.data == "listen":
            self._accept()
            return
        if key.data == "wake":
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
            return
        c: _Client = key.data
        try:
            if mask & selectors.EVENT_READ:
                self._read(c)
            if mask & selectors.EVENT_WRITE and c.num in self._clients:
                self._write(c)
        except Exception:  # noqa: BLE001 - a bug met while serving one client costs that client only
            self.counters["client_errors"] += 1
            log.exception("API: internal error while serving %s; it is disconnected", c.label())
            self._drop(c, "internal error while serving it")

    # -- connecting and greeting

    def _accept(self) -> None:
        if self._listener is None:
            return
        for _ in range(ACCEPTS_PER_ROUND):
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("API accept failed: %s", exc)
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self._pause_accepting()
                return
            try:
                self._admit(sock)
            except Exception:  # noqa: BLE001 - a connection that cannot be set up is closed, nothing more
                self.counters["client_errors"] += 1
                log.exception("API: a new connection could not be set up; it is closed")
                _close_quietly(sock)

    def _pause_accepting(self) -> None:
        """Out of file descriptors: stop listening for half a second instead of spinning."""
        if self._listener is None:
            return
        try:
            self._sel.unregister(self._listener)
        except (KeyError, ValueError, OSError):
            return
        self._accept_paused_until = time.monotonic() + 0.5

    def _admit(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        now = time.monotonic()
        c = _Client(sock, self._next, self._limit_msgs, self._limit_bytes, now)
        self._next += 1
        c.trusted = c.uid is not None and c.pid is not None and bool(self._trust(c.uid, c.pid))
        # the waiting room: too many connections that have not greeted yet, of the same
        # kind (trusted or not): the oldest of them goes
        waiting = [w for w in self._clients.values() if not w.greeted and not w.closing and w.trusted == c.trusted]
        if len(waiting) >= self._max_waiting:
            oldest = min(waiting, key=lambda w: w.num)
            self.counters["evicted_waiting"] += 1
            self._goodbye_now(oldest, "crowded", "too many connections are waiting to say hello; the oldest is closed")
        with self._lock:
            self._clients[c.num] = c
        self.counters["connections"] += 1
        self._sel.register(sock, selectors.EVENT_READ, c)
        hello = dict(self._hello())
        with self._lock:
            self._enqueue(c, p.encode(hello), is_stream=False)

    def _greet(self, c: _Client, req_id: Any, args: Mapping[str, Any]) -> None:
        name = f"{args['client']}#{c.num}"
        role = args.get("role")
        if c.greeted:
            if role is not None and role != c.role:
                self._send(c, p.reply_error(req_id, p.ApiError(
                    p.INVALID_ARGUMENT, f"hello: this connection's role is {c.role or 'none'}; a role cannot change "
                                        "on a connection (connect again)", argument="role")))
                return
            c.name = name
            self._send(c, p.reply_ok(req_id, {"client": c.name, "role": c.role, "slot": c.slot}))
            return
        wanted = role if (role in self._reserved and c.trusted) else None
        slot = self._place(c, wanted)
        if slot is None:
            self.counters["refused_full"] += 1
            total = self._max_clients
            message = (f"the engine serves at most {total} clients at once and every place is taken; "
                       "close another client and try again")
            self._send(c, p.reply_error(req_id, p.ApiError(p.BAD_STATE, f"hello: {message}")))
            self._goodbye(c, "full", message)
            return
        c.greeted, c.role, c.slot, c.name = True, role, slot, name
        c.last_request = time.monotonic()
        reply: dict[str, Any] = {"client": c.name, "role": role, "slot": slot}
        if role is not None and wanted is None:
            reply["note"] = (f"role {role}: reserved places are only for the appliance's own user or root; "
                             "an ordinary place was given")
        self._send(c, p.reply_ok(req_id, reply))
        self._client_event(f"connected ({role or 'no role'}, {slot} place)", c)

    def _place(self, c: _Client, role: str | None) -> str | None:
        """The place a greeting connection gets: ``reserved``, ``normal``, or None (full)."""
        others = [g for g in self._clients.values() if g.greeted and not g.closing and g is not c]
        in_role = sum(1 for g in others if g.slot == "reserved" and g.role == role)
        if role is not None and in_role < self._reserved[role]:
            return "reserved"
        if sum(1 for g in others if g.slot == "normal") < self._max_clients:
            return "normal"
        if role is not None:  # a newer connection of a reserved role replaces the oldest
            same = sorted((g for g in others if g.role == role and g.trusted), key=lambda g: g.num)
            if same:
                victim = same[0]
                self.counters["replaced"] += 1
                self._goodbye_now(victim, "replaced", f"replaced by a newer {role} connection ({c.name})")
                return victim.slot
        return None

    def _goodbye(self, c: _Client, reason: str, message: str) -> None:
        """Tell the client why it is disconnected, then close it once that is written."""
        with self._lock:
            self._enqueue(c, p.encode({"type": "goodbye", "reason": reason, "message": message}), is_stream=False)
            c.closing = True
        self._wake()
        log.info("API client %s: disconnecting (%s)", c.label(), message)

    def _goodbye_now(self, c: _Client, reason: str, message: str) -> None:
        """Tell the client why (if its socket takes it at once) and close it now."""
        try:
            c.sock.send(p.encode({"type": "goodbye", "reason": reason, "message": message}))
        except OSError:
            pass
        self._drop(c, message)

    # -- reading

    def _read(self, c: _Client) -> None:
        if c.num not in self._clients:
            return
        try:
            data = c.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._drop(c, f"connection error ({exc.strerror or exc})")
            return
        if not data:
            self._half_closed(c)
            return
        if c.closing:
            return  # what a closing client still sends is read and thrown away
        c.inbuf += data
        while not c.closing:
            nl = c.inbuf.find(b"\n")
            if nl > p.MAX_LINE_BYTES or (nl < 0 and len(c.inbuf) > p.MAX_LINE_BYTES):
                self._line_too_long(c)
                return
            if nl < 0:
                return
            line = bytes(c.inbuf[:nl]).strip()
            del c.inbuf[: nl + 1]
            if line:
                self._request(c, line)

    def _line_too_long(self, c: _Client) -> None:
        self.counters["line_too_long"] += 1
        c.inbuf = bytearray()
        self._send(c, p.reply_error(None, p.ApiError(
            p.BAD_REQUEST, f"request line longer than {p.MAX_LINE_BYTES} bytes; the connection is closed")))
        with self._lock:
            c.closing = True

    def _half_closed(self, c: _Client) -> None:
        """The peer sent everything it will (shutdown or exit): answer what it asked, then close."""
        c.eof = True
        rest = bytes(c.inbuf).strip()
        c.inbuf = bytearray()
        if rest and not c.closing:
            if len(rest) > p.MAX_LINE_BYTES:
                self._line_too_long(c)
            else:
                self._request(c, rest)  # a last line without its newline still counts
        if not c.pending and not c.has_data():
            self._drop(c, "disconnected")

    def _request(self, c: _Client, line: bytes) -> None:
        self.counters["requests"] += 1
        c.last_request = time.monotonic()
        req_id: Any = None
        try:
            obj = p.decode_line(line)
            req_id = p.request_id(obj)
            req_id, cmd, args = p.parse_request(obj)
        except p.ApiError as err:
            self.counters["rejected"] += 1
            self._send(c, p.reply_error(req_id, err))
            return
        name = cmd.name
        if name == "hello":
            self._greet(c, req_id, args)
            return
        if name == "ping":
            self._send(c, p.reply_ok(req_id, {"pong": True}))
            return
        if not c.greeted:
            self.counters["rejected"] += 1
            self._send(c, p.reply_error(req_id, p.ApiError(p.BAD_REQUEST, (
                f"{name}: say hello first, e.g. {{\"id\": 1, \"cmd\": \"hello\", \"client\": \"my-tool\"}} "
                f"(within {self._greet_s:g} s of connecting)"))))
            return
        if name in ("subscribe", "unsubscribe"):
            self._subscribe(c, req_id, args if name == "subscribe" else None)
            return
        if len(c.pending) >= self._max_in_flight:
            self.counters["rejected"] += 1
            self._send(c, p.reply_error(req_id, p.ApiError(p.BAD_REQUEST, (
                f"{name}: {len(c.pending)} requests of this connection already wait for an answer (at most "
                f"{self._max_in_flight}); wait for their replies"))))
            return
        if req_id in c.pending:
            self.counters["rejected"] += 1
            self._send(c, p.reply_error(req_id, p.ApiError(p.BAD_REQUEST, (
                f"{name}: id {req_id!r} already waits for its answer; give each request its own id"))))
            return
        deadline = time.monotonic() + self._slow.get(name, self._request_timeout_s)
        with self._lock:
            c.pending[req_id] = deadline
        request = p.Request(req_id, name, args, client=c.name, deadline_s=deadline)
        try:
            self._handler(request, functools.partial(self._respond, c))
        except Exception as exc:  # noqa: BLE001 - the handler's failure is reported to the client
            log.exception("API handler failed")
            self._respond(c, p.reply_error(req_id, p.ApiError(p.INTERNAL, f"engine failed to take the request: {exc}")))

    def _subscribe(self, c: _Client, req_id: Any, args: Mapping[str, Any] | None) -> None:
        if args is None:
            with self._lock:
                c.streams = set()
            self._update_streams()
            self._send(c, p.reply_ok(req_id, {}))
            return
        streams = set(args.get("streams") or p.STREAMS)
        period = 1.0 / float(args.get("state_hz", 4.0))
        with self._lock:
            c.streams = streams
            c.state_period_s = period
            c.last_state_sent = -1e9
        self._update_streams()
        self._send(c, p.reply_ok(req_id, {"streams": sorted(streams), "state_hz": round(1.0 / period, 3)}))
        with self._lock:  # the latest state and alarm messages at once
            for stream in ("state", "alarms"):
                if stream in streams and stream in self._latest:
                    self._enqueue(c, self._latest[stream], is_stream=True)
                    if stream == "state":
                        c.last_state_sent = time.monotonic()
        self._wake()

    def _update_streams(self) -> None:
        union: set[str] = set()
        for c in list(self._clients.values()):
            union |= c.streams
        self._streams_union = frozenset(union)

    # -- writing

    def _write(self, c: _Client) -> None:
        while True:
            with self._lock:
                if not c.partial:
                    if c.dropped > c.dropped_reported:
                        c.partial = p.encode({"type": "dropped", "count": c.dropped - c.dropped_reported,
                                              "total": c.dropped})
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

    # -- time passes

    def _housekeeping(self) -> None:
        now = time.monotonic()
        timed_out: list[tuple[_Client, Any]] = []
        to_drop: list[tuple[_Client, str]] = []
        to_send_off: list[tuple[_Client, str, str]] = []
        with self._lock:
            clients = list(self._clients.values())
            for c in clients:
                for rid, deadline in list(c.pending.items()):
                    if now > deadline:
                        timed_out.append((c, rid))
                verdict = self._verdict(c, now)
                if verdict is not None:
                    if verdict[0] == "drop":
                        to_drop.append((c, verdict[2]))
                    else:
                        to_send_off.append((c, verdict[1], verdict[2]))
                if not c.has_data():
                    c.last_progress = now
        for c, rid in timed_out:
            with self._lock:
                c.pending.pop(rid, None)
                late = p.reply_error(rid, p.ApiError(p.TIMEOUT, "the engine did not answer in time"))
                self._enqueue(c, p.encode(late), is_stream=False)
        for c, why in to_drop:
            self._drop(c, why)
        for c, reason, message in to_send_off:
            if reason == "no_hello":
                self.counters["evicted_no_hello"] += 1
                self._goodbye_now(c, reason, message)
            else:
                self.counters["evicted_idle"] += 1
                self._goodbye(c, reason, message)
        self._update_interest()
        if self._quiet_closed and now - self._quiet_logged_at >= 5.0:
            log.warning("API: %d connections closed without a greeting since the last report", self._quiet_closed)
            self._quiet_closed, self._quiet_logged_at = 0, now
        if self._accept_paused_until is not None and now >= self._accept_paused_until and self._listener is not None:
            self._accept_paused_until = None
            try:
                self._sel.register(self._listener, selectors.EVENT_READ, "listen")
            except (KeyError, ValueError, OSError):
                pass

    def _verdict(self, c: _Client, now: float) -> tuple[str, str, str] | None:
        """What becomes of a client now: None (nothing), ("drop", _, why) or ("bye", reason, message)."""
        has_data = c.has_data()
        if c.closing:
            if not has_data:
                return ("drop", "", "closed")
            if now - c.last_progress > CLOSING_GRACE_S:
                return ("drop", "", "not reading (queue full of replies)")
            return None
        if has_data and now - c.last_progress > self._stall_s:
            return ("drop", "", f"not reading for {self._stall_s:g} s")
        if c.eof:
            return None if (c.pending or has_data) else ("drop", "", "disconnected")
        if not c.greeted and now - c.connected_at > self._greet_s:
            return ("bye", "no_hello", f"no hello within {self._greet_s:g} s of connecting")
        if c.greeted and not c.streams and not c.pending and not has_data and now - c.last_request > self._idle_s:
            return ("bye", "idle", f"idle for {self._idle_s:g} s without a subscription; connect again when needed")
        return None

    def _update_interest(self) -> None:
        for c in list(self._clients.values()):
            want = 0 if c.eof else selectors.EVENT_READ
            if c.has_data():
                want |= selectors.EVENT_WRITE
            try:
                key = self._sel.get_key(c.sock)
                if want == 0:
                    self._sel.unregister(c.sock)
                elif key.events != want:
                    self._sel.modify(c.sock, want, c)
            except KeyError:
                if want:
                    try:
                        self._sel.register(c.sock, want, c)
                    except (KeyError, ValueError, OSError):
                        pass
            except (ValueError, OSError):
                pass

    def _drop(self, c: _Client, why: str) -> None:
        with self._lock:
            if self._clients.pop(c.num, None) is None:
                return
        if c.streams:
            self._update_streams()
        try:
            self._sel.unregister(c.sock)
        except (KeyError, ValueError, OSError):
            pass
        _close_quietly(c.sock)
        self.counters["disconnects"] += 1
        self._client_event(f"disconnected ({why})", c)

    def _client_event(self, what: str, c: _Client) -> None:
        """Tell the engine about a greeted client (connected, disconnected). Connections that
        never greeted are only counted and summarised here: a flood of them must not
        flood the engine's queue."""
        if not c.greeted:
            self._quiet_closed += 1
            return
        if self._on_client is None:
            return
        try:
            self._on_client(what, c.label())
        except Exception:  # noqa: BLE001 - the engine's logging callback must not cost a client
            log.exception("API on_client callback failed")


def _close_quietly(sock: socket.socket) -> None:
    try:
        sock.close()
    except OSError:
        pass
