"""Supervised link: pure supervisor, and BoardLink against a scripted fake board over a
socket pair (silent board, garbage, nacks, reconnection)."""

from __future__ import annotations

import socket
import threading
import time

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from firmware_bridge.clock import ManualClock, MonotonicClock
from firmware_bridge.codec import Decoder, encode
from firmware_bridge.link import (
    BoardLink,
    LinkDown,
    LinkEventKind,
    LinkSupervisor,
    ProtocolError,
    RequestTimeout,
)
from firmware_bridge.messages import (
    Ack,
    BoardHeartbeat,
    Capabilities,
    EmgBlock,
    Hello,
    HostHeartbeat,
    ImpedanceRequest,
    Nack,
    NackReason,
    Output,
    StimMode,
    Stimulate,
)
from firmware_bridge.transport import PortError, SocketPort, open_port

# ----------------------------------------------------------------------------- pure supervisor


def test_supervisor_lost_after_timeout_and_restored():
    sup = LinkSupervisor(0.1, 0.5, now=0.0)
    assert sup.heartbeat_due(0.0)
    assert [e.kind for e in sup.frame_received(0.05)] == [LinkEventKind.CONNECTED]
    assert sup.connected
    assert sup.check(0.54) == []
    events = sup.check(0.55)
    assert [e.kind for e in events] == [LinkEventKind.LOST] and events[0].t == 0.55
    assert sup.check(0.9) == []  # reported once
    assert [e.kind for e in sup.frame_received(1.0)] == [LinkEventKind.RESTORED]
    assert sup.frame_received(1.05) == []


def test_supervisor_reports_a_board_that_never_speaks():
    sup = LinkSupervisor(0.1, 0.5, now=10.0)
    assert sup.check(10.49) == []
    (event,) = sup.check(10.5)
    assert event.kind is LinkEventKind.LOST and "within 500 ms" in event.detail
    assert [e.kind for e in sup.frame_received(11.0)] == [LinkEventKind.RESTORED]


def test_supervisor_heartbeat_cadence_has_no_drift_and_no_burst():
    sup = LinkSupervisor(0.1, 0.5, now=0.0)
    sent = []
    t = 0.0
    while t < 1.0:
        if sup.heartbeat_due(t):
            sup.heartbeat_sent(t)
            sent.append(round(t, 3))
        t = round(t + 0.003, 3)
    assert len(sent) == 10
    assert all(abs(b - a - 0.1) < 0.0035 for a, b in zip(sent, sent[1:], strict=False))
    # a stall of 1 s gives one heartbeat, not ten at once
    assert sup.heartbeat_due(2.0)
    sup.heartbeat_sent(2.0)
    assert not sup.heartbeat_due(2.05)


def test_supervisor_port_loss_is_immediate():
    sup = LinkSupervisor(0.1, 0.5, now=0.0)
    sup.frame_received(0.0)
    (event,) = sup.port_lost(0.1, "device disconnected")
    assert event.kind is LinkEventKind.LOST and "device disconnected" in event.detail
    assert sup.check(5.0) == []


def test_supervisor_next_due_is_the_earlier_of_heartbeat_and_loss():
    sup = LinkSupervisor(0.1, 0.5, now=0.0)
    assert sup.next_due() == 0.0  # first heartbeat at once
    sup.heartbeat_sent(0.0)
    assert sup.next_due() == pytest.approx(0.1)
    sup.frame_received(0.05)
    for t in (0.1, 0.2, 0.3, 0.4, 0.5):
        sup.heartbeat_sent(t)
    assert sup.next_due() == pytest.approx(0.55)  # the loss deadline comes first
    sup.check(0.55)
    assert sup.next_due() == pytest.approx(0.6)  # lost: only heartbeats remain


def test_supervisor_rejects_nonsense_periods():
    with pytest.raises(ValueError, match="heartbeat"):
        LinkSupervisor(0, 0.5)
    with pytest.raises(ValueError, match="timeout"):
        LinkSupervisor(0.2, 0.1)


@settings(max_examples=200, deadline=None)
@given(
    gaps=st.lists(st.floats(0.001, 1.5), min_size=1, max_size=40),
    timeout=st.floats(0.2, 1.0),
)
# a silence of a rounding over the timeout and a grid step
@example(gaps=[1.0, 1.5, 1.5, 1.0625, 1.193359375, 0.9375, 0.3125, 0.7109375], timeout=0.71)
def test_supervisor_matches_reference(gaps, timeout):
    """LOST exactly when a silence reaches the timeout (checked every 1 ms), once per
    silence, each followed by RESTORED at the next frame."""
    sup = LinkSupervisor(0.05, timeout, now=0.0)
    frame_times, t = [], 0.0
    for g in gaps:
        t += g
        frame_times.append(t)
    kinds, rx = [], []
    now, i = 0.0, 0
    step = 0.001
    while i < len(frame_times):
        now = round(now + step, 6)
        while i < len(frame_times) and frame_times[i] <= now:
            kinds += [e.kind for e in sup.frame_received(now)]
            rx.append(now)  # frames are seen on the 1 ms grid
            i += 1
        kinds += [e.kind for e in sup.check(now)]
    # reference: every silence between frames as seen (from 0) that reaches the timeout;
    # silences within one grid step of it may go either way (and within float rounding
    # of that: a silence of 7.506 -> 8.217 s reads 0.7110000000000003 s)
    silences = [b - a for a, b in zip([0.0] + rx, rx, strict=False)]
    edge = timeout + step + 1e-9
    expected_losses = sum(1 for g in silences if g >= edge)
    borderline = sum(1 for g in silences if timeout - step - 1e-9 <= g < edge)
    losses = kinds.count(LinkEventKind.LOST)
    assert expected_losses <= losses <= expected_losses + borderline
    assert kinds.count(LinkEventKind.RESTORED) == losses
    # the first event: CONNECTED if the board spoke in time, else LOST; CONNECTED only once
    assert kinds[0] in (LinkEventKind.CONNECTED, LinkEventKind.LOST)
    assert kinds.count(LinkEventKind.CONNECTED) == (kinds[0] is LinkEventKind.CONNECTED)
    if silences[0] < timeout - step:
        assert kinds[0] is LinkEventKind.CONNECTED
    elif silences[0] >= timeout + step:
        assert kinds[0] is LinkEventKind.LOST


# ----------------------------------------------------------------------------- fake board

CAPS = Capabilities(protocol_version=1, firmware_version="test-1.0", board_id="FAKE-1", simulated=True)


class FakeBoard:
    """A scripted board on one end of a socket pair, speaking the real codec."""

    def __init__(self, sock: socket.socket, caps: Capabilities = CAPS, heartbeat_s: float = 0.05) -> None:
        self.sock = sock
        self.caps = caps
        self.heartbeat_s = heartbeat_s
        self.silent = threading.Event()
        self.stop = threading.Event()
        self.decoder = Decoder()
        self.received: list[tuple[int, object]] = []
        self.rx_cond = threading.Condition()
        self.last_tx = 0.0
        self.seq = 0
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._rx, daemon=True), threading.Thread(target=self._tx, daemon=True)]
        for t in self.threads:
            t.start()

    def send(self, message) -> None:
        with self.lock:
            self._write(encode(message, self.seq))
            self.seq += 1

    def send_raw(self, data: bytes) -> None:
        with self.lock:
            self._write(data)

    def _write(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
            self.last_tx = time.monotonic()
        except OSError:
            pass

    def _send_unless_silent(self, message) -> None:
        """Heartbeats and answers: checked and written under the lock, so that nothing
        of the board's own goes out once ``go_silent`` has returned."""
        with self.lock:
            if self.silent.is_set():
                return
            self._write(encode(message, self.seq))
            self.seq += 1

    def go_silent(self) -> None:
        with self.lock:
            self.silent.set()

    def host_messages(self, cls):
        return [m for _s, m in list(self.received) if isinstance(m, cls)]

    def wait_received(self, predicate, timeout: float = 5.0):
        """Wait for the host's frames to satisfy ``predicate(board)``; woken by each frame."""
        with self.rx_cond:
            if self.rx_cond.wait_for(lambda: predicate(self), timeout):
                return True
        raise AssertionError(f"the board did not receive what was expected within {timeout} s; "
                             f"got {[type(m).__name__ for _s, m in self.received][-20:]}")

    def _rx(self) -> None:
        self.sock.settimeout(0.05)
        while not self.stop.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            for frame in self.decoder.feed(data):
                with self.rx_cond:
                    self.received.append((frame.seq, frame.message))
                    self.rx_cond.notify_all()
                self._answer(frame.seq, frame.message)

    def _answer(self, seq: int, m) -> None:
        if isinstance(m, Hello):
            if m.protocol_version != self.caps.protocol_version:
                detail = f"speaks {self.caps.protocol_version}"
                self._send_unless_silent(Nack(seq, NackReason.UNSUPPORTED_VERSION, detail))
            else:
                self._send_unless_silent(self.caps)
        elif isinstance(m, Stimulate):
            if m.mode is not StimMode.STOP and not 0 <= m.current_uA <= self.caps.max_current_uA:
                detail = f"current_uA {m.current_uA} outside 0-{self.caps.max_current_uA}"
                self._send_unless_silent(Nack(seq, NackReason.OUT_OF_RANGE, detail))
            elif m.current_uA == 4242:
                pass  # never answered: for the timeout test
            else:
                self._send_unless_silent(Ack(seq))
        elif not isinstance(m, HostHeartbeat):
            self._send_unless_silent(Ack(seq))

    def _tx(self) -> None:
        n = 0
        while not self.stop.wait(self.heartbeat_s):
            if not self.silent.is_set():
                self._send_unless_silent(BoardHeartbeat(board_time_us=n * 50_000, counter=n))
                n += 1

    def close(self) -> None:
        self.stop.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


class PairFactory:
    """Port factory: each open makes a new socket pair and a FakeBoard on its far end."""

    url = "socketpair://fake"

    def __init__(self, fail_first: int = 0) -> None:
        self.boards: list[FakeBoard] = []
        self.fail_left = fail_first
        self.refuse = threading.Event()

    def __call__(self) -> SocketPort:
        if self.fail_left > 0 or self.refuse.is_set():
            self.fail_left -= 1
            raise PortError(f"cannot open board port {self.url!r}: no such device")
        host_end, board_end = socket.socketpair()
        self.boards.append(FakeBoard(board_end))
        return SocketPort(self.url, host_end, timeout_s=0.02)

    @property
    def board(self) -> FakeBoard:
        return self.boards[-1]

    def close(self) -> None:
        for b in self.boards:
            b.close()


class Recorder:
    def __init__(self, clock) -> None:
        self.clock = clock
        self.events = []
        self.messages = []
        self.cond = threading.Condition()

    def on_event(self, e) -> None:
        with self.cond:
            self.events.append(e)
            self.cond.notify_all()

    def on_message(self, m) -> None:
        with self.cond:
            self.messages.append(m)
            self.cond.notify_all()

    def wait_message(self, predicate, timeout: float = 3.0):
        """The first message delivered to the application that satisfies ``predicate``."""
        with self.cond:
            found = self.cond.wait_for(lambda: next((m for m in self.messages if predicate(m)), None), timeout)
        if found is None:
            raise AssertionError(f"no such message within {timeout} s; got {self.messages[-20:]}")
        return found

    def wait_event(self, kind, after: int = 0, timeout: float = 3.0):
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for e in self.events[after:]:
                    if e.kind is kind:
                        return e
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {kind.value} event within {timeout} s; got {self.events}")
                self.cond.wait(left)


@pytest.fixture
def rig():
    clock = MonotonicClock()
    factory = PairFactory()
    rec = Recorder(clock)
    link = BoardLink(port_factory=factory, clock=clock, on_event=rec.on_event, on_message=rec.on_message)
    link.start()
    yield link, factory, rec
    link.close()
    factory.close()


def test_handshake_and_heartbeats(rig):
    link, factory, rec = rig
    caps = link.handshake(timeout_s=1.0)
    assert caps == CAPS and link.capabilities == CAPS
    rec.wait_event(LinkEventKind.CONNECTED)
    assert link.connected
    board = factory.board
    board.wait_received(lambda b: len(b.host_messages(HostHeartbeat)) >= 3)
    beats = board.host_messages(HostHeartbeat)
    counters = [b.counter for b in beats]
    assert counters == sorted(counters) and len(set(counters)) == len(counters)
    assert not any(b.alarm_active for b in beats)
    link.set_alarm_active(True)
    # carried from the next heartbeats on, and by every one after that
    board.wait_received(lambda b: any(h.alarm_active for h in b.host_messages(HostHeartbeat)))
    first = next(i for i, h in enumerate(board.host_messages(HostHeartbeat)) if h.alarm_active)
    board.wait_received(lambda b: len(b.host_messages(HostHeartbeat)) >= first + 3)
    assert all(h.alarm_active for h in board.host_messages(HostHeartbeat)[first:])


def test_board_silent_is_lost_within_timeout_then_restored(rig):
    link, factory, rec = rig
    rec.wait_event(LinkEventKind.CONNECTED)
    n = len(rec.events)
    board = factory.board
    board.go_silent()
    last_tx = board.last_tx  # the board's last frame: nothing more goes out after go_silent
    lost = rec.wait_event(LinkEventKind.LOST, after=n, timeout=5.0)
    delay = lost.t - last_tx  # both on time.monotonic
    # 500 ms after the last frame arrived (never earlier), plus the supervisor thread's
    # wake-up on a loaded machine; the exact instant is checked on a ManualClock below
    assert 0.45 <= delay <= 0.5 + 0.5, delay
    assert not link.connected
    m = len(rec.events)
    board.silent.clear()  # nothing to synchronise: the board simply speaks again
    restored = rec.wait_event(LinkEventKind.RESTORED, after=m, timeout=2.0)
    assert restored.t - lost.t > 0
    assert link.connected and link.counters["lost"] == 1 and link.counters["restored"] == 1


def test_garbage_from_the_board_is_counted_and_the_link_survives(rig):
    link, factory, rec = rig
    rec.wait_event(LinkEventKind.CONNECTED)
    board = factory.board
    rng = np.random.default_rng(7)
    good = encode(EmgBlock(0, 0, 20000, 100, np.ones((2, 10), np.int32)), 999)
    bad = bytearray(good)
    bad[-1] ^= 0xFF
    for _ in range(20):
        board.send_raw(rng.integers(0, 256, 200, dtype=np.uint8).tobytes())
        board.send_raw(bytes(bad))
        board.send_raw(b"\xa5\x5a" + rng.integers(0, 256, 30, dtype=np.uint8).tobytes())
    # a command answered after all the garbage: once its Ack is back, all of it was read
    # (an Ack naming no command the host sent would be dropped as unsolicited)
    assert isinstance(link.request(Stimulate(Output.PROBE, StimMode.STOP), timeout_s=3.0), Ack)
    c = link.counters
    assert c["bytes_discarded"] > 20 * 200 and c["resyncs"] >= 1
    assert c["bad_crc"] >= 20
    assert link.connected
    assert link.handshake() == CAPS
    assert not any(e.kind is LinkEventKind.LOST for e in rec.events)
    # the corrupted EmgBlocks never reached the application
    assert not any(isinstance(m, EmgBlock) for m in rec.messages)


def test_nack_for_out_of_range_reaches_the_caller(rig):
    link, factory, rec = rig
    link.handshake()
    ok = link.request(Stimulate(Output.PROBE, StimMode.SINGLE, current_uA=1000), timeout_s=1.0)
    assert isinstance(ok, Ack)
    answer = link.request(Stimulate(Output.PROBE, StimMode.SINGLE, current_uA=50_000), timeout_s=1.0)
    assert isinstance(answer, Nack) and answer.reason is NackReason.OUT_OF_RANGE
    assert "current_uA 50000" in answer.detail
    # answers are matched by sequence number
    sent = [s for s, m in factory.board.received if isinstance(m, Stimulate)]
    assert answer.seq == sent[-1] and ok.seq == sent[-2]


def test_request_timeout_is_a_clear_error(rig):
    link, _factory, _rec = rig
    link.handshake()
    with pytest.raises(RequestTimeout, match=r"Stimulate \(seq \d+\) within 200 ms"):
        link.request(Stimulate(Output.PROBE, StimMode.SINGLE, current_uA=4242), timeout_s=0.2)
    assert link.counters["request_timeouts"] == 1


def test_protocol_version_mismatch_is_refused():
    factory = PairFactory()
    link = BoardLink(port_factory=factory, hello_on_connect=False).start()
    try:
        factory.board.caps = Capabilities(protocol_version=1, firmware_version="x", board_id="y")
        link.handshake()
        factory.board.caps = Capabilities(protocol_version=9, firmware_version="9.0", board_id="y")
        with pytest.raises(ProtocolError, match="UNSUPPORTED_VERSION"):
            link.handshake()
    finally:
        link.close()
        factory.close()


def test_reconnects_after_the_port_closes(rig):
    link, factory, rec = rig
    link.handshake()
    first = factory.board
    n = len(rec.events)
    first.close()  # the board end goes away: EOF on the host side
    err = rec.wait_event(LinkEventKind.PORT_ERROR, after=n)
    assert "socketpair://fake" in err.detail
    lost = rec.wait_event(LinkEventKind.LOST, after=n)
    assert lost.t - err.t < 0.1  # a port error is a loss at once, not after 500 ms
    rec.wait_event(LinkEventKind.PORT_OPENED, after=n)
    rec.wait_event(LinkEventKind.RESTORED, after=n)
    assert factory.board is not first
    assert link.handshake() == CAPS
    ack = link.request(Stimulate(Output.APS, StimMode.STOP), timeout_s=1.0)
    assert ack == Ack([s for s, m in factory.board.received if isinstance(m, Stimulate)][-1])
    assert link.counters["port_errors"] >= 1 and link.counters["port_opens"] == 2
    # the new connection counts sequence numbers from 0 again
    assert factory.board.received[0][0] == 0


def test_unplugged_port_retries_with_backoff_until_it_comes_back():
    factory = PairFactory(fail_first=3)
    rec = Recorder(MonotonicClock())
    link = BoardLink(port_factory=factory, on_event=rec.on_event, reconnect_min_s=0.02).start()
    try:
        err = rec.wait_event(LinkEventKind.PORT_ERROR)
        assert "no such device" in err.detail and "socketpair://fake" in err.detail
        with pytest.raises(LinkDown):
            link.send(Stimulate(Output.PROBE, StimMode.STOP))
        rec.wait_event(LinkEventKind.PORT_OPENED, timeout=3.0)
        rec.wait_event(LinkEventKind.CONNECTED, timeout=3.0)
        assert link.handshake() == CAPS
        # the same message is reported once, not once per retry
        assert sum(e.kind is LinkEventKind.PORT_ERROR for e in rec.events) == 1
    finally:
        link.close()
        factory.close()


def test_pending_request_fails_fast_when_the_port_dies(rig):
    link, factory, _rec = rig
    link.handshake()
    board = factory.board
    result = {}

    def ask():
        try:
            link.request(Stimulate(Output.PROBE, StimMode.SINGLE, current_uA=4242), timeout_s=5.0)
        except (LinkDown, RequestTimeout) as exc:
            result["exc"] = exc

    t = threading.Thread(target=ask)
    start = time.monotonic()
    t.start()
    board.wait_received(lambda b: any(m.current_uA == 4242 for m in b.host_messages(Stimulate)))
    board.close()
    t.join(3.0)
    assert isinstance(result.get("exc"), LinkDown)
    assert time.monotonic() - start < 2.0


def test_paused_heartbeat_stops_host_heartbeats():
    clock = ManualClock(50.0)
    factory = PairFactory()
    link = BoardLink(port_factory=factory, clock=clock).start()
    try:
        link.handshake()
        board = factory.board

        def beats() -> int:
            return len(board.host_messages(HostHeartbeat))

        board.wait_received(lambda b: beats() >= 1)  # the first one is due at once
        for _ in range(3):
            n = beats()
            clock.advance(0.12)  # one heartbeat due: the supervisor thread sends it
            board.wait_received(lambda b, n=n: beats() > n)
        # it has landed and the clock stands still: no other heartbeat is due or in flight
        link.pause_heartbeat()
        before = beats()
        for _ in range(10):  # 1.2 s of link time, the supervisor thread running beside
            clock.advance(0.12)
            link.supervise_once()
        # frames arrive in order: once this Ack is back, anything sent before it is in
        link.request(Stimulate(Output.PROBE, StimMode.STOP), timeout_s=5.0)
        assert beats() == before
        link.resume_heartbeat()
        clock.advance(0.12)
        board.wait_received(lambda b: beats() > before)
    finally:
        link.close()
        factory.close()


def test_manual_clock_loss_detection_is_deterministic():
    clock = ManualClock(100.0)
    factory = PairFactory()
    rec = Recorder(clock)
    link = BoardLink(port_factory=factory, clock=clock, on_event=rec.on_event, on_message=rec.on_message,
                    tick_s=3600)  # no auto ticks
    link.start()
    try:
        rec.wait_event(LinkEventKind.CONNECTED)
        board = factory.board
        seq = link.send(ImpedanceRequest())
        board.wait_received(lambda b: any(s == seq for s, _m in b.received))
        rec.wait_message(lambda m: m == Ack(seq))  # answered while the board still speaks
        board.go_silent()
        # a last frame: once it is delivered, every frame before it has landed (all
        # stamped 100.0 on the manual clock); it must answer a command the host sent
        seq = link.send(ImpedanceRequest())
        board.wait_received(lambda b: any(s == seq for s, _m in b.received))
        board.send(Ack(seq))
        rec.wait_message(lambda m: m == Ack(seq))
        clock.advance(0.499)
        link.supervise_once()
        assert not any(e.kind is LinkEventKind.LOST for e in rec.events)
        clock.advance(0.002)
        link.supervise_once()
        lost = rec.wait_event(LinkEventKind.LOST)
        assert lost.t == pytest.approx(100.501)
    finally:
        link.close()
        factory.close()


def test_callback_errors_do_not_stop_the_link():
    factory = PairFactory()

    def broken(_message):
        raise RuntimeError("consumer bug")

    link = BoardLink(port_factory=factory, on_message=broken).start()
    try:
        assert link.handshake() == CAPS  # answers are still matched
        assert link.counters["callback_errors"] >= 1
    finally:
        link.close()
        factory.close()


def test_queue_delivery_without_callbacks():
    factory = PairFactory()
    link = BoardLink(port_factory=factory).start()
    try:
        link.handshake()
        kinds = set()
        deadline = time.monotonic() + 2
        while LinkEventKind.CONNECTED not in kinds and time.monotonic() < deadline:
            kinds.add(link.events.get(timeout=1).kind)
        assert LinkEventKind.CONNECTED in kinds
        assert isinstance(link.messages.get(timeout=1), (Capabilities, BoardHeartbeat))
    finally:
        link.close()
        factory.close()


# ----------------------------------------------------------------------------- transports


def test_open_port_errors_name_the_url(tmp_path):
    with pytest.raises(PortError, match="/nonexistent/ttyACM9"):
        open_port("/nonexistent/ttyACM9")
    with pytest.raises(PortError, match="socket://127.0.0.1:1"):
        open_port("socket://127.0.0.1:1")
    with pytest.raises(PortError, match="HOST:PORT"):
        open_port("socket://nohostport")
    with pytest.raises(PortError, match="empty"):
        open_port("")


def test_loop_url_round_trip():
    port = open_port("loop://")
    try:
        frame = encode(Ack(5), 1)
        port.write(frame)
        got = b""
        while len(got) < len(frame):
            got += port.read(4096)
        assert got == frame
    finally:
        port.close()


def test_socket_url_against_a_tcp_board():
    server = socket.create_server(("127.0.0.1", 0))
    url = f"socket://127.0.0.1:{server.getsockname()[1]}"
    rec = Recorder(MonotonicClock())
    link = BoardLink(url, on_event=rec.on_event)
    board = {}

    def accept():
        conn, _ = server.accept()
        board["b"] = FakeBoard(conn)

    t = threading.Thread(target=accept)
    t.start()
    link.start()
    try:
        t.join(2)
        assert link.handshake() == CAPS
        board["b"].close()
        err = rec.wait_event(LinkEventKind.PORT_ERROR)
        assert url in err.detail
    finally:
        link.close()
        server.close()
        if "b" in board:
            board["b"].close()


def test_pty_device_path():
    import os
    import pty

    master, slave = pty.openpty()
    path = os.ttyname(slave)
    port = open_port(path)
    try:
        frame = encode(Ack(1), 0)
        os.write(master, frame)
        got = b""
        deadline = time.monotonic() + 2
        while len(got) < len(frame) and time.monotonic() < deadline:
            got += port.read(65536)
        assert got == frame
        port.write(b"xyz")
        assert os.read(master, 10) == b"xyz"
        # nothing waiting: an empty read after the short timeout, not a "disconnected"
        assert port.read(65536) == b""
    finally:
        port.close()
        os.close(master)
        os.close(slave)


def test_pty_board_going_away_is_a_port_error():
    import os
    import pty

    master, slave = pty.openpty()
    path = os.ttyname(slave)
    port = open_port(path)
    os.close(slave)
    os.close(master)  # the board process died
    try:
        with pytest.raises(OSError, match=path):
            for _ in range(50):
                port.read(65536)
    finally:
        port.close()
