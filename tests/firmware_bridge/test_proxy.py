"""``lnm link-proxy``: the pure fault plan, then end to end (virtual board -> proxy ->
``BoardLink`` on one ManualClock) for each fault, then the command as a process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from waiting import LineReader, wait_until

from firmware_bridge.clock import ManualClock
from firmware_bridge.codec import Decoder, Frame, encode
from firmware_bridge.faults import FaultPlan, FaultSyntaxError
from firmware_bridge.flow import FlowSupervisor
from firmware_bridge.link import BoardLink, BoardRefused, LinkEventKind, ProtocolError
from firmware_bridge.messages import (
    Ack,
    BoardHeartbeat,
    BoardStatus,
    Capabilities,
    ConfigureAcquisition,
    EmgBlock,
    HostHeartbeat,
    Output,
    StimEpoch,
    StimMode,
    Stimulate,
)
from firmware_bridge.proxy import LinkProxy
from firmware_bridge.sim import open_sim

ROOT = Path(__file__).resolve().parents[2]

# ----------------------------------------------------------------------------- the pure plan


def _stream(n: int = 6, first_seq: int = 10) -> bytes:
    out = []
    for i in range(n):
        out.append(encode(BoardHeartbeat(i * 100_000, i), first_seq + 2 * i))
        out.append(encode(StimEpoch(i * 100_000, i, Output.APS, 1000, 1000, 100, 20000, 1, 100,
                                    np.full((2, 3), i, np.int32)), first_seq + 2 * i + 1))
    return b"".join(out)


def _frames(data: bytes) -> list[Frame]:
    return Decoder().feed(data)


def _epochs(frames) -> list[int]:
    return [f.message.stim_counter for f in frames if isinstance(f.message, StimEpoch)]


def test_no_rules_pass_everything_unchanged_even_in_pieces():
    plan = FaultPlan()
    data = b"garbage" + _stream() + b"\xa5\x5a\x01"  # junk and a half header pass as they are
    out = b"".join(plan.process("board", data[i : i + 7], 0.0) for i in range(0, len(data), 7))
    assert out == data[:-3]  # the half header waits for the rest
    assert plan.process("board", b"", 0.0) == b""


def test_drop_count_and_every():
    plan = FaultPlan()
    assert plan.command("drop StimEpoch count=2", 0.0)[0].startswith("ok: rule 1: drop StimEpoch count=2")
    assert _epochs(_frames(plan.process("board", _stream(), 0.0))) == [2, 3, 4, 5]
    assert plan.rules == []  # the rule ended
    plan.command("drop StimEpoch every=2", 0.0)
    assert _epochs(_frames(plan.process("board", _stream(), 0.0))) == [0, 2, 4]


def test_duplicate_corrupt_and_mutate():
    plan = FaultPlan()
    plan.command("duplicate StimEpoch count=1", 0.0)
    plan.command("corrupt BoardHeartbeat count=1", 0.0)
    plan.command("mutate StimEpoch sample_rate_hz=0 n=0 count=1", 0.0)
    d = Decoder()
    frames = d.feed(plan.process("board", _stream(2), 0.0))
    assert d.counters.bad_crc == 1  # the corrupted heartbeat
    epochs = [f.message for f in frames if isinstance(f.message, StimEpoch)]
    # every matching rule applies: the first epoch is mutated and sent twice
    assert [(e.stim_counter, e.sample_rate_hz, e.samples.shape) for e in epochs] == [
        (0, 0, (2, 0)), (0, 0, (2, 0)), (1, 20000, (2, 3))]


def test_delay_holds_a_frame_while_others_pass_and_reorder_swaps():
    plan = FaultPlan()
    plan.command("delay StimEpoch 300 count=1", 0.0)
    first = _frames(plan.process("board", _stream(2), 1.0))
    assert _epochs(first) == [1]
    assert plan.release(1.29) == {}
    late = _frames(plan.release(1.3)["board"])
    assert _epochs(late) == [0]
    plan.command("reorder StimEpoch count=1", 0.0)
    frames = _frames(plan.process("board", _stream(2, first_seq=50), 2.0))
    assert [type(f.message).__name__ for f in frames] == ["BoardHeartbeat", "BoardHeartbeat", "StimEpoch",
                                                         "StimEpoch"]
    assert [f.seq for f in frames] == [50, 52, 51, 53]


def test_replay_inject_header_garbage_and_renumber():
    plan = FaultPlan(seed=1)
    plan.process("board", _stream(4), 0.0)
    answer, out = plan.command("replay StimEpoch n=2", 0.0)
    assert answer == "ok: replayed 2 StimEpoch frame(s)"
    assert [(f.seq, f.message.stim_counter) for f in _frames(out["board"])] == [(15, 2), (17, 3)]
    answer, out = plan.command("inject StimEpoch stim_counter=99 sample_rate_hz=0", 0.0)
    [f] = _frames(out["board"])
    assert f.seq == 18 and f.message.stim_counter == 99 and f.message.sample_rate_hz == 0
    answer, out = plan.command("header StimEpoch 131072", 0.0)
    assert "131072 bytes (within the type's maximum)" in answer and len(out["board"]) == 16
    assert len(plan.command("garbage 33 to=board", 0.0)[1]["host"]) == 33
    plan.command("renumber on", 0.0)
    plan.command("drop BoardHeartbeat", 0.0)
    frames = _frames(plan.process("board", _stream(3, first_seq=100), 0.0))
    assert [f.seq for f in frames] == [18, 19, 20]  # no gap where heartbeats were dropped
    answer, out = plan.command("replay StimEpoch n=1", 0.0)
    assert [f.seq for f in _frames(out["board"])] == [21]  # a replay with a fresh number


def test_host_direction_and_stats():
    plan = FaultPlan()
    plan.command("drop HostHeartbeat count=1", 0.0)
    data = encode(HostHeartbeat(1), 0) + encode(HostHeartbeat(2), 1)
    assert [f.message.counter for f in _frames(plan.process("host", data, 0.0))] == [2]
    answer, _ = plan.command("stats", 0.0)
    stats = json.loads(answer[len("ok: "):])
    assert stats["frames"]["host"]["HostHeartbeat"] == {"drop": 1, "seen": 1}


@pytest.mark.parametrize(("line", "words"), [
    ("explode StimEpoch", "unknown command 'explode'"),
    ("drop", "which message type"),
    ("drop Nonsense", "unknown message type 'Nonsense'"),
    ("drop StimEpoch p=2", "p=2 out of range 0-1"),
    ("drop StimEpoch count=x", "count='x' is not a number"),
    ("delay StimEpoch", "how many milliseconds"),
    ("mutate StimEpoch", "which fields"),
    ("mutate StimEpoch colour=red", "StimEpoch has no field 'colour'"),
    ("mutate StimEpoch output=LEFT", "is not one of PROBE, APS"),
    ("mutate * a=1", "one message type"),
    ("replay *", "unknown message type '*'"),
    ("garbage 10 to=moon", "to=engine or to=board"),
    ("renumber maybe", "renumber on|off"),
    ("drop StimEpoch 'unclosed", "cannot read"),
])
def test_bad_commands_name_the_problem(line, words):
    with pytest.raises(FaultSyntaxError, match=words):
        FaultPlan().command(line, 0.0)


# ----------------------------------------------------------------------------- end to end


class SteppedBoardPort:
    """The virtual board's port as the proxy reads it; ``catch_up`` waits until the proxy
    has read (and so advanced) the board to the clock's time and forwarded what it read."""

    def __init__(self, port, clock) -> None:
        self.port, self.clock, self.url = port, clock, port.url
        self.cond = threading.Condition()
        self.mark, self.starts = -1.0, 0

    def read(self, max_bytes: int = 65536) -> bytes:
        with self.cond:
            if self.clock.now() >= self.mark:
                self.starts += 1
                self.cond.notify_all()
        return self.port.read(max_bytes)

    def write(self, data: bytes) -> None:
        self.port.write(data)

    def close(self) -> None:
        self.port.close()

    def catch_up(self) -> None:
        with self.cond:
            self.mark, self.starts = self.clock.now(), 0
            assert self.cond.wait_for(lambda: self.starts >= 2, 10.0), "the proxy did not read the board"


class ProxyRig:
    """Virtual board -> LinkProxy -> BoardLink (TCP), one ManualClock; a FlowSupervisor
    fed from the link's messages as the engine will feed it."""

    def __init__(self, seed: int = 3) -> None:
        self.clock = ManualClock(0.0)
        self.ports: list[SteppedBoardPort] = []

        def factory():
            port = SteppedBoardPort(open_sim(f"sim://?seed={seed}&pump=0", clock=self.clock, timeout_s=0.002),
                                    self.clock)
            self.ports.append(port)
            return port

        factory.url = "sim://"
        self.proxy = LinkProxy(port_factory=factory, engine=0, clock=self.clock, read_timeout_s=0.002).start()
        self.lock = threading.Lock()
        self.messages: list = []
        self.events: list = []
        self.flow = FlowSupervisor()
        self.link = BoardLink(self.proxy.address, clock=self.clock, on_message=self._msg, on_event=self._evt,
                              tick_s=3600)
        self.link.start()
        self.findings: list = []

    @property
    def board(self):
        return self.ports[-1].port.board

    def _msg(self, m) -> None:
        now = self.clock.now()
        with self.lock:
            self.messages.append(m)
            if isinstance(m, StimEpoch):
                self.flow.epoch(now, m.output, m.board_time_us)
            elif isinstance(m, EmgBlock):
                self.flow.emg(now, m.board_time_us)
            elif isinstance(m, BoardStatus):
                self.flow.status(now, m.board_time_us)

    def _evt(self, e) -> None:
        with self.lock:
            self.events.append(e)

    def barrier(self) -> None:
        """Everything the board sent before now has reached the application (frames
        arrive in order: the Ack of a command sent now comes after them)."""
        assert isinstance(self.link.request(Stimulate(Output.PROBE, StimMode.STOP), timeout_s=10.0), Ack)

    def start(self) -> None:
        self.step(0.02)
        assert self.link.handshake(timeout_s=10.0).simulated
        assert isinstance(self.link.request(ConfigureAcquisition(), timeout_s=10.0), Ack)
        now = self.clock.now()
        self.flow.reset(now)
        self.flow.acquisition(now, stream_rate_hz=20000, block_samples=400, epoch_window_s=0.06)

    def stimulate(self, rate_hz: float, token: int | None = None) -> None:
        ok = self.link.request(Stimulate(Output.APS, StimMode.CONTINUOUS, 1000, 100, int(rate_hz * 1000),
                                         config_token=token), timeout_s=10.0)
        assert isinstance(ok, Ack)
        self.flow.output(self.clock.now(), Output.APS, rate_hz)

    def step(self, dt: float = 0.01) -> None:
        self.clock.advance(dt)
        self.link.supervise_once()
        self.ports[-1].catch_up()

    def run(self, seconds: float, dt: float = 0.01, barrier_every: int = 5) -> None:
        for i in range(int(round(seconds / dt))):
            self.step(dt)
            if i % barrier_every == barrier_every - 1:
                self.barrier()
                with self.lock:
                    self.findings.append((self.clock.now(), self.flow.check(self.clock.now())))

    def command(self, line: str) -> str:
        answer = self.proxy.command(line)
        assert answer.startswith("ok"), answer
        return answer

    def of(self, cls) -> list:
        with self.lock:
            return [m for m in self.messages if isinstance(m, cls)]

    def kinds(self) -> list:
        with self.lock:
            return [e.kind for e in self.events]

    def close(self) -> None:
        self.link.close()
        self.proxy.close()


@pytest.fixture
def rig():
    r = ProxyRig()
    try:
        r.start()
        yield r
    finally:
        r.close()


def _alive(rig: ProxyRig) -> None:
    assert all(t.is_alive() for t in rig.link._threads), "a link thread died"
    assert LinkEventKind.LOST not in rig.kinds()
    assert rig.link.connected


def test_dropped_epochs_are_named_by_flow_supervision_on_time(rig):
    rig.stimulate(2.0)
    rig.run(2.0)
    assert len(rig.of(StimEpoch)) >= 3 and all(not f for _t, f in rig.findings)
    rig.command("drop StimEpoch")  # a noisy line that loses every big frame: heartbeats still come
    rig.barrier()
    last = max(t for t, f in rig.findings)  # (barrier times; the exact last arrival is in the flow)
    last_epoch = rig.flow._epochs[Output.APS].last
    rig.run(2.0, barrier_every=1)
    first = next((t, f) for t, f in rig.findings if t > last and f)
    t_alarm, found = first
    assert [f.key for f in found] == ["epochs:APS"]
    assert found[0].text.startswith("no stimulus responses from the vagal electrode for 1.")
    assert found[0].text.endswith("(expected 2 per second)")
    # two periods + margin after the last epoch, found at the next check (every 10 ms)
    assert last_epoch + 1.0 + 0.08 <= t_alarm <= last_epoch + 1.0 + 0.08 + 0.011
    _alive(rig)  # heartbeats kept the link up: only flow supervision saw it
    rig.command("clear")
    rig.run(1.5)
    assert rig.findings[-1][1] == []


def test_duplicated_and_replayed_epochs_never_reach_the_application(rig):
    rig.stimulate(5.0)
    rig.command("duplicate StimEpoch count=3")
    rig.run(1.0)
    rig.command("replay StimEpoch n=4")
    rig.barrier()
    rig.command("renumber on")  # the same old epochs with fresh frame numbers
    rig.command("replay StimEpoch n=4")
    rig.run(0.5)
    counters = [e.stim_counter for e in rig.of(StimEpoch)]
    assert counters == sorted(set(counters))  # each stimulus once, in order
    h = rig.link.health()
    # 3 duplicates, 4 replays by frame number, 4 by stimulus counter (the newest of them,
    # if it is the last delivered one, counts as a duplicate)
    assert h["duplicates"] >= 3 and h["duplicates"] + h["replayed"] == 3 + 8
    assert LinkEventKind.INVALID_DATA in rig.kinds()
    _alive(rig)


def test_corrupted_epochs_are_crc_errors_and_gaps(rig):
    rig.stimulate(5.0)
    rig.run(0.6)
    rig.command("corrupt StimEpoch count=2")
    rig.run(1.0)
    h = rig.link.health()
    assert h["crc_errors"] >= 2 and h["gaps"]["epochs_missed"] == 2 and h["gaps"]["frames_missed"] >= 2
    assert h["invalid"] == 0  # line noise is not invalid data
    assert LinkEventKind.INVALID_DATA not in rig.kinds()
    _alive(rig)


def test_injected_invalid_epochs_raise_invalid_data_and_are_never_delivered(rig):
    rig.stimulate(2.0)
    rig.run(0.6)
    rig.command("renumber on")  # the injected frames take no real frame's number
    n = len(rig.of(StimEpoch))
    for i, fields in enumerate(["sample_rate_hz=0", "n=0", "set_current_uA=4000000000"]):
        rig.command(f"inject StimEpoch stim_counter={1000 + i} {fields}")
    rig.run(0.3)
    bad = [e for e in rig.of(StimEpoch) if e.stim_counter >= 1000]
    assert bad == []
    h = rig.link.health()
    assert h["invalid_by_reason"] == {"sample_rate": 1, "sample_count": 1, "current": 1}
    [ev] = [e for e in rig.events if e.kind is LinkEventKind.INVALID_DATA]
    assert ev.detail.startswith("board sends invalid data: stimulus epoch with ")
    assert "3 invalid frames within 10 s" in ev.detail
    rig.run(0.6)
    assert len(rig.of(StimEpoch)) > n  # the real ones still come
    _alive(rig)


def test_delayed_and_reordered_epochs_never_arrive_out_of_order(rig):
    rig.stimulate(5.0)
    rig.run(0.6)
    rig.command("delay StimEpoch 300 count=1")  # overtaken by the next epoch (200 ms later)
    rig.run(1.0)
    rig.command("reorder StimEpoch count=1")
    rig.run(1.0)
    counters = [e.stim_counter for e in rig.of(StimEpoch)]
    assert counters == sorted(set(counters))
    h = rig.link.health()
    # the delayed epoch came after newer ones: dropped as replayed, its stimulus missed
    assert h["replayed"] == 1 and h["gaps"]["epochs_missed"] == 1
    [rejected] = h["recent_rejections"]
    assert rejected["reason"] == "replayed" and rejected["text"].startswith("stimulus epoch replayed: frame number ")
    # the reordered one swapped places with a frame of another stream: within its own
    # stream it is in order, so it is used (the frame that overtook it counts as a stray)
    assert h["stray_frames"] == 1
    _alive(rig)


def test_a_board_time_of_2_63_is_refused(rig):
    rig.stimulate(4.0)
    rig.run(0.5)
    rig.command("mutate StimEpoch board_time_us=9223372036854775808 count=3")
    rig.run(1.0)
    assert all(e.board_time_us < 10**9 for e in rig.of(StimEpoch))
    assert rig.link.health()["invalid_by_reason"] == {"board_time": 3}
    assert any("implausible board time" in e.detail for e in rig.events if e.kind is LinkEventKind.INVALID_DATA)
    _alive(rig)


def test_a_header_announcing_128_kib_is_no_link_loss(rig):
    rig.run(0.3)
    for _ in range(3):
        rig.command("header StimEpoch 131072")
        rig.run(0.7)  # longer than the 500 ms link timeout
        rig.command("header BoardHeartbeat 131072")  # beyond a heartbeat's maximum: refused at once
        rig.run(0.2)
    h = rig.link.health()
    assert h["truncated"] == 3 and h["oversize"] == 3
    _alive(rig)


def test_an_unsupported_board_is_refused_and_nothing_stimulates(rig):
    rig.stimulate(2.0)
    rig.run(0.5)
    rig.command("mutate Capabilities protocol_version=2")
    n = len(rig.of(StimEpoch))
    with pytest.raises(ProtocolError, match="speaks protocol version 2; this host speaks 1"):
        rig.link.handshake(timeout_s=10.0)
    [ev] = [e for e in rig.events if e.kind is LinkEventKind.INCOMPATIBLE]
    assert "protocol version 2 (this monitor speaks version 1)" in ev.detail
    with pytest.raises(BoardRefused, match="not stimulating"):
        rig.link.send(Stimulate(Output.APS, StimMode.CONTINUOUS, 1000, 100, 2000))
    rig.run(1.0)
    # the link stopped the board's outputs itself, and passes none of its stream on
    assert Output.APS not in rig.board.stimulating
    assert len(rig.of(StimEpoch)) == n
    assert rig.link.health()["refused_frames"] > 0 and rig.link.board_state == "refused"
    rig.command("clear")
    rig.link.handshake(timeout_s=10.0)
    assert LinkEventKind.BOARD_ACCEPTED in rig.kinds() and rig.link.board_state == "accepted"


def test_the_configuration_token_comes_back_through_the_link(rig):
    rig.stimulate(4.0, token=501)
    rig.run(0.6)
    rig.stimulate(4.0, token=502)
    rig.run(0.6)
    tokens = [e.config_token for e in rig.of(StimEpoch)]
    assert tokens[0] == 501 and tokens[-1] == 502 and tokens == sorted(tokens)
    # an epoch naming a token the host never gave is refused
    rig.command("renumber on")
    rig.command("inject StimEpoch stim_counter=5000 config_token=777")
    rig.run(0.2)
    assert 777 not in [e.config_token for e in rig.of(StimEpoch)]
    assert rig.link.health()["invalid_by_reason"] == {"token": 1}


def test_a_token_is_not_sent_to_a_board_that_does_not_speak_11():
    clock = ManualClock()
    from firmware_bridge.sim.board import VirtualBoard

    def factory():
        port = open_sim("sim://?seed=1&pump=0", clock=clock, timeout_s=0.002)
        board: VirtualBoard = port.board
        board.capabilities = Capabilities(1, "old-1.0", "OLD")  # a 1.0 board
        return port

    factory.url = "sim://old"
    link = BoardLink(port_factory=factory, clock=clock, tick_s=3600).start()
    try:
        assert link.handshake(timeout_s=5.0).config_token is False
        assert not link.supports_config_token
        link.request(Stimulate(Output.APS, StimMode.STOP, config_token=9), timeout_s=5.0)
        assert link.counters["tokens_stripped"] == 1
    finally:
        link.close()


# ----------------------------------------------------------------------------- the command


def _lnm(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "app.cli", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def test_link_proxy_command_between_board_sim_and_a_link(tmp_path):
    board = _lnm("board-sim", "--tcp", "0", "--seed", "2")
    proxy = None
    link = None
    try:
        board_url = LineReader(board.stdout).expect("socket://", 30.0).strip()
        assert board_url.startswith("socket://127.0.0.1:")
        proxy = _lnm("link-proxy", "--board", board_url, "--tcp", "0", "--control", f"unix:{tmp_path / 'ctl'}",
                     "--fault", "drop StimEpoch count=2")
        out = LineReader(proxy.stdout)
        engine_url = out.expect("socket://", 30.0).strip()
        control = out.expect("control:", 30.0).strip()
        assert engine_url.startswith("socket://127.0.0.1:") and control == f"control: unix:{tmp_path / 'ctl'}"
        events = []
        link = BoardLink(engine_url, on_event=events.append).start()
        assert link.handshake(timeout_s=10.0).simulated
        assert isinstance(link.request(ConfigureAcquisition(), timeout_s=10.0), Ack)
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(tmp_path / "ctl"))
            f = s.makefile("rw")
            f.write("rules\ninject Nonsense\nmutate BoardStatus uptime_s=99999 count=3\nquit\n")
            f.flush()
            answers = [f.readline().strip() for _ in range(4)]
        assert answers[0] == "ok: 1: drop StimEpoch count=2 (applied 0)"
        assert answers[1].startswith("error: unknown message type 'Nonsense'")
        assert answers[2].startswith("ok: rule 2: mutate BoardStatus uptime_s=99999")
        assert answers[3] == "ok: bye"
        assert wait_until(lambda: link.health()["invalid_by_reason"].get("status") == 3, timeout=20.0)
        assert wait_until(lambda: any(e.kind is LinkEventKind.INVALID_DATA for e in events), timeout=10.0)
        assert not any(e.kind is LinkEventKind.LOST for e in events)
    finally:
        if link is not None:
            link.close()
        for p in (proxy, board):
            if p is not None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
    assert proxy.returncode == 0


def test_link_proxy_bad_options_exit_2_with_one_line():
    p = _lnm("link-proxy", "--board", "sim://", "--pty", "--fault", "drop StimEpoch p=7")
    _out, err = p.communicate(timeout=60)
    assert p.returncode == 2
    assert err.strip() == "lnm link-proxy: --fault 'drop StimEpoch p=7': p=7 out of range 0-1"
    p = _lnm("link-proxy", "--board", "sim://", "--pty", "--control", "udp:9")
    _out, err = p.communicate(timeout=60)
    assert p.returncode == 2 and "expected tcp:PORT or unix:PATH" in err

