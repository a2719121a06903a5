"""Property-based fuzzing through the real ``BoardLink`` (socket transport, its reader and
supervisor threads, a ManualClock): a genuine board's heartbeats interleaved with garbage,
lying headers and CRC-valid frames of every board type with arbitrary field values and
frame numbers.

Invariants: the link's threads stay alive; nothing that breaks PROTOCOL.md section 12
reaches ``on_message``; every decoded frame is accounted for (accepted, or counted as
invalid, duplicate, replayed or refused); the link is never reported lost while the
genuine heartbeats arrive every 100 ms.

The fuzzed frames are corruption or a confused board, not impersonation: none takes the
very number the genuine board's next frame will carry (a man-in-the-middle that does that
can hijack any link; ``renumber`` in ``lnm link-proxy`` tests that case for content).
"""

from __future__ import annotations

import socket

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from waiting import wait_until

from firmware_bridge.clock import ManualClock
from firmware_bridge.codec import MsgType, encode, header_crc
from firmware_bridge.link import BoardLink, LinkEventKind
from firmware_bridge.messages import (
    Ack,
    BoardHeartbeat,
    BoardStatus,
    Capabilities,
    Electrode,
    EmgBlock,
    Fault,
    ImpedanceResult,
    Nack,
    NackReason,
    Output,
    StimEpoch,
)
from firmware_bridge.transport import PortError, SocketPort
from firmware_bridge.validate import MAX_BOARD_TIME_US, check_capabilities

CAPS = Capabilities(protocol_version=1, firmware_version="fuzz-1", board_id="FZ1")
HB_S = 0.1

u32 = st.integers(0, 2**32 - 1)
# values around the edges the rules care about, and anything at all
times = st.one_of(st.integers(0, 2**64 - 1), st.integers(0, 20_000_000), st.just(2**63))
rates = st.one_of(st.sampled_from([0, 1, 10000, 20000, 5000, 40000]), u32)
small = st.integers(-3, 3)


@st.composite
def samples(draw):
    ch = draw(st.sampled_from([0, 1, 2, 3])) or 1
    n = draw(st.sampled_from([0, 1, 200, 400, 1200, 1201, 4097]))
    return np.zeros((ch, n), np.int32)


def _epoch(draw):
    s = draw(samples())
    return StimEpoch(draw(times), draw(u32 | st.integers(0, 5)), draw(st.sampled_from(list(Output))),
                     draw(st.integers(0, 20000) | u32), draw(st.integers(-2, 12000)), draw(st.integers(0, 300)),
                     draw(rates), draw(st.integers(0, s.shape[1])), draw(st.integers(0, 3) | u32), s,
                     config_token=draw(st.none() | st.integers(0, 3)))


@st.composite
def board_messages(draw):
    kind = draw(st.sampled_from(["epoch", "emg", "hb", "status", "imp", "ack", "nack", "caps"]))
    if kind == "epoch":
        return _epoch(draw)
    if kind == "emg":
        return EmgBlock(draw(times), draw(st.integers(0, 5000) | st.integers(0, 2**64 - 1)), draw(rates),
                        draw(st.integers(0, 3) | u32), draw(samples()))
    if kind == "hb":
        return BoardHeartbeat(draw(times), draw(u32 | st.integers(0, 50)))
    if kind == "status":
        t = draw(times)
        return BoardStatus(t, Fault(draw(st.integers(0, 255))), tuple(draw(st.sets(st.sampled_from(list(Output))))),
                           draw(u32), draw(st.just(min(t // 1_000_000, 2**32 - 1)) | u32))
    if kind == "imp":
        return ImpedanceResult(draw(times), tuple((e, draw(st.integers(-2, 10**9))) for e in Electrode))
    if kind == "ack":
        return Ack(draw(u32 | st.integers(0, 5)))
    if kind == "nack":
        return Nack(draw(u32 | st.integers(0, 5)), draw(st.sampled_from(list(NackReason))), "x")
    return Capabilities(draw(st.integers(0, 3)), "f", "b", channels=draw(st.integers(0, 3)),
                        max_current_uA=draw(st.integers(0, 40000)))


items = st.lists(st.one_of(
    st.tuples(st.just("hb")),
    st.tuples(st.just("frame"), board_messages(), st.one_of(u32, st.integers(1, 5), st.integers(-5, -1))),
    st.tuples(st.just("garbage"), st.binary(min_size=1, max_size=64)),
    st.tuples(st.just("header"),
              st.sampled_from([MsgType.STIM_EPOCH, MsgType.BOARD_HEARTBEAT, MsgType.EMG_BLOCK, 0x5A]),
              st.sampled_from([0, 24, 1000, 131072, 131073, 2**32 - 1])),
), min_size=1, max_size=25)


def _plausible(m) -> bool:
    """What nothing delivered may break (independent of the validator's code)."""
    t = getattr(m, "board_time_us", 0)
    if t > MAX_BOARD_TIME_US:
        return False
    if isinstance(m, StimEpoch):
        ch, n = m.samples.shape
        return (m.sample_rate_hz in CAPS.sample_rates_hz and 1 <= ch <= 2 and n >= 1 and n - m.pre_samples >= 1
                and n <= 0.3 * m.sample_rate_hz + 1 and m.nv_per_count >= 1 and m.set_current_uA <= CAPS.max_current_uA
                and (m.delivered_current_uA == -1 or 0 <= m.delivered_current_uA <= 11100)
                and CAPS.min_pulse_width_us <= m.pulse_width_us <= CAPS.max_pulse_width_us and m.config_token is None)
    if isinstance(m, EmgBlock):
        ch, n = m.samples.shape
        return (m.sample_rate_hz >= 1 and any(r % m.sample_rate_hz == 0 and r // m.sample_rate_hz <= 100
                                              for r in CAPS.sample_rates_hz)
                and 1 <= ch <= 2 and 1 <= n <= 4096 and m.nv_per_count >= 1)
    if isinstance(m, BoardStatus):
        return abs(m.uptime_s - t / 1e6) <= 2
    if isinstance(m, (ImpedanceResult, Ack, Nack)):
        return False  # nothing was asked after the Hello that Capabilities answered
    if isinstance(m, Capabilities):
        return m == CAPS or check_capabilities(m) == []
    return isinstance(m, BoardHeartbeat)


class Rig:
    def __init__(self) -> None:
        self.clock = ManualClock(100.0)
        self.host_end, self.board_end = socket.socketpair()
        self.board_end.setblocking(False)
        self.opened = 0

        def factory():
            self.opened += 1
            if self.opened > 1:
                raise PortError("socketpair://fuzz: gone")
            return SocketPort("socketpair://fuzz", self.host_end, timeout_s=0.01)

        factory.url = "socketpair://fuzz"
        self.delivered: list = []
        self.events: list = []
        self.link = BoardLink(port_factory=factory, clock=self.clock, tick_s=3600, on_message=self.delivered.append,
                              on_event=self.events.append, invalid_burst_count=3, invalid_burst_window_s=10.0)
        self.link.start()
        self.sent = 0
        self.seq = 0
        self.hb = 0
        self.board_t = 5_000_000

    def write(self, data: bytes) -> None:
        self.board_end.sendall(data)
        self.sent += len(data)
        assert wait_until(lambda: self.link.counters["bytes_in"] == self.sent, timeout=20.0, interval=0.0005), \
            "the link stopped reading"
        try:
            while self.board_end.recv(65536):  # what the host sent: not needed here
                pass
        except BlockingIOError:
            pass

    def genuine(self, message) -> None:
        self.write(encode(message, self.seq))
        self.seq += 1

    def heartbeat(self) -> None:
        self.clock.advance(HB_S)
        self.board_t += int(HB_S * 1e6)
        self.genuine(BoardHeartbeat(self.board_t, self.hb))
        self.hb += 1
        self.link.supervise_once()

    def close(self) -> None:
        self.link.close()
        self.board_end.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(items=items)
def test_fuzzed_board_traffic_through_the_real_link(items):
    rig = Rig()
    try:
        _replay(rig, items)
    finally:
        rig.close()


def test_a_back_dated_heartbeat_numbered_0_does_not_take_the_links_clock():
    """A CI falsifying example, replayed: a CRC-valid heartbeat at board time 0 numbered 0
    (three behind the genuine numbering) looks like a restarted board's first frame, but the
    next genuine heartbeat (board time 5.3 s, counter 2) goes on from the old clock, not from
    it. It was taken as a restart: the link's board time went back to 0, every genuine
    heartbeat after it was dropped as "jumped ahead" and the link reported the board lost."""
    rig = Rig()
    try:
        _replay(rig, [("garbage", b"\x00"), ("frame", BoardHeartbeat(board_time_us=0, counter=8), -3),
                      ("hb",), ("hb",), ("hb",)])
        v = rig.link._rx.validator
        assert v.stats["board_restarts"] == 0 and v.stats["replayed"] == 1 and v.stats["invalid"] == 0
        beats = [m for m in rig.delivered if isinstance(m, BoardHeartbeat)]
        assert [m.counter for m in beats] == list(range(rig.hb))  # every genuine heartbeat, in order
        assert all(m.board_time_us > 5_000_000 for m in beats)  # and nothing from the stray one
    finally:
        rig.close()


def _replay(rig: Rig, items) -> None:
    """Send ``items`` between the genuine board's heartbeats; check the invariants."""
    rig.genuine(CAPS)  # answers the link's own Hello
    rig.heartbeat()
    for item in items:
        if item[0] == "hb":
            rig.heartbeat()
        elif item[0] == "frame":
            _kind, message, seq = item
            seq = seq if seq > 5 else (rig.seq + seq) % 2**32  # near the genuine numbering, never its next
            try:
                rig.write(encode(message, seq))
            except ValueError:
                pass  # a value the wire cannot carry
        elif item[0] == "garbage":
            rig.write(item[1])
        else:
            head = bytes.fromhex("a55a01") + bytes([item[1]]) + bytes(2) + (rig.seq + 7).to_bytes(4, "little") \
                + item[2].to_bytes(4, "little")
            rig.write(head + header_crc(head).to_bytes(2, "little"))
        rig.heartbeat()  # the genuine board keeps its 100 ms beat
    rig.heartbeat()
    # (the reader delivers a chunk's messages after counting its bytes)
    assert wait_until(lambda: len(rig.delivered) == rig.link.health()["frames_ok"], timeout=10.0, interval=0.001)
    # the threads are alive and the link never reported lost
    assert all(t.is_alive() for t in rig.link._threads)
    assert not [e for e in rig.events if e.kind is LinkEventKind.LOST]
    assert rig.link.connected
    # nothing implausible was delivered; the genuine heartbeats were
    bad = [m for m in rig.delivered if not _plausible(m)]
    assert bad == []
    # every decoded frame is accounted for
    c = rig.link.counters
    h = rig.link.health()
    codec_refused = c["malformed"] + c["unknown_type"] + c["bad_version"]
    held = 1 if rig.link._rx.validator._s.held is not None else 0
    assert c["frames"] == (h["frames_ok"] + h["invalid"] - codec_refused + h["duplicates"] + h["replayed"]
                           + h["refused_frames"] + held)
