"""The API server against hostile clients, through the real Unix socket.

Whatever a client sends (deep nesting, huge numbers and ids, invalid UTF-8, NUL bytes,
binary, 10 MB without a newline, a flood of lines, a half-closed socket, never reading
its replies, never greeting, holding every place), it gets an error reply or loses its
own connection; the server thread lives on and a fresh client still gets ``state.get``,
and the touchscreen UI and the service console still get in.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.api import protocol as p
from app.api.client import EngineClient, EngineUnavailable
from app.api.server import ApiServer
from waiting import wait_until


class Echo:
    """A stand-in engine: answers state.get and refuses everything else at once."""

    def __init__(self):
        self.requests = []

    def __call__(self, req, respond):
        self.requests.append(req)
        if req.cmd == "state.get":
            respond(p.reply_ok(req.id, {"client": req.client}))
        else:
            respond(p.reply_error(req.id, p.ApiError(p.BAD_STATE, f"{req.cmd}: no case is open")))


def make_server(path, **kw):
    kw.setdefault("stall_timeout_s", 2.0)
    kw.setdefault("request_timeout_s", 1.0)
    srv = ApiServer(path, Echo(), lambda: p.hello("lnm test", simulated=True), **kw)
    srv.start()
    return srv


@pytest.fixture
def sock_path(tmp_path):
    return tmp_path / "run" / "engine.sock"


@pytest.fixture
def server(sock_path):
    srv = make_server(sock_path)
    yield srv
    srv.close()


class Raw:
    """A raw connection that speaks (or does not speak) the protocol by hand."""

    def __init__(self, path, greet: str | None = "raw", role: str | None = None, rcvbuf: int | None = None):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.connect(str(path))
        self.sock.settimeout(10.0)
        self.buf = b""
        self.hello = self.message()
        assert self.hello["type"] == "hello"
        self.greeting = None
        if greet is not None:
            args = {"client": greet, **({"role": role} if role else {})}
            self.send({"id": "greet", "cmd": "hello", **args})
            self.greeting = self.reply("greet")

    def send(self, obj) -> None:
        self.sock.sendall(json.dumps(obj).encode() + b"\n")

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def message(self):
        """The next line as JSON, or None at the end of the connection."""
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def reply(self, rid):
        while True:
            m = self.message()
            if m is None or (m.get("type") == "reply" and m.get("id") == rid):
                return m

    def closed(self) -> bool:
        """True once the engine has closed the connection (everything after is read and dropped)."""
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
        except ConnectionResetError:  # closed with our unread bytes still queued: a reset
            return True
        except TimeoutError:
            return False

    def close(self):
        self.sock.close()


def fresh_client_works(path) -> bool:
    with EngineClient(path, name="fresh", timeout_s=5.0) as c:
        return c.call("state.get")["client"].startswith("fresh#") and c.call("ping") == {"pong": True}


# ----------------------------------------------------------------------------- single hostile lines

HOSTILE = [
    (b"[" * 1000, p.BAD_REQUEST, "16 levels"),
    (b'{"a":' * 1000, p.BAD_REQUEST, "16 levels"),
    (b'{"id":' + b"9" * 5000 + b',"cmd":"ping"}', p.BAD_REQUEST, "5000 characters"),
    (b'{"id":1,"cmd":"stim.set","output":"probe","current_mA":' + b"9" * 400 + b"}", p.BAD_REQUEST, "400 characters"),
    (b'{"id":1,"cmd":"stim.set","output":"probe","current_mA":1e999}', p.INVALID_ARGUMENT, "not a number"),
    (b'{"id":1,"cmd":"stim.set","output":"probe","current_mA":NaN}', p.BAD_REQUEST, "NaN"),
    (b'{"id":1,"cmd":"stim.set","output":"probe","current_mA":-Infinity}', p.BAD_REQUEST, "Infinity"),
    (b'{"id":' + b"1" * 30 + b',"cmd":"ping"}', p.BAD_REQUEST, "id"),
    (b'{"id":"' + b"x" * 5000 + b'","cmd":"ping"}', p.BAD_REQUEST, "64 characters"),
    (b'{"id":1,"cmd":"' + b"x" * 50000 + b'"}', p.UNKNOWN_COMMAND, "unknown command"),
    (b'{"id":1,"cmd":"ping","\xff\xfe":1}', p.BAD_JSON, "not UTF-8"),
    (b'{"id":1,"cmd":"pi\x00ng"}', p.BAD_JSON, "not valid JSON"),
    (b"\x00\x01\x02\x03\x80\x81", p.BAD_JSON, ""),
    (b'{"id":1,"cmd":"settings.set","changes":' + b'{"a":' * 16 + b"1" + b"}" * 16 + b"}", p.BAD_REQUEST, "16 levels"),
    (b'{"id":1,"cmd":"note.add","text":"' + b"[" * 5000 + b'"}', p.INVALID_ARGUMENT, "5000 characters"),
]


@pytest.mark.parametrize("line, code, words", HOSTILE, ids=[f"line{i}" for i in range(len(HOSTILE))])
def test_a_hostile_line_gets_an_error_reply_and_the_server_lives_on(server, sock_path, line, code, words):
    c = Raw(sock_path)
    c.send_raw(line + b"\n")
    reply = c.message()
    assert reply["type"] == "reply" and reply["ok"] is False, reply
    assert reply["error"]["code"] == code and words in reply["error"]["message"], reply
    assert len(json.dumps(reply)) < 2000  # the nonsense is not echoed back whole
    c.send({"id": 2, "cmd": "ping"})  # the same connection still works
    assert c.reply(2)["result"] == {"pong": True}
    c.close()
    assert server.alive and fresh_client_works(sock_path)


def test_ten_megabytes_without_a_newline_cost_only_that_connection(server, sock_path):
    c = Raw(sock_path)
    sent = threading.Event()

    def flood():
        try:
            c.sock.sendall(b"x" * (10 * 1024 * 1024))
        except OSError:
            pass  # the engine closed the connection under us: expected
        sent.set()

    t = threading.Thread(target=flood, daemon=True)
    t.start()
    reply = c.message()
    assert reply["error"]["code"] == p.BAD_REQUEST and "longer than 65536 bytes" in reply["error"]["message"]
    assert sent.wait(20), "the sender stays blocked: the engine neither reads nor closes"
    assert c.closed()
    c.close()
    assert server.alive and fresh_client_works(sock_path)
    assert server.counters["line_too_long"] == 1


def test_a_flood_of_lines_from_a_client_that_never_reads_costs_only_that_client(server, sock_path):
    c = Raw(sock_path, rcvbuf=4096)
    c.sock.settimeout(0.5)
    line = b'{"id":1,"cmd":"ping"}\n' * 2000
    stop = threading.Event()

    def flood():
        while not stop.is_set():
            try:
                c.sock.sendall(line)
            except OSError:
                return

    t = threading.Thread(target=flood, daemon=True)
    t.start()
    try:
        assert wait_until(lambda: server.counters["disconnects"] >= 1, 20), server.counters
        assert server.alive and fresh_client_works(sock_path)
    finally:
        stop.set()
        c.close()
        t.join(10)


def test_requests_waiting_for_the_engine_are_capped_per_connection(sock_path):
    held = []
    srv = ApiServer(sock_path, lambda req, respond: held.append((req, respond)), lambda: p.hello("t"),
                    max_in_flight=4, request_timeout_s=30)
    srv.start()
    try:
        c = Raw(sock_path)
        for i in range(6):
            c.send({"id": i, "cmd": "note.add", "text": "x"})
        refused = [c.message() for _ in range(2)]
        assert len(held) == 4  # only four reached the engine
        for r in refused:
            assert r["error"]["code"] == p.BAD_REQUEST and "wait for their replies" in r["error"]["message"]
        held[0][1](p.reply_ok(0, {}))  # the engine answers one: room for one more
        assert c.reply(0)["ok"] is True
        c.send({"id": 9, "cmd": "note.add", "text": "x"})
        assert wait_until(lambda: len(held) == 5)
        c.close()
    finally:
        srv.close()


def test_same_id_twice_while_the_first_waits_is_refused(sock_path):
    held = []
    srv = ApiServer(sock_path, lambda req, respond: held.append(req), lambda: p.hello("t"), request_timeout_s=30)
    srv.start()
    try:
        c = Raw(sock_path)
        c.send({"id": 7, "cmd": "note.add", "text": "x"})
        c.send({"id": 7, "cmd": "note.add", "text": "y"})
        r = c.message()
        assert r["id"] == 7 and r["error"]["code"] == p.BAD_REQUEST and "its own id" in r["error"]["message"]
        assert [q.args["text"] for q in held] == ["x"]
        c.close()
    finally:
        srv.close()


def test_a_half_closed_client_gets_its_replies_then_the_connection_closes(server, sock_path):
    c = Raw(sock_path)
    c.send_raw(b'{"id":1,"cmd":"state.get"}\n{"id":2,"cmd":"ping"}')  # the last line has no newline
    c.sock.shutdown(socket.SHUT_WR)
    assert c.reply(1)["ok"] is True
    assert c.reply(2)["result"] == {"pong": True}
    assert c.message() is None  # then closed by the engine
    c.close()
    assert wait_until(lambda: server.client_count == 0)
    assert server.alive


def test_a_client_that_leaves_mid_request_costs_nothing(server, sock_path):
    for _ in range(20):
        s = socket.socket(socket.AF_UNIX)
        s.connect(str(sock_path))
        s.sendall(b'{"id":1,"cmd":"hello","client":"x"}\n{"id":2,"cmd":"state.g')
        s.close()
    assert wait_until(lambda: server.client_count == 0)
    assert server.alive and fresh_client_works(sock_path)


# ----------------------------------------------------------------------------- greeting, idle, places


def test_nothing_but_ping_before_hello_and_no_hello_means_goodbye(sock_path):
    srv = make_server(sock_path, greet_timeout_s=0.5)
    try:
        c = Raw(sock_path, greet=None)
        c.send({"id": 1, "cmd": "ping"})
        assert c.reply(1)["result"] == {"pong": True}
        c.send({"id": 2, "cmd": "state.get"})
        r = c.reply(2)
        assert r["error"]["code"] == p.BAD_REQUEST and "say hello first" in r["error"]["message"]
        assert srv._handler.requests == []  # nothing reached the engine
        bye = c.message()  # then silence: the engine gives up on it
        assert bye == {"type": "goodbye", "reason": "no_hello", "message": "no hello within 0.5 s of connecting"}
        assert c.message() is None
        c.close()
    finally:
        srv.close()


def test_idle_non_subscribers_are_evicted_subscribers_are_not(sock_path):
    srv = make_server(sock_path, idle_timeout_s=0.5)
    try:
        idle = EngineClient(sock_path, name="idle")
        idle.connect()
        sub = EngineClient(sock_path, name="sub")
        sub.connect()
        sub.subscribe(["events"])
        assert wait_until(lambda: not idle.connected, 10)
        assert "idle for 0.5 s without a subscription" in idle.last_error
        with pytest.raises(EngineUnavailable, match="idle"):
            idle.call("ping")
        assert sub.connected and sub.call("ping") == {"pong": True}
        assert srv.counters["evicted_idle"] == 1
        idle.close()
        sub.close()
    finally:
        srv.close()


def _fill(path, n, **kw):
    clients = []
    for i in range(n):
        c = EngineClient(path, name=f"hog{i}", **kw)
        c.connect()
        assert c.call("ping") == {"pong": True}
        clients.append(c)
    return clients


def test_when_every_ordinary_place_is_taken_the_ui_and_the_console_still_get_in(sock_path):
    from app.api.clients import run as client_command

    srv = make_server(sock_path, max_clients=4)
    hogs = _fill(sock_path, 4)
    try:
        # a fifth ordinary client is refused, in words
        with EngineClient(sock_path, name="extra") as extra:
            with pytest.raises(EngineUnavailable, match="every place is taken"):
                extra.call("state.get")
        # the touchscreen (its usual client, unchanged) and the service console are served
        from app.ui.link import EngineLink

        ui = EngineLink(sock_path)
        ui.start()
        got = []
        assert wait_until(lambda: (ui.pump() or True) and ui.health().ok, 10)
        ui.send("state.get", got.append)
        assert wait_until(lambda: (ui.pump() or True) and got, 10)
        assert got[0].ok and got[0].result["client"].startswith("ui#")
        assert ui.client.greeting == {"client": got[0].result["client"], "role": "ui", "slot": "reserved"}
        import argparse

        args = argparse.Namespace(command="status", socket=sock_path, json=True)
        assert client_command(args) == 0  # lnm status (its state printed as JSON)
        with EngineClient(sock_path, name="lnm-ack", role="console") as ack:
            assert ack.call("state.get")
            assert ack.greeting["slot"] == "reserved"
        ui.stop()
    finally:
        for c in hogs:
            c.close()
        srv.close()


def test_a_newer_ui_connection_replaces_the_oldest_when_all_are_taken(sock_path):
    srv = make_server(sock_path, max_clients=1, reserved={"ui": 1, "console": 1})
    hog = _fill(sock_path, 1)
    old = EngineClient(sock_path, name="ui")
    old.connect()
    old.call("ping")
    new = EngineClient(sock_path, name="ui")
    try:
        new.connect()
        assert new.call("state.get")
        assert wait_until(lambda: not old.connected)
        assert "replaced by a newer ui connection" in old.last_error
        assert srv.counters["replaced"] == 1
    finally:
        for c in (*hog, old, new):
            c.close()
        srv.close()


def test_a_role_claimed_by_an_untrusted_peer_gets_only_an_ordinary_place(sock_path):
    srv = make_server(sock_path, max_clients=1, trust=lambda uid, pid: False)
    try:
        c = Raw(sock_path, greet="ui", role="ui")
        assert c.greeting["result"]["slot"] == "normal" and "reserved places are only" in c.greeting["result"]["note"]
        d = Raw(sock_path, greet="ui", role="ui")  # no place left, and no reserved one for it
        assert d.greeting["error"]["code"] == p.BAD_STATE
        assert d.message()["reason"] == "full" and d.message() is None
        c.close()
        d.close()
    finally:
        srv.close()


_FLOOD = r"""
import socket, sys, time
path, n = sys.argv[1], int(sys.argv[2])
socks = []
for _ in range(n):
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect(path)
    except OSError:
        continue
    socks.append(s)
print("connected", len(socks), flush=True)
while True:  # hold them, silent (and re-open the ones the engine closes)
    time.sleep(0.05)
    for i, s in enumerate(socks):
        s.setblocking(False)
        try:
            if s.recv(65536) == b"":
                raise ConnectionError
        except BlockingIOError:
            continue
        except OSError:
            pass
        s.close()
        t = socket.socket(socket.AF_UNIX)
        try:
            t.connect(path)
        except OSError:
            continue
        socks[i] = t
"""


def test_a_process_flooding_silent_connections_never_locks_out_the_ui(sock_path):
    """Another process (not the appliance's) opens 60 connections that never greet and
    re-opens each one the engine closes: the UI and a fresh trusted client still get in."""
    me = os.getpid()
    srv = make_server(sock_path, greet_timeout_s=1.0, trust=lambda uid, pid: pid == me)
    flood = subprocess.Popen([sys.executable, "-c", _FLOOD, str(sock_path), "60"], stdout=subprocess.PIPE, text=True)
    try:
        assert "connected" in flood.stdout.readline()
        for _ in range(3):
            with EngineClient(sock_path, name="ui", timeout_s=5.0) as ui:
                assert ui.call("state.get")["client"].startswith("ui#")
            assert fresh_client_works(sock_path)
        assert srv.counters["evicted_waiting"] > 0
        assert srv.alive
    finally:
        flood.kill()
        flood.wait(10)
        srv.close()


# ----------------------------------------------------------------------------- the engine is never held up


def test_publish_never_waits_long_for_a_stuck_server_thread(server, sock_path):
    with EngineClient(sock_path, name="sub") as sub:
        sub.subscribe(["events"])
        returned = threading.Event()
        with server._lock:  # the server thread is stuck holding its lock
            def publish():
                for i in range(50):
                    server.publish("events", {"type": "event", "seq": i})
                returned.set()

            threading.Thread(target=publish, daemon=True).start()
            assert returned.wait(10), "publish waited for the stuck server"
        assert server.counters["publish_skipped"] >= 1
        server.publish("events", {"type": "event", "seq": 99})  # free again: delivered
        assert wait_until(lambda: any(m.get("seq") == 99 for m in sub.poll()), 10)


# ----------------------------------------------------------------------------- fuzzing


_text_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=40,
)
_commands = st.sampled_from([c.name for c in p.COMMAND_LIST] + ["", "hello", "subscribe"])


def _request_lines():
    structured = st.builds(
        lambda cmd, rid, extra: json.dumps({"id": rid, "cmd": cmd, **extra}).encode(),
        _commands,
        st.one_of(st.integers(), st.text(max_size=70), st.none(), st.floats(), st.booleans()),
        st.dictionaries(st.text(max_size=12), _text_json, max_size=4),
    )
    deep = st.builds(lambda n, o, c: (o * n + c * n).encode(), st.integers(1, 3000), st.sampled_from(["[", '{"a":']),
                     st.sampled_from(["]", "}"]))
    big_numbers = st.builds(lambda d, cmd: f'{{"id":{d},"cmd":"{cmd}"}}'.encode(),
                            st.integers(0, 10**6).map(lambda k: "9" * (k % 6000 + 1)), _commands)
    return st.one_of(st.binary(max_size=300), structured, deep, big_numbers,
                     st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")))


def test_fuzz_arbitrary_request_lines_through_the_real_socket(sock_path):
    """Any line: replies carry known error codes (or results), the connection survives
    unless the line itself ends it, and the server keeps serving fresh clients."""
    srv = make_server(sock_path)
    seen = {"n": 0}

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(_request_lines())
    def check(line):
        c = Raw(sock_path)
        try:
            c.send_raw(line.replace(b"\n", b" ") + b"\n" + b'{"id":"sentinel","cmd":"ping"}\n')
            while True:
                m = c.message()
                if m is None:
                    # only a line the engine refuses to read on closes the connection
                    assert len(line) > p.MAX_LINE_BYTES, line[:200]
                    break
                if m.get("type") == "reply":
                    if m["id"] == "sentinel":
                        assert m["result"] == {"pong": True}
                        break
                    if not m["ok"]:
                        assert m["error"]["code"] in p.ERROR_CODES and m["error"]["message"]
                else:
                    assert m.get("type") in ("state", "alarms", "goodbye"), m
        finally:
            c.close()
        seen["n"] += 1
        assert srv.alive

    try:
        check()
        assert seen["n"] >= 100
        assert srv.alive and fresh_client_works(sock_path)
        assert srv.counters["client_errors"] == 0 and srv.counters["thread_errors"] == 0
    finally:
        srv.close()


def test_the_server_thread_dies_only_when_its_selector_is_gone(server, sock_path):
    """The one way the thread ends (besides close): what the engine's supervision restarts."""
    assert server.alive
    server._sel.close()
    assert wait_until(lambda: not server.alive, 10)
    with pytest.raises(EngineUnavailable, match="did not greet"):
        EngineClient(sock_path, timeout_s=0.5).connect()
