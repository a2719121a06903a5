"""BoardLink against the virtual board opened by URL (``sim://``), on a ManualClock:
the board's safety contract seen through the link, refusals, and the link's supervision
when the board goes mute, is unplugged or sends garbage."""

from __future__ import annotations

import json
import threading

import pytest

from firmware_bridge.clock import ManualClock
from firmware_bridge.link import BoardLink, LinkEventKind
from firmware_bridge.messages import (
    Ack,
    BoardHeartbeat,
    BoardStatus,
    ConfigureAcquisition,
    Fault,
    Nack,
    NackReason,
    Output,
    SimControl,
    StimEpoch,
    StimMode,
    Stimulate,
)
from firmware_bridge.sim import open_sim



class SteppedPort:
    """Wraps the virtual board's port so a test can wait until the link's reader has
    caught up with the clock (two reads started at the current time: the first one's
    bytes have then been decoded and stamped)."""

    def __init__(self, port, clock) -> None:
        self.port, self.clock, self.url = port, clock, port.url
        self.cond = threading.Condition()
        self.mark = -1.0
        self.starts = 0

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

    def catch_up(self, timeout_s: float = 5.0) -> None:
        with self.cond:
            self.mark, self.starts = self.clock.now(), 0
            if not self.cond.wait_for(lambda: self.starts >= 2, timeout_s):
                raise AssertionError("the link's reader did not read the board in time")


class Rig:
    def __init__(self, url: str = "sim://?seed=4&pump=0") -> None:
        self.clock = ManualClock(0.0)
        self.messages: list = []
        self.events: list = []
        self.lock = threading.Lock()
        self.ports: list[SteppedPort] = []

        def factory():
            # open_sim directly for a short read timeout (open_port's path is tested below)
            port = SteppedPort(open_sim(url, clock=self.clock, timeout_s=0.001), self.clock)
            self.ports.append(port)
            return port

        factory.url = url
        # tick_s large: this test drives supervision itself, step by step
        self.link = BoardLink(
            port_factory=factory, clock=self.clock, on_message=self._msg, on_event=self._evt, tick_s=3600
        )
        self.link.start()

    @property
    def board(self):
        return self.ports[-1].port.board

    def _msg(self, m) -> None:
        with self.lock:
            self.messages.append(m)

    def _evt(self, e) -> None:
        with self.lock:
            self.events.append(e)

    def run(self, seconds: float, step: float = 0.01) -> None:
        """Advance the shared clock; the link heartbeats and supervises at every step,
        and its reader thread reads (and so advances) the board in between."""
        for _ in range(int(round(seconds / step))):
            self.clock.advance(step)
            self.link.supervise_once()
            if self.link.port_open:
                self.ports[-1].catch_up()

    def of(self, kind) -> list:
        with self.lock:
            return [m for m in self.messages if isinstance(m, kind)]

    def kinds(self) -> list:
        with self.lock:
            return [e.kind for e in self.events]

    def close(self) -> None:
        self.link.close()


@pytest.fixture
def rig():
    r = Rig()
    r.run(0.05)
    caps = r.link.handshake(timeout_s=2.0)
    assert caps.simulated
    assert isinstance(r.link.request(ConfigureAcquisition(), timeout_s=2.0), Ack)
    yield r
    r.close()


def test_host_silence_stops_stimulation_at_500_ms_and_beeps_at_2_s(rig):
    ok = rig.link.request(Stimulate(Output.APS, StimMode.CONTINUOUS, 1000, 100, 10000), timeout_s=2.0)
    assert isinstance(ok, Ack)
    rig.run(1.0)
    assert rig.board.stimulating == (Output.APS,)
    assert len(rig.of(StimEpoch)) >= 8
    rig.link.pause_heartbeat()
    rig.run(2.3)
    statuses = rig.of(BoardStatus)
    silent = next(s for s in statuses if s.faults & Fault.HOST_SILENT)
    beeping = next(s for s in statuses if s.faults & Fault.BACKUP_BEEPER)
    # the board measured the host's silence on the same clock: 500 ms and 2 s
    assert 500 <= silent.host_heartbeat_age_ms <= 520 and silent.stimulating == ()
    assert 2000 <= beeping.host_heartbeat_age_ms <= 2020
    assert rig.board.beeper_on and rig.board.stimulating == ()
    # no stimulus after the stop
    assert all(e.board_time_us < silent.board_time_us for e in rig.of(StimEpoch))
    # the link itself stayed up: the board kept talking
    assert LinkEventKind.LOST not in rig.kinds()
    # the host comes back: beeper off, flags cleared, stimulation NOT resumed by itself
    rig.link.resume_heartbeat()
    n_epochs = len(rig.of(StimEpoch))
    rig.run(0.5)
    assert not rig.board.beeper_on
    assert not rig.of(BoardStatus)[-1].faults & (Fault.HOST_SILENT | Fault.BACKUP_BEEPER)
    assert len(rig.of(StimEpoch)) == n_epochs and rig.board.stimulating == ()


def test_out_of_range_commands_are_refused_through_the_link(rig):
    caps = rig.link.capabilities
    rig.run(0.2)
    too_much = rig.link.request(
        Stimulate(Output.PROBE, StimMode.SINGLE, current_uA=caps.max_current_uA + 1), timeout_s=2.0
    )
    assert isinstance(too_much, Nack) and too_much.reason is NackReason.OUT_OF_RANGE
    assert "current" in too_much.detail
    too_wide = rig.link.request(
        Stimulate(Output.PROBE, StimMode.SINGLE, pulse_width_us=caps.max_pulse_width_us + 50), timeout_s=2.0
    )
    assert isinstance(too_wide, Nack) and too_wide.reason is NackReason.OUT_OF_RANGE
    bad_rate = rig.link.request(ConfigureAcquisition(sample_rate_hz=12345), timeout_s=2.0)
    assert isinstance(bad_rate, Nack) and bad_rate.reason is NackReason.OUT_OF_RANGE
    rig.run(0.2)
    assert rig.board.stimulating == () and not rig.of(StimEpoch)  # refused = no effect


def test_mute_board_is_lost_then_restored(rig):
    rig.run(0.3)
    assert rig.link.connected
    rig.link.send(SimControl("mute", json.dumps({"duration_s": 1.5})))  # its Ack is muted too
    t0 = rig.clock.now()
    rig.run(2.0)
    lost = next(e for e in rig.events if e.kind is LinkEventKind.LOST)
    restored = next(e for e in rig.events if e.kind is LinkEventKind.RESTORED)
    assert 0.45 <= lost.t - t0 <= 0.6  # last frame just before the mute, then 500 ms
    assert restored.t == pytest.approx(t0 + 1.5, abs=0.12)
    assert rig.link.connected
    assert rig.link.counters["frames_missed"]["board"] > 0


def test_unplugged_board_restarts_its_sequence_and_link_recovers(rig):
    rig.link.send(SimControl("unplug", json.dumps({"duration_s": 1.0})))
    rig.run(2.0)
    kinds = rig.kinds()
    assert LinkEventKind.LOST in kinds and LinkEventKind.RESTORED in kinds
    assert rig.link.counters["seq_restarts"]["board"] == 1
    assert rig.of(BoardHeartbeat)[-1].board_time_us < 1_500_000  # a fresh board clock
    # the link said Hello again by itself after the restore
    assert rig.link.capabilities is not None and rig.link.connected


def test_garbage_and_corrupt_frames_are_counted_and_the_link_survives(rig):
    rig.run(0.2)
    rig.link.request(SimControl("garbage", json.dumps({"n_bytes": 500})), timeout_s=2.0)
    rig.link.send(SimControl("corrupt", json.dumps({"frames": 3})))  # its own Ack goes out damaged
    rig.run(0.5)
    c = rig.link.counters
    assert c["garbage"] >= 1 and c["bytes_discarded"] >= 500
    assert c["bad_crc"] + c["bad_header_crc"] >= 3
    assert LinkEventKind.LOST not in rig.kinds()
    assert isinstance(rig.link.request(Stimulate(Output.PROBE, StimMode.STOP), timeout_s=2.0), Ack)


def test_sim_url_opens_through_the_default_factory():
    link = BoardLink("sim://?seed=2")
    try:
        link.start()
        assert link.handshake(timeout_s=2.0).simulated
        assert link.wait_connected(2.0)
    finally:
        link.close()
