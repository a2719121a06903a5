"""The API server and client library over a real Unix socket (no engine behind it)."""

from __future__ import annotations

import os
import socket
import stat
import threading

import pytest

from app.api import protocol as p
from app.api.client import CommandFailed, EngineClient, EngineTimeout, EngineUnavailable
from app.api.server import ApiServer, SocketInUse
from waiting import wait_until


class Echo:
    """A stand-in engine: answers state.get, refuses case.close, ignores note.add."""

    def __init__(self):
        self.requests = []

    def __call__(self, req, respond):
        self.requests.append(req)
        if req.cmd == "state.get":
            respond(p.reply_ok(req.id, {"client": req.client}))
        elif req.cmd == "note.add":
            pass  # never answered
        else:
            respond(p.reply_error(req.id, p.ApiError(p.BAD_STATE, f"{req.cmd}: no case is open")))


@pytest.fixture
def sock_path(tmp_path):
    return tmp_path / "run" / "engine.sock"


@pytest.fixture
def server(sock_path):
    engine = Echo()
    srv = ApiServer(sock_path, engine, lambda: p.hello("lnm test", simulated=True), stall_timeout_s=0.6,
                    request_timeout_s=0.5)
    srv.engine = engine
    srv.start()
    yield srv
    srv.close()


def wait_for(pred, timeout=5.0):
    return wait_until(pred, timeout, interval=0.01)


def test_socket_is_0660_and_hello_is_versioned(server, sock_path):
    assert stat.S_IMODE(os.stat(sock_path).st_mode) == 0o660
    with EngineClient(sock_path, name="t") as c:
        assert c.hello["api"] == 1 and c.hello["type"] == "hello"
        assert c.call("ping") == {"pong": True}


def test_replies_match_requests_and_errors_raise(server, sock_path):
    with EngineClient(sock_path, name="nurse") as c:
        assert c.call("state.get")["client"].startswith("nurse#")
        with pytest.raises(CommandFailed) as info:
            c.call("case.close")
        assert info.value.code == p.BAD_STATE and "no case" in info.value.message
        with pytest.raises(CommandFailed) as info:
            c.call("stim.set", output="probe", current_mA=50)
        assert info.value.code == p.INVALID_ARGUMENT and "0-10 mA" in info.value.message
        with pytest.raises(CommandFailed) as info:
            c.call("no.such")
        assert info.value.code == p.UNKNOWN_COMMAND


def test_unanswered_request_gets_a_timeout_reply(server, sock_path):
    with EngineClient(sock_path) as c:
        with pytest.raises(CommandFailed) as info:
            c.call("note.add", timeout_s=3.0, text="hello")
        assert info.value.code == p.TIMEOUT


def test_raw_nonsense_lines_get_errors_and_connection_survives(server, sock_path):
    s = socket.socket(socket.AF_UNIX)
    s.connect(str(sock_path))
    f = s.makefile("rwb")
    assert b'"hello"' in f.readline()
    for line, code in ((b"garbage", "bad_json"), (b"[]", "bad_json"), (b'{"id":3}', "bad_request"),
                       (b'{"id":4,"cmd":"x"}', "unknown_command")):
        f.write(line + b"\n")
        f.flush()
        reply = p.decode_line(f.readline())
        assert reply["ok"] is False and reply["error"]["code"] == code
    f.write(b'{"id":9,"cmd":"ping"}\n')
    f.flush()
    assert p.decode_line(f.readline())["result"] == {"pong": True}
    s.close()


def test_overlong_line_is_refused_and_connection_closed(server, sock_path):
    s = socket.socket(socket.AF_UNIX)
    s.connect(str(sock_path))
    f = s.makefile("rwb")
    f.readline()
    try:
        f.write(b"x" * (p.MAX_LINE_BYTES + 10))
        f.flush()
    except OSError:
        pass
    reply = p.decode_line(f.readline())
    assert reply["error"]["code"] == "bad_request"
    assert f.readline() == b""  # closed
    s.close()


def test_subscribers_get_streams_and_sticky_state_at_once(server, sock_path):
    server.publish("state", {"type": "state", "seq": 1}, sticky=True)
    with EngineClient(sock_path) as c:
        c.subscribe(["state", "events"])
        msg = [m for m in c.messages(timeout_s=2.0) if m["type"] != "connection"][0]
        assert msg == {"type": "state", "seq": 1}
        server.publish("events", {"type": "event", "seq": 5})
        server.publish("waveforms", {"type": "waveform"})  # not subscribed
        got = c.get(2.0)
        assert got == {"type": "event", "seq": 5}
        assert c.get(0.2) is None


def test_a_client_that_stops_reading_never_blocks_publish_and_is_dropped(server, sock_path):
    stuck = socket.socket(socket.AF_UNIX)
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.connect(str(sock_path))
    stuck.sendall(b'{"id":0,"cmd":"hello","client":"stuck"}\n{"id":1,"cmd":"subscribe","streams":["events"]}\n')
    with EngineClient(sock_path) as good:
        good.subscribe(["events"])
        assert wait_for(lambda: server.client_count == 2)
        big = "x" * 20000
        done = threading.Event()

        def flood():
            for i in range(2000):
                server.publish("events", {"type": "event", "seq": i, "pad": big})
            done.set()

        t = threading.Thread(target=flood)
        t.start()
        assert done.wait(20), "publish blocked on a client that does not read"
        seqs = []
        while True:
            m = good.get(1.0)
            if m is None:
                break
            if m["type"] == "event":
                seqs.append(m["seq"])
        assert seqs and seqs[-1] == 1999  # the reading client got the newest messages
        assert seqs == sorted(seqs)
        # the stuck client is disconnected after the stall timeout, the good one stays
        assert wait_for(lambda: server.client_count == 1, timeout=5.0)
        assert good.call("ping") == {"pong": True}
    stuck.close()


def test_second_engine_on_the_same_socket_is_refused_and_stale_socket_replaced(server, sock_path, tmp_path):
    other = ApiServer(sock_path, Echo(), lambda: p.hello("x"))
    with pytest.raises(SocketInUse, match="already listening"):
        other.start()
    stale = tmp_path / "stale.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(stale))
    s.close()  # a socket file with nobody behind it (engine killed)
    srv = ApiServer(stale, Echo(), lambda: p.hello("x"))
    srv.start()
    try:
        with EngineClient(stale) as c:
            assert c.call("ping")["pong"]
    finally:
        srv.close()


def test_no_engine_gives_a_clear_message(tmp_path):
    with pytest.raises(EngineUnavailable, match="no engine is running on .*lnm engine"):
        EngineClient(tmp_path / "none.sock").connect()


def test_client_reconnects_and_resubscribes_after_engine_restart(sock_path):
    srv = ApiServer(sock_path, Echo(), lambda: p.hello("one"))
    srv.start()
    c = EngineClient(sock_path, name="ui", reconnect=True, retry_s=0.05)
    c.start()
    try:
        assert c.wait_connected(3.0)
        c.subscribe(["events"])
        srv.close()
        assert wait_for(lambda: not c.connected, 3.0)
        with pytest.raises(EngineUnavailable):
            c.call("ping")
        srv = ApiServer(sock_path, Echo(), lambda: p.hello("two"))
        srv.start()
        assert wait_for(lambda: c.connected and srv.client_count == 1, 5.0)
        assert c.hello["engine"] == "two"
        # the stream says so too (its message may land just after ``connected`` turns true)
        kinds = []

        def told() -> bool:
            kinds.extend((m["type"], m.get("connected")) for m in c.poll())
            return ("connection", False) in kinds and kinds[-1] == ("connection", True)

        assert wait_for(told, 5.0), kinds

        def got_event():
            srv.publish("events", {"type": "event", "seq": 42})
            return any(m.get("seq") == 42 for m in c.poll())

        assert wait_for(got_event, 5.0)  # the subscription was renewed
    finally:
        c.close()
        srv.close()


def test_call_times_out_locally_when_the_engine_is_silent(tmp_path):
    path = tmp_path / "silent.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))
    listener.listen(1)
    done = threading.Event()

    def greet():
        conn, _ = listener.accept()
        conn.sendall(p.encode(p.hello("silent")))
        done.wait(30)  # connected, and silent until the test is over
        conn.close()

    t = threading.Thread(target=greet, daemon=True)
    t.start()
    try:
        with EngineClient(path) as c:
            with pytest.raises(EngineTimeout):
                c.call("state.get", timeout_s=0.3)
    finally:
        done.set()
        t.join(5)
        listener.close()


def test_connected_is_always_queued_before_anything_the_reader_delivers(tmp_path):
    """An engine that greets, sends an event and hangs up at once: the client's queue
    reads connected, the event, disconnected, in that order, every time."""
    import json as _json
    import threading

    from app.api import API_VERSION
    from app.api.client import EngineClient

    path = tmp_path / "quick.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))
    listener.listen(8)
    rounds = 20

    def serve():
        for _ in range(rounds):
            conn, _ = listener.accept()
            conn.sendall((_json.dumps({"type": "hello", "api": API_VERSION, "engine": "t"}) + "\n"
                          + _json.dumps({"type": "event", "event": {"kind": "x"}}) + "\n").encode())
            conn.recv(4096)  # the client's own hello request, then hang up
            conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        for _ in range(rounds):
            c = EngineClient(path, name="t", reconnect=False, timeout_s=2.0)
            c.connect()
            seen = []
            while len(seen) < 3:
                msg = c.get(timeout_s=2.0)
                assert msg is not None, seen
                seen.append((msg["type"], msg.get("connected")))
            c.close()
            assert seen == [("connection", True), ("event", None), ("connection", False)]
    finally:
        listener.close()
