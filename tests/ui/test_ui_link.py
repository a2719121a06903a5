"""The UI's engine link without a display, against a small fake engine on a Unix socket:
the UI thread never waits, late replies time out, commands are not sent into a silent
engine (nor late), health says what is happening, and the link reconnects by itself."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import pytest

from app.ui.link import EngineLink
from firmware_bridge.clock import ManualClock
from waiting import wait_until


class FakeEngine:
    """hello, replies (unless stalled), a 'state' message every 50 ms (unless stalled)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.requests: list[dict] = []
        self.stalled = threading.Event()
        self.running = threading.Event()  # the opposite of stalled, to wait on
        self.running.set()
        self.stop = threading.Event()
        self.lock = threading.Lock()  # held while a state message goes out
        self.conns: list[socket.socket] = []
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(str(path))
        self.srv.listen(4)
        self.srv.settimeout(0.1)
        self.threads = [threading.Thread(target=self._accept, daemon=True),
                        threading.Thread(target=self._tick, daemon=True)]
        for t in self.threads:
            t.start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.srv.accept()
            except (TimeoutError, OSError):
                continue
            conn.sendall(b'{"type":"hello","api":1,"engine":"fake","simulated":true,"case_id":null}\n')
            self.conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buf = b""
        while not self.stop.is_set():
            try:
                chunk = conn.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                req = json.loads(line)
                self.requests.append(req)
                self.running.wait()
                reply = {"type": "reply", "id": req["id"], "ok": True, "result": {"echo": req["cmd"]}}
                if req["cmd"] == "refuse":
                    reply = {"type": "reply", "id": req["id"], "ok": False,
                             "error": {"code": "invalid_argument", "message": "refuse: no", "argument": "x"}}
                try:
                    conn.sendall((json.dumps(reply) + "\n").encode())
                except OSError:
                    return

    def _tick(self) -> None:
        seq = 0
        while not self.stop.wait(0.05):  # a state message every 50 ms
            with self.lock:
                if self.stalled.is_set():
                    continue
                seq += 1
                for c in list(self.conns):
                    try:
                        c.sendall((json.dumps({"type": "state", "seq": seq}) + "\n").encode())
                    except OSError:
                        self.conns.remove(c)

    def stall(self) -> None:
        """From now on nothing goes out: no replies, no state messages."""
        with self.lock:
            self.running.clear()
            self.stalled.set()

    def unstall(self) -> None:
        self.stalled.clear()
        self.running.set()

    def drop_clients(self) -> None:
        for c in list(self.conns):
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()
        self.conns.clear()

    def close(self) -> None:
        self.stop.set()
        self.running.set()  # a stalled reply is let go (into a closed socket)
        self.drop_clients()
        self.srv.close()


@pytest.fixture()
def fake(tmp_path):
    f = FakeEngine(tmp_path / "e.sock")
    yield f
    f.close()


def pump_until(link, pred, timeout=5.0, why=lambda: ""):
    """Pump the link the way the UI thread does (every ~10 ms) until ``pred`` holds."""
    msgs = []

    def pumped():
        msgs.extend(link.pump())
        return pred()

    if not wait_until(pumped, timeout, interval=0.01):
        raise AssertionError(f"condition not reached {why()}")
    return msgs


def test_replies_run_on_the_pumping_thread_and_refusals_keep_the_engines_message(fake):
    link = EngineLink(fake.path, timeout_s=2.0, stale_s=1.0, retry_s=0.05)
    link.start()
    try:
        pump_until(link, lambda: link.health().ok)
        got = []
        link.send("ping", lambda r: got.append((r, threading.current_thread())))
        link.send("refuse", lambda r: got.append((r, threading.current_thread())))
        pump_until(link, lambda: len(got) == 2)
        assert got[0][0].ok and got[0][0].result == {"echo": "ping"}
        assert not got[1][0].ok and got[1][0].code == "invalid_argument" and got[1][0].message == "refuse: no"
        assert all(t is threading.current_thread() for _r, t in got)
        subs = [r for r in fake.requests if r["cmd"] == "subscribe"]
        assert subs and "state" in subs[0]["streams"]
    finally:
        link.stop()


def test_a_stalled_engine_never_blocks_and_gets_no_late_commands(fake):
    # the link's timeouts run on a manual clock: the engine's silence lasts exactly as long
    # as the test says, however slowly the machine runs
    clock = ManualClock(1000.0)
    link = EngineLink(fake.path, timeout_s=0.6, stale_s=0.4, retry_s=0.05, monotonic=clock.now)
    link.start()
    try:
        pump_until(link, lambda: link.health().ok)
        answered = []
        link.send("ping", answered.append)
        pump_until(link, lambda: answered)  # the greeting commands are done: the engine is idle
        fake.stall()
        got = []
        t = time.monotonic()
        link.send("stim.set", got.append, current_mA=2.0)
        # queued, not waited for (a wait would last until the reply timeout, or for ever)
        assert time.monotonic() - t < 0.5 and link.waiting() >= 1
        # written before the stall is noticed: the engine has it and does not answer
        assert wait_until(lambda: any(r["cmd"] == "stim.set" for r in fake.requests))
        n = len(fake.requests)
        clock.advance(0.7)
        pump_until(link, lambda: got, timeout=3)
        assert got[0].code == "timeout" and "did not answer" in got[0].message

        def silence() -> bool:  # the engine stays silent while time passes
            clock.advance(0.1)
            return link.health().state == "stalled"

        pump_until(link, silence, timeout=3)  # (a state message already on its way may land first)
        assert "not responding" in link.health().message
        clock.advance(1.0)  # no pump in between: the engine has been silent for over 1 s
        link.send("stim.set", got.append, current_mA=3.0)  # asked while the engine is silent
        pump_until(link, lambda: len(got) == 2, timeout=3)
        assert got[1].code == "not_sent" and "NOT sent" in got[1].message
        fake.unstall()
        pump_until(link, lambda: link.health().ok, timeout=3)
        # commands go out in order: once a later ping is answered, the refused one would be in
        later = []
        link.send("ping", later.append)
        pump_until(link, lambda: later, timeout=5)
        assert later[0].ok
        assert len([r for r in fake.requests[n:] if r["cmd"] == "stim.set"]) == 0  # never reached the engine
    finally:
        fake.unstall()
        link.stop()


def test_commands_that_waited_too_long_are_not_sent(fake):
    now = [1000.0]
    link = EngineLink(fake.path, max_age_s=4.0, monotonic=lambda: now[0], stale_s=1e9)
    link.client.connect()
    link._connected = True
    got = []
    link.send("stim.set", got.append, current_mA=2.0)
    now[0] += 5.0  # the sender only now gets to it
    link.start()
    try:
        pump_until(link, lambda: got)
        assert got[0].code == "not_sent" and "within 4 s" in got[0].message
        assert not [r for r in fake.requests if r["cmd"] == "stim.set"]
    finally:
        link.stop()


def test_health_follows_the_connection_and_the_link_reconnects_by_itself(tmp_path):
    path = tmp_path / "e.sock"
    link = EngineLink(path, stale_s=1.0, retry_s=0.05)
    link.start()
    try:
        pump_until(link, lambda: link.health().state == "connecting" and "no engine" in link.health().message)
        got = []
        link.send("ping", got.append)
        pump_until(link, lambda: got)
        assert got[0].code == "engine_unavailable"
        fake = FakeEngine(path)
        try:
            pump_until(link, lambda: link.health().ok and any(r["cmd"] == "subscribe" for r in fake.requests))
            fake.drop_clients()
            pump_until(link, lambda: any(state == "down" for _t, state, _m in link.history), timeout=3)
            pump_until(link, lambda: link.health().ok, timeout=5)  # back by itself
            pump_until(link, lambda: len([r for r in fake.requests if r["cmd"] == "subscribe"]) >= 2,  # resubscribed
                       why=lambda: f"{fake.requests} {list(link.history)}")
        finally:
            fake.close()
    finally:
        link.stop()


def test_a_callback_that_raises_is_handed_over_and_the_others_still_run(fake):
    link = EngineLink(fake.path, timeout_s=2.0, stale_s=1.0, retry_s=0.05)
    link.start()
    try:
        pump_until(link, lambda: link.health().ok)
        got, errors = [], []

        def boom(_reply):
            raise KeyError("deliberate")

        link.send("first", boom)
        link.send("second", got.append)

        def pumped():
            link.pump(on_error=lambda exc, cmd: errors.append((type(exc).__name__, cmd)))
            return got

        assert wait_until(pumped, 5, interval=0.01)
        assert errors == [("KeyError", "first")] and got[0].ok
        # without a handler the callback's exception is the caller's
        link.send("third", boom)
        with pytest.raises(KeyError):
            wait_until(lambda: link.pump() and False, 5, interval=0.01)
    finally:
        link.stop()
