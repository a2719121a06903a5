"""The station's web server: login, the browser app, its live stream and its few requests.

Owns: ``Station`` (the users' sessions, one ``ReaderLink`` per logged-in reader, the
Server-Sent Events fan-out, the audit log, housekeeping) and ``StationServer`` (a threaded
``http.server``, HTTPS when the configuration has a certificate) and ``serve`` (until SIGINT/SIGTERM).
May import: the standard library, ``app.station`` (auth, config, link, model).

Routes (every one but the login page and the static files needs a session; every POST
needs the session's CSRF token in ``X-CSRF-Token``; an OR not assigned to the reader is
``404`` as if it did not exist, and audit-logged):

| route | what |
|---|---|
| ``GET /login``, ``POST /login`` | the login form; success sets the session cookie |
| ``POST /logout`` | ends the session |
| ``GET /`` | the app (``static/index.html``) |
| ``GET /static/NAME`` | ``app.js``, ``style.css`` |
| ``GET /api/me`` | the reader, the assigned ORs, the CSRF token |
| ``GET /api/stream`` | Server-Sent Events: a ``snapshot`` of every tile, then deltas |
| ``GET /api/or/ID/case`` | the case so far (focus view) |
| ``GET /api/or/ID/stimulus/N`` | one stimulus's epoch over its baseline's, asked from the appliance |
| ``POST /api/or/ID/message`` | ``{"text", "kind"}``: a message or interpretation to the OR |
"""

from __future__ import annotations

import html
import json
import logging
import queue
import re
import signal
import ssl
import sys
import threading
import time
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from app.remote import protocol as rp
from app.station.auth import AuditLog, Session, Sessions, check_password
from app.station.config import StationConfig
from app.station.link import BrokerSettings, ReaderLink

log = logging.getLogger("lnm.station")

STATIC = Path(__file__).resolve().parent / "static"
STATIC_FILES = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}
COOKIE = "lnm_station"
SSE_QUEUE = 5000
SSE_HEARTBEAT_S = 2.0
MAX_STREAMS_PER_USER = 4  # a reader's open tabs; a fifth closes the oldest (a reloaded page, a second screen)
MAX_STREAMS = 64  # live streams of the whole station; beyond it a new one is refused (503)
SOCKET_TIMEOUT_S = 30.0  # a browser that stops reading is dropped after this long (never a thread held for ever)
MAX_BODY = 16 * 1024
_OR_ROUTE = re.compile(r"/api/or/(" + rp.APPLIANCE_ID + r")/(case|message|stimulus/([0-9]{1,12}))")
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                               "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class SseClient:
    """One browser's live stream: a bounded queue; a client that falls behind is dropped
    (its browser reconnects and gets a fresh snapshot)."""

    def __init__(self, user: str) -> None:
        self.user = user
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=SSE_QUEUE)
        self.overflow = False
        self.superseded = False  # closed to make room for the same reader's newer stream
        self.opened = time.monotonic()

    def supersede(self) -> None:
        """Close this stream (its handler notices within half a second)."""
        self.superseded = True

    def push(self, item: Any) -> None:
        try:
            self.queue.put_nowait(item)
        except queue.Full:
            self.overflow = True


class Station:
    """Everything the request handlers share (see the module docstring)."""

    def __init__(self, cfg: StationConfig, *, connect_timeout_s: float = 5.0,
                 max_streams: int = MAX_STREAMS, max_streams_per_user: int = MAX_STREAMS_PER_USER) -> None:
        self.cfg = cfg
        self.max_streams = max_streams
        self.max_streams_per_user = max_streams_per_user
        self.sessions = Sessions(cfg.session_hours * 3600.0)
        self.audit = AuditLog(cfg.audit_log)
        self.broker = BrokerSettings(cfg.broker, cfg.tls_ca, cfg.topic_prefix)
        self.connect_timeout_s = connect_timeout_s
        self._lock = threading.Lock()
        self.links: dict[str, ReaderLink] = {}
        self.clients: dict[str, set[SseClient]] = {}
        self._stop = threading.Event()
        self._housekeeper = threading.Thread(target=self._housekeeping, name="station-housekeeping", daemon=True)
        self._housekeeper.start()

    # ---------------------------------------------------------------- sessions

    def login(self, username: str, password: str, address: str) -> tuple[Session | None, str]:
        """A session, or ``None`` and what to tell the person."""
        if self.sessions.blocked(f"user:{username}", f"addr:{address}"):
            self.audit.write(username, address, "login_blocked")
            return None, "Too many failed attempts: wait a few minutes and try again."
        user = self.cfg.users.get(username)
        if not check_password(user.password_hash if user else None, password) or user is None:
            self.sessions.failed(f"user:{username}", f"addr:{address}")
            self.audit.write(username if user else None, address, "login_failed",
                             reason="wrong password" if user else "unknown user", tried=username[:64])
            return None, "Wrong user name or password."
        link = self._link(user.username, password, user.name, list(user.ors))
        if link.refused is not None:
            self.audit.write(username, address, "login_failed", reason=f"broker refused: {link.refused}")
            with self._lock:
                self.links.pop(username, None)
            link.close()
            return None, ("The broker refused this user's credentials: ask the administrator to set the "
                          "broker password too (lnm station adduser --broker-passwd).")
        session = self.sessions.create(username, address)
        self.audit.write(username, address, "login", ors=list(user.ors))
        return session, ""

    def _link(self, username: str, password: str, name: str, ors: list[str]) -> ReaderLink:
        with self._lock:
            link = self.links.get(username)
            if link is not None:
                return link
            link = ReaderLink(username, password, ors, self.broker, on_deltas=self.fan_out, display_name=name)
            self.links[username] = link
        link.start()
        link.wait_connected(self.connect_timeout_s)
        return link

    def logout(self, token: str, address: str) -> None:
        s = self.sessions.end(token)
        if s is not None:
            self.audit.write(s.user, address, "logout")
            self._drop_links()

    def _drop_links(self) -> None:
        active = self.sessions.users()
        with self._lock:
            gone = [u for u in self.links if u not in active]
            links = [self.links.pop(u) for u in gone]
        for link in links:
            link.close()

    def _housekeeping(self) -> None:
        while not self._stop.wait(10.0):
            for s in self.sessions.expire():
                self.audit.write(s.user, s.address, "session_expired")
            self._drop_links()

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            links = list(self.links.values())
            self.links.clear()
        for link in links:
            link.close()
        self.audit.close()

    # ---------------------------------------------------------------- live stream

    def fan_out(self, user: str, deltas: list[dict[str, Any]]) -> None:
        """From a reader link's network thread: never blocks."""
        with self._lock:
            clients = list(self.clients.get(user, ()))
        for c in clients:
            c.push(deltas)

    def subscribe(self, user: str) -> SseClient | None:
        """A new live stream for ``user``; None when the station has ``max_streams`` open.
        Beyond ``max_streams_per_user`` the user's oldest stream is closed."""
        c = SseClient(user)
        with self._lock:
            mine = self.clients.setdefault(user, set())
            while mine and len(mine) >= self.max_streams_per_user:
                oldest = min(mine, key=lambda x: x.opened)
                mine.discard(oldest)
                oldest.supersede()
            if sum(len(v) for v in self.clients.values()) >= self.max_streams:
                return None
            mine.add(c)
        return c

    def streams(self) -> int:
        """How many live streams are open."""
        with self._lock:
            return sum(len(v) for v in self.clients.values())

    def unsubscribe(self, c: SseClient) -> None:
        with self._lock:
            self.clients.get(c.user, set()).discard(c)

    def link(self, user: str) -> ReaderLink | None:
        with self._lock:
            return self.links.get(user)


def _json(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False, default=str).encode("utf-8")


class Handler(BaseHTTPRequestHandler):
    """One request (see the route table in the module docstring)."""

    server: StationServer
    protocol_version = "HTTP/1.1"
    timeout = SOCKET_TIMEOUT_S

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        log.debug("%s %s", self.address_string(), format % args)

    @property
    def station(self) -> Station:
        return self.server.station

    @property
    def address(self) -> str:
        return str(self.client_address[0])

    # ---------------------------------------------------------------- plumbing

    def _send(self, status: int, body: bytes, ctype: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in {**SECURITY_HEADERS, **(headers or {})}.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, status: int, obj: Any) -> None:
        self._send(status, _json(obj), "application/json")

    def _error(self, status: int, message: str) -> None:
        self._send_json(status, {"error": message})

    def _session(self) -> Session | None:
        raw = self.headers.get("Cookie")
        if not raw:
            return None
        c = SimpleCookie()
        try:
            c.load(raw)
        except Exception:  # noqa: BLE001 - a malformed cookie header is just no session
            return None
        morsel = c.get(COOKIE)
        return self.station.sessions.get(morsel.value if morsel else None)

    def _cookie(self, token: str, max_age: int) -> str:
        secure = "; Secure" if self.station.cfg.https else ""
        return f"{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"

    def _body(self) -> bytes | None:
        try:
            n = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self.close_connection = True  # the body's end is unknown: this connection carries nothing more
            return None
        if n < 0 or n > MAX_BODY:
            self.close_connection = True  # the body is never read
            return None
        return self.rfile.read(n)

    # ---------------------------------------------------------------- GET

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        path = urlsplit(self.path).path
        if path == "/login":
            self._login_page("")
            return
        if path.startswith("/static/"):
            name = path[len("/static/"):]
            if name not in STATIC_FILES:
                self._error(404, "not found")
                return
            self._send(200, (STATIC / name).read_bytes(), STATIC_FILES[name], {"Cache-Control": "no-cache"})
            return
        session = self._session()
        if session is None:
            if path == "/":
                self._send(303, b"", "text/plain", {"Location": "/login"})
            else:
                self._error(401, "log in first")
            return
        if path == "/":
            self._send(200, (STATIC / "index.html").read_bytes(), "text/html; charset=utf-8")
        elif path == "/api/me":
            self._me(session)
        elif path == "/api/stream":
            self._stream(session)
        else:
            self._or_route(session, path, "GET")

    def _me(self, session: Session) -> None:
        user = self.station.cfg.users.get(session.user)
        link = self.station.link(session.user)
        self._send_json(200, {"user": session.user, "name": user.name if user else session.user,
                              "ors": list(user.ors) if user else [], "csrf": session.csrf,
                              "broker": link.broker_state() if link else None})

    def _login_page(self, message: str, status: int = 200) -> None:
        page = (STATIC / "login.html").read_text(encoding="utf-8")
        page = page.replace("{{message}}", html.escape(message))
        self._send(status, page.encode("utf-8"), "text/html; charset=utf-8")

    def _stream(self, session: Session) -> None:
        link = self.station.link(session.user)
        if link is None:
            self._error(503, "not connected to the broker: log in again")
            return
        client = self.station.subscribe(session.user)
        if client is None:
            self.station.audit.write(session.user, self.address, "denied", None, path="/api/stream",
                                     reason="too many live streams")
            self._error(503, "too many live views are open on this station: close some and reload")
            return
        self.station.audit.write(session.user, self.address, "view", None, what="tiles",
                                 ors=list(link.models))
        try:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            for k, v in SECURITY_HEADERS.items():
                self.send_header(k, v)
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            snap = {"tiles": link.tiles(), "broker": link.broker_state(), "now": time.time()}
            self.wfile.write(b"event: snapshot\ndata: " + _json(snap) + b"\n\n")
            self.wfile.flush()
            last_beat = time.monotonic()
            while session.token and self.station.sessions.get(session.token) is not None:
                try:
                    deltas = client.queue.get(timeout=0.5)
                except queue.Empty:
                    deltas = None
                if client.overflow or client.superseded:
                    break
                if deltas is not None:
                    batch = list(deltas)
                    while len(batch) < 500:  # whatever else is waiting goes in the same write
                        try:
                            batch.extend(client.queue.get_nowait())
                        except queue.Empty:
                            break
                    self.wfile.write(b"data: " + _json(batch) + b"\n\n")
                    self.wfile.flush()
                if time.monotonic() - last_beat >= SSE_HEARTBEAT_S:
                    last_beat = time.monotonic()
                    beat = {"now": time.time(), "broker": link.broker_state()}
                    self.wfile.write(b"event: beat\ndata: " + _json(beat) + b"\n\n")
                    self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
            pass
        finally:
            self.station.unsubscribe(client)

    def _or_route(self, session: Session, path: str, method: str) -> None:
        m = _OR_ROUTE.fullmatch(path)
        if m is None:
            self._error(404, "not found")
            return
        appliance, what = m.group(1), m.group(2)
        user = self.station.cfg.users.get(session.user)
        link = self.station.link(session.user)
        if user is None or appliance not in user.ors or link is None or appliance not in link.models:
            self.station.audit.write(session.user, self.address, "denied", appliance, path=path)
            self._error(404, "no such OR")
            return
        if what == "case" and method == "GET":
            self.station.audit.write(session.user, self.address, "view", appliance, what="case")
            self._send_json(200, link.case_view(appliance))
        elif what.startswith("stimulus/") and method == "GET":
            index = int(m.group(3))
            self.station.audit.write(session.user, self.address, "view", appliance, what="stimulus", index=index)
            answer = link.request_stimulus(appliance, index)
            if answer is None:
                self._error(504, "the OR did not answer in time")
            elif not answer.get("found"):
                self._error(404, f"stimulus {index} is not in the OR's record of this case")
            else:
                self._send_json(200, answer)
        elif what == "message" and method == "POST":
            self._message(session, link, appliance)
        else:
            self._error(405, "method not allowed")

    def _message(self, session: Session, link: ReaderLink, appliance: str) -> None:
        body = self._body()
        try:
            obj = json.loads(body or b"")
        except ValueError:
            obj = None
        if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
            self._error(400, "send {\"text\": ..., \"kind\": \"message\" | \"interpretation\"}")
            return
        text = obj["text"].strip()
        kind = obj.get("kind", "message")
        if not text or len(text) > rp.MAX_TEXT or kind not in ("message", "interpretation"):
            self._error(400, f"the message must be 1-{rp.MAX_TEXT} characters; kind message or interpretation")
            return
        ok, mid, problem = link.send_message(appliance, text, kind)
        self.station.audit.write(session.user, self.address, "message", appliance, id=mid, kind=kind, text=text,
                                 sent=ok, problem=problem)
        if ok:
            self._send_json(200, {"id": mid, "sent": True})
        else:
            self._error(503, problem)

    # ---------------------------------------------------------------- POST

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        path = urlsplit(self.path).path
        if path == "/login":
            self._login()
            return
        session = self._session()
        if session is None:
            self._error(401, "log in first")
            return
        if not self.station.sessions.csrf_ok(session, self.headers.get("X-CSRF-Token")):
            self.station.audit.write(session.user, self.address, "denied", None, path=path, reason="csrf")
            self._error(403, "missing or wrong CSRF token")
            return
        if path == "/logout":
            self.station.logout(session.token, self.address)
            self._send(200, b"{}", "application/json", {"Set-Cookie": self._cookie("", 0)})
        else:
            self._or_route(session, path, "POST")

    def _login(self) -> None:
        body = self._body()
        if body is None:
            self._login_page("The form was too large.", 400)
            return
        try:
            form = parse_qs(body.decode("utf-8", errors="replace"), max_num_fields=4)
        except ValueError:  # more fields than a login form has
            self._login_page("The form was not a login form.", 400)
            return
        username = (form.get("username") or [""])[0].strip().lower()
        password = (form.get("password") or [""])[0]
        session, message = self.station.login(username, password, self.address)
        if session is None:
            self._login_page(message, 401)
            return
        self._send(303, b"", "text/plain", {"Location": "/", "Set-Cookie": self._cookie(
            session.token, int(self.station.cfg.session_hours * 3600))})


class StationServer(ThreadingHTTPServer):
    """The threaded HTTP(S) server of one ``Station``."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, station: Station) -> None:
        cfg = station.cfg
        self.station = station
        super().__init__((cfg.listen_host, cfg.listen_port), Handler)
        if cfg.https:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(cfg.tls_cert, cfg.tls_key)
            self.socket = ctx.wrap_socket(self.socket, server_side=True)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        if isinstance(host, bytes):
            host = host.decode()
        return f"{'https' if self.station.cfg.https else 'http'}://{host}:{port}/"


def serve(cfg: StationConfig, ready: threading.Event | None = None) -> int:
    """Serve until SIGINT/SIGTERM."""
    station = Station(cfg)
    try:
        server = StationServer(station)
    except OSError as exc:
        station.close()
        print(f"lnm station: cannot listen on {cfg.listen_host}:{cfg.listen_port}: {exc.strerror}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def handler(*_: object) -> None:
        stop.set()
        threading.Thread(target=server.shutdown, daemon=True).start()

    old = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            old[sig] = signal.signal(sig, handler)
    print(f"LNM reading station: open {server.url} (broker {cfg.broker.url()}, {len(cfg.users)} user(s))",
          flush=True)
    if ready is not None:
        ready.set()
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        station.close()
        for sig, h in old.items():
            signal.signal(sig, h)
    return 0
