"""Frame validation (PROTOCOL.md section 12): the pure ``FrameValidator`` and ``Receiver``.

The virtual board's own stream, whatever the host does, is accepted whole (no false
rejections); every kind of CRC-valid but wrong frame is dropped and counted by reason;
duplicates and replays are dropped; a board restart is recognised, a stray frame
numbered 0 is not; unsupported boards are refused; a burst of invalid frames is an event.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware_bridge.clock import ManualClock
from firmware_bridge.codec import Decoder, Frame, encode
from firmware_bridge.link import LinkEventKind, Receiver
from firmware_bridge.messages import (
    Ack,
    BoardHeartbeat,
    BoardStatus,
    Capabilities,
    ConfigureAcquisition,
    EmgBlock,
    Fault,
    Hello,
    HostHeartbeat,
    ImpedanceRequest,
    ImpedanceResult,
    Nack,
    NackReason,
    Output,
    SimControl,
    StimEpoch,
    StimMode,
    Stimulate,
)
from firmware_bridge.sim.board import VirtualBoard
from firmware_bridge.validate import MAX_BOARD_TIME_US, FrameValidator, check_capabilities

CAPS = Capabilities(protocol_version=1, firmware_version="t-1", board_id="T1", config_token=True)
CONF = ConfigureAcquisition(sample_rate_hz=20000, stream_block_samples=400, epoch_pre_ms=10, epoch_post_ms=50)


class SimRig:
    """A virtual board and a Receiver on one ManualClock, bytes through the real codec."""

    def __init__(self, seed: int = 3) -> None:
        self.clock = ManualClock()
        self.board = VirtualBoard(self.clock, seed=seed)
        self.rx = Receiver()
        self.seq = 0
        self.accepted: list[object] = []
        self.rejected: list = []
        self.events: list = []
        self.hb = 0

    def send(self, msg) -> int:
        seq = self.seq
        self.rx.sent(seq, msg)
        self.board.receive(encode(msg, seq))
        self.seq += 1
        return seq

    def pump(self) -> None:
        verdicts, events = self.rx.feed(self.board.poll(), self.clock.now())
        self.events += events
        for v in verdicts:
            (self.accepted if v.accepted else self.rejected).append(v.message if v.accepted else v)

    def run(self, seconds: float, step: float = 0.01) -> None:
        for _ in range(int(round(seconds / step))):
            self.clock.advance(step)
            if round(self.clock.now() / step) % 10 == 0:
                self.send(HostHeartbeat(self.hb))
                self.hb += 1
            self.pump()
            self.events += self.rx.tick(self.clock.now())

    def start(self) -> None:
        self.send(HostHeartbeat(self.hb))
        self.send(Hello())
        self.run(0.05)
        self.send(CONF)
        self.run(0.1)

    def of(self, cls) -> list:
        return [m for m in self.accepted if isinstance(m, cls)]


def test_the_virtual_boards_whole_stream_is_accepted():
    r = SimRig()
    r.start()
    assert r.rx.validator.board_state == "accepted"
    r.send(Stimulate(Output.APS, StimMode.CONTINUOUS, 1000, 100, 2000, config_token=11))
    r.send(Stimulate(Output.PROBE, StimMode.CONTINUOUS, 2000, 200, 10000, config_token=12))
    r.run(1.0)
    r.send(Stimulate(Output.APS, StimMode.CONTINUOUS, 1500, 100, 4000, config_token=13))  # rate and current
    r.send(Stimulate(Output.PROBE, StimMode.SINGLE, 3000, 100, config_token=14))
    r.send(ImpedanceRequest())
    r.run(0.6)
    r.send(dataclasses.replace(CONF, sample_rate_hz=10000, stream_decimation=2))  # acquisition restarts
    r.run(0.6)
    r.send(CONF)
    r.run(0.6)
    r.send(SimControl("mute", '{"duration_s": 0.3}'))  # frames lost: gaps, not invalid
    r.run(0.6)
    assert r.rejected == []
    assert not any(e.kind is LinkEventKind.INVALID_DATA for e in r.events)
    epochs = r.of(StimEpoch)
    assert len(epochs) > 30
    assert {e.config_token for e in epochs} == {11, 12, 13, 14}
    assert len(r.of(ImpedanceResult)) == 1
    st_ = r.rx.validator.stats
    assert st_["frames_missed"] > 0 and st_["invalid"] == 0
    # every epoch carries the token of the settings it was delivered with
    for e in epochs:
        want = {11: (1000, 100), 12: (2000, 200), 13: (1500, 100), 14: (3000, 100)}[e.config_token]
        assert (e.set_current_uA, e.pulse_width_us) == want


def test_a_board_reset_on_the_same_port_is_a_restart_not_invalid_data():
    r = SimRig()
    r.start()
    r.send(Stimulate(Output.APS, StimMode.CONTINUOUS, 1000, 100, 2000))
    r.run(0.5)
    r.board.control("reset")  # numbering, clock and counters from 0
    r.run(0.5)
    assert r.rejected == []
    assert [e.kind for e in r.events if e.kind is LinkEventKind.BOARD_RESTARTED] == [LinkEventKind.BOARD_RESTARTED]
    assert r.rx.validator.stats["board_restarts"] == 1
    assert r.rx.validator.config is None  # a restarted board is not configured
    r.send(Hello())
    r.send(CONF)
    r.send(Stimulate(Output.APS, StimMode.CONTINUOUS, 1000, 100, 2000))
    r.run(1.0)
    assert r.rejected == [] and len(r.of(StimEpoch)) > 2


def test_replayed_and_duplicated_frames_are_dropped_and_counted():
    r = SimRig()
    r.start()
    r.send(Stimulate(Output.APS, StimMode.CONTINUOUS, 1000, 100, 5000))
    r.run(1.0)
    n_epochs = len(r.of(StimEpoch))
    old = r.of(StimEpoch)[1]
    # the frames as the board sent them (old sequence numbers): re-fed, they are replays
    replay = encode(old, 5)
    verdicts, _ = r.rx.feed(replay, r.clock.now())
    assert [v.category for v in verdicts] == ["replayed"]
    # the same epoch with a fresh frame number (a proxy renumbering frames): still a replay
    last = r.rx.validator._s.last_seq
    verdicts, _ = r.rx.feed(encode(old, last + 1), r.clock.now())
    assert [(v.category, "older" in v.detail) for v in verdicts] == [("replayed", True)]
    newest = r.of(StimEpoch)[-1]
    verdicts, _ = r.rx.feed(encode(newest, last + 2), r.clock.now())
    assert [v.category for v in verdicts] == ["duplicate"]
    r.run(0.5)
    assert len(r.of(StimEpoch)) > n_epochs  # the real stream goes on
    st_ = r.rx.validator.stats
    # the board's own next two frames carry the numbers the injected ones took: they
    # are dropped too (a replay and a duplicate by number), then the stream continues
    assert st_["replayed"] == 3 and st_["duplicate"] == 2 and st_["invalid"] == 0


def _configured() -> tuple[FrameValidator, list[int]]:
    v = FrameValidator()
    seq = [0]

    def host(msg):
        v.sent(seq[0], msg)
        seq[0] += 1
        return seq[0] - 1

    board = [100]

    def frame(msg):
        board[0] += 1
        return Frame(board[0], msg)

    h = host(Hello())
    assert v.check(frame(CAPS), 0.0)[0].accepted
    c = host(CONF)
    assert v.check(frame(Ack(c)), 0.0)[0].accepted
    s = host(Stimulate(Output.APS, StimMode.CONTINUOUS, 1000, 100, 1000, config_token=7))
    assert v.check(frame(Ack(s)), 0.0)[0].accepted
    v.host, v.frame = host, frame  # type: ignore[attr-defined]
    del h
    return v, board


def _epoch(**kw) -> StimEpoch:
    base = dict(board_time_us=1_000_000, stim_counter=1, output=Output.APS, set_current_uA=1000,
                delivered_current_uA=990, pulse_width_us=100, sample_rate_hz=20000, pre_samples=200,
                nv_per_count=100, samples=np.zeros((2, 1200), np.int32), config_token=7)
    base.update(kw)
    return StimEpoch(**base)


@pytest.mark.parametrize(("change", "reason"), [
    (dict(sample_rate_hz=0), "sample_rate"),
    (dict(sample_rate_hz=10000), "sample_rate"),
    (dict(samples=np.zeros((2, 0), np.int32), pre_samples=0), "sample_count"),
    (dict(samples=np.zeros((2, 1150), np.int32)), "sample_count"),
    (dict(samples=np.zeros((1, 1200), np.int32)), "channels"),
    (dict(nv_per_count=0), "scale"),
    (dict(set_current_uA=10001), "current"),
    (dict(delivered_current_uA=-5), "current"),
    (dict(delivered_current_uA=50_000), "current"),
    (dict(pulse_width_us=0), "pulse_width"),
    (dict(board_time_us=2**63), "board_time"),
    (dict(board_time_us=MAX_BOARD_TIME_US + 1), "board_time"),
    (dict(config_token=8), "token"),
    (dict(set_current_uA=2000, delivered_current_uA=1990), "token"),
])
def test_wrong_stimulus_epochs_are_invalid_with_their_reason(change, reason):
    v, _ = _configured()
    good = _epoch()
    assert v.check(v.frame(good), 0.0)[0].accepted
    bad = _epoch(**{"stim_counter": 2, "board_time_us": 1_250_000, **change})
    verdict = v.check(v.frame(bad), 0.1)[0]
    assert not verdict.accepted and verdict.category == "invalid" and verdict.reason == reason, verdict
    assert v.stats["invalid_by_reason"] == {reason: 1}
    assert verdict.detail  # names the value
    assert v.check(v.frame(_epoch(stim_counter=3, board_time_us=1_500_000)), 0.2)[0].accepted


def test_board_time_must_follow_the_host_clock():
    v, _ = _configured()
    assert v.check(v.frame(BoardHeartbeat(10_000_000, 0)), 100.0)[0].accepted
    # 1 s later on the host, the board claims 30 s later: a jump
    bad = v.check(v.frame(BoardHeartbeat(40_000_000, 1)), 101.0)[0]
    assert bad.reason == "board_time" and "jumped ahead" in bad.detail
    # after a 60 s silence, 60 s more on the board is fine
    assert v.check(v.frame(BoardHeartbeat(70_000_000, 2)), 160.0)[0].accepted
    # an epoch 20 s old: back-dated
    old = v.check(v.frame(_epoch(board_time_us=50_000_000)), 160.0)[0]
    assert old.reason == "back_dated"
    # heartbeat time going back
    back = v.check(v.frame(BoardHeartbeat(69_000_000, 3)), 160.1)[0]
    assert back.reason == "time_backwards"


def test_emg_blocks_are_checked_against_the_configuration_and_their_own_stream():
    v, _ = _configured()

    def blk(first, t, n=400, rate=20000, ch=2):
        return EmgBlock(t, first, rate, 100, np.zeros((ch, n), np.int32))

    assert v.check(v.frame(blk(0, 1_000_000)), 1.0)[0].accepted
    assert v.check(v.frame(blk(400, 1_020_000)), 1.02)[0].accepted
    assert v.check(v.frame(blk(400, 1_040_000)), 1.04)[0].category == "duplicate"
    assert v.check(v.frame(blk(0, 1_040_000)), 1.04)[0].category == "replayed"
    assert v.check(v.frame(blk(800, 1_040_000, rate=0)), 1.04)[0].reason == "sample_rate"
    assert v.check(v.frame(blk(800, 1_040_000, n=0)), 1.04)[0].reason == "sample_count"
    assert v.check(v.frame(blk(800, 1_500_000)), 1.04)[0].reason == "board_time"  # 400 samples are 20 ms
    assert v.check(v.frame(blk(1200, 1_060_000)), 1.06)[0].accepted  # 400 samples lost: a gap
    assert v.stats["emg_samples_missed"] == 400


def test_answers_must_answer_something():
    v, _ = _configured()
    assert v.check(v.frame(Ack(999)), 1.0)[0].reason == "unsolicited"
    assert v.check(v.frame(Nack(998, NackReason.BUSY)), 1.0)[0].reason == "unsolicited"
    assert v.check(v.frame(CAPS), 1.0)[0].reason == "unsolicited"
    assert v.check(v.frame(ImpedanceResult(2_000_000, ())), 1.0)[0].reason == "unsolicited"
    s = v.host(ImpedanceRequest())
    assert v.check(v.frame(Ack(s)), 1.0)[0].accepted
    assert v.check(v.frame(Ack(s)), 1.0)[0].reason == "unsolicited"  # answered already
    assert v.check(v.frame(ImpedanceResult(2_000_000, ())), 1.0)[0].accepted


def test_status_must_agree_with_itself():
    v, _ = _configured()
    assert v.check(v.frame(BoardStatus(5_000_000, Fault.NONE, (Output.APS,), 10, 5)), 1.0)[0].accepted
    bad = v.check(v.frame(BoardStatus(6_000_000, Fault.NONE, (), 10, 4000)), 2.0)[0]
    assert bad.reason == "status" and "uptime" in bad.detail


def test_a_stray_frame_numbered_0_is_a_replay_not_a_restart():
    v = FrameValidator()
    out = []
    for i in range(200):
        out += v.check(Frame(i, BoardHeartbeat(i * 100_000, i)), i * 0.1)
    assert all(x.accepted for x in out)
    assert v.check(Frame(0, BoardHeartbeat(0, 0)), 20.0) == []  # held back
    nxt = v.check(Frame(200, BoardHeartbeat(200 * 100_000, 200)), 20.0)
    assert [(x.seq, x.category) for x in nxt] == [(0, "replayed"), (200, "ok")]
    assert v.stats["board_restarts"] == 0 and not v.take_notices()
    # a real restart: 0 then 1, 2 ... with the board's clock from 0
    assert v.check(Frame(0, BoardHeartbeat(0, 0)), 21.0) == []
    nxt = v.check(Frame(1, BoardHeartbeat(100_000, 1)), 21.1)
    assert [x.accepted for x in nxt] == [True, True]
    assert v.stats["board_restarts"] == 1 and [n.kind for n in v.take_notices()] == ["board_restarted"]


def test_sequence_wrap_is_not_a_restart():
    v = FrameValidator()
    top = 2**32 - 1
    assert v.check(Frame(top, BoardHeartbeat(1_000_000, 5)), 1.0)[0].accepted
    assert v.check(Frame(0, BoardHeartbeat(1_100_000, 6)), 1.1)[0].accepted
    assert v.stats["board_restarts"] == 0


# ----------------------------------------------------------------------------- board support


@pytest.mark.parametrize(("caps", "words"), [
    (dataclasses.replace(CAPS, protocol_version=2), "protocol version 2"),
    (dataclasses.replace(CAPS, channels=1), "1 EMG channels"),
    (dataclasses.replace(CAPS, sample_rates_hz=(1000, 2000)), "sample rates 1000, 2000 Hz"),
    (dataclasses.replace(CAPS, sample_rates_hz=(0, 20000)), "sample rates 0 Hz"),
    (dataclasses.replace(CAPS, outputs=(Output.APS,)), "no the probe output"),
    (dataclasses.replace(CAPS, max_current_uA=0), "maximum current 0 uA"),
    (dataclasses.replace(CAPS, min_pulse_width_us=300, max_pulse_width_us=200), "pulse widths 300-200 us"),
    (dataclasses.replace(CAPS, min_rate_mHz=0), "stimulation rates 0-30000 mHz"),
])
def test_unsupported_capabilities_are_named(caps, words):
    problems = check_capabilities(caps)
    assert len(problems) == 1 and words in problems[0]


def test_a_refused_board_passes_nothing_but_answers():
    rx = Receiver()
    rx.sent(0, Hello())
    v2 = dataclasses.replace(CAPS, protocol_version=2, firmware_version="fw-2.0", board_id="B2")
    verdicts, events = rx.feed(encode(v2, 0), 1.0)
    assert [x.category for x in verdicts] == ["refused"]
    [ev] = [e for e in events if e.kind is LinkEventKind.INCOMPATIBLE]
    assert "protocol version 2" in ev.detail and "B2" in ev.detail and "speaks version 1" in ev.detail
    assert ev.data["protocol_version"] == 2
    rx.sent(1, ConfigureAcquisition())
    frames = [BoardHeartbeat(1_000_000, 0), _epoch(), Ack(1)]
    verdicts, events = rx.feed(b"".join(encode(m, i + 1) for i, m in enumerate(frames)), 1.1)
    assert [x.category for x in verdicts] == ["refused", "refused", "ok"]
    assert not any(e.kind is LinkEventKind.INVALID_DATA for e in events)  # refused is not invalid
    assert rx.snapshot()["refused_frames"] == 3 and rx.snapshot()["board"]["state"] == "refused"
    # the board is reflashed and says Hello again with supported capabilities
    rx.sent(2, Hello())
    verdicts, events = rx.feed(encode(CAPS, 4), 2.0)
    assert verdicts[0].accepted and [e.kind for e in events] == [LinkEventKind.BOARD_ACCEPTED]


def test_nack_unsupported_version_refuses_the_board():
    rx = Receiver()
    rx.sent(0, Hello())
    verdicts, events = rx.feed(encode(Nack(0, NackReason.UNSUPPORTED_VERSION, "speaks 2"), 0), 1.0)
    assert verdicts[0].accepted  # the answer itself is passed on
    assert [e.kind for e in events] == [LinkEventKind.INCOMPATIBLE] and "speaks 2" in events[0].detail
    assert not rx.validator.stimulation_allowed


# ----------------------------------------------------------------------------- bursts


def test_a_burst_of_invalid_frames_is_one_event_then_cleared_after_a_quiet_window():
    rx = Receiver(invalid_burst_count=3, invalid_burst_window_s=10.0)
    events = []
    for i in range(6):
        _v, ev = rx.feed(encode(BoardHeartbeat(2**63, i), i), float(i))
        events += ev
    assert [e.kind for e in events] == [LinkEventKind.INVALID_DATA]
    assert events[0].detail.startswith("board sends invalid data: heartbeat with an implausible board time")
    assert events[0].t == 2.0 and events[0].data["reason"] == "board_time"
    assert rx.tick(14.9) == []
    [cleared] = rx.tick(15.0)
    assert cleared.kind is LinkEventKind.DATA_VALID
    snap = rx.snapshot()
    assert snap["invalid"] == 6 and snap["invalid_by_reason"] == {"board_time": 6} and not snap["invalid_burst"]


def test_two_invalid_frames_far_apart_are_no_burst():
    rx = Receiver(invalid_burst_count=3, invalid_burst_window_s=10.0)
    events = []
    for i, t in enumerate((0.0, 11.0, 22.0, 33.0)):
        events += rx.feed(encode(BoardHeartbeat(2**63, i), i), t)[1]
    assert events == []


# ----------------------------------------------------------------------------- fuzz


u32 = st.integers(0, 2**32 - 1)


@st.composite
def any_epoch(draw):
    ch = draw(st.integers(1, 3))
    n = draw(st.integers(0, 1300))
    return StimEpoch(
        board_time_us=draw(st.integers(0, 2**64 - 1) | st.integers(900_000, 3_000_000)),
        stim_counter=draw(u32 | st.integers(0, 20)),
        output=draw(st.sampled_from(list(Output))),
        set_current_uA=draw(u32 | st.integers(0, 12000)),
        delivered_current_uA=draw(st.integers(-(2**31), 2**31 - 1) | st.integers(-2, 12000)),
        pulse_width_us=draw(st.integers(0, 2**16 - 1) | st.integers(40, 260)),
        sample_rate_hz=draw(u32 | st.sampled_from([0, 10000, 20000])),
        pre_samples=draw(st.integers(0, n)),
        nv_per_count=draw(u32 | st.integers(0, 200)),
        samples=np.zeros((ch, n), np.int32),
        config_token=draw(st.none() | st.integers(0, 10)),
    )


def _plausible_epoch(e: StimEpoch) -> bool:
    """What the engine may rely on for an accepted epoch (independent of the validator)."""
    ch, n = e.samples.shape
    return (e.sample_rate_hz == 20000 and ch == 2 and e.pre_samples <= 201 and abs(n - e.pre_samples - 1000) <= 1
            and 1 <= e.nv_per_count and e.set_current_uA <= CAPS.max_current_uA
            and CAPS.min_pulse_width_us <= e.pulse_width_us <= CAPS.max_pulse_width_us
            and e.board_time_us <= MAX_BOARD_TIME_US and e.config_token in (None, 7)
            and (e.config_token is None or (e.set_current_uA, e.pulse_width_us) == (1000, 100)))


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(epochs=st.lists(any_epoch(), min_size=1, max_size=12))
def test_fuzzed_epochs_never_raise_and_only_plausible_ones_pass(epochs):
    v, _ = _configured()
    last_t = None
    counters = set()
    for i, e in enumerate(epochs):
        verdicts = v.check(v.frame(e), 1.0 + 0.01 * i)
        assert len(verdicts) == 1
        if verdicts[0].accepted:
            assert _plausible_epoch(e)
            assert last_t is None or e.board_time_us >= last_t
            assert e.stim_counter not in counters  # never the same stimulus twice
            last_t = e.board_time_us
            counters.add(e.stim_counter)
    st_ = v.stats
    assert st_["accepted"] - 3 + st_["invalid"] + st_["duplicate"] + st_["replayed"] == len(epochs)


def test_decoder_and_validator_agree_on_frames_in_order():
    """A Receiver fed the board's bytes in odd chunks gives the same verdicts."""
    r = SimRig(seed=5)
    r.start()
    r.send(Stimulate(Output.APS, StimMode.CONTINUOUS, 1000, 100, 3000))
    data = b""
    for _ in range(100):
        r.clock.advance(0.01)
        if round(r.clock.now() * 100) % 10 == 0:
            r.send(HostHeartbeat(r.hb))
            r.hb += 1
        data += r.board.poll()
    whole = Decoder().feed(data)
    verdicts = []
    for i in range(0, len(data), 777):
        verdicts += r.rx.feed(data[i : i + 777], r.clock.now())[0]
    assert [v.seq for v in verdicts] == [f.seq for f in whole]
    assert all(v.accepted for v in verdicts)


def test_one_stray_frame_numbered_ahead_does_not_blind_the_stream():
    v = FrameValidator()
    ok = [x.accepted for i in range(10) for x in v.check(Frame(i, BoardHeartbeat(i * 100_000, i)), i * 0.1)]
    assert all(ok)
    # a frame numbered far ahead, with a heartbeat counter far ahead: accepted (it could be
    # a gap) ...
    assert v.check(Frame(5000, BoardHeartbeat(1_050_000, 900)), 1.05)[0].accepted
    # ... but the genuine stream goes on from before it: the stray is recognised
    out = [x for i in range(10, 20) for x in v.check(Frame(i, BoardHeartbeat(i * 100_000, i)), i * 0.1)]
    assert all(x.accepted for x in out)
    assert v.stats["stray_frames"] == 2  # the frame number and the heartbeat counter
    assert v.stats["frames_missed"] == 0 and v.stats["heartbeats_missed"] == 0


def test_a_stray_epoch_or_emg_block_ahead_is_recognised_too():
    v, _ = _configured()
    t = 1_000_000
    assert v.check(v.frame(_epoch(stim_counter=1, board_time_us=t)), 1.0)[0].accepted
    assert v.check(v.frame(_epoch(stim_counter=400, board_time_us=t + 100_000)), 1.1)[0].accepted
    assert v.check(v.frame(_epoch(stim_counter=2, board_time_us=t + 200_000)), 1.2)[0].accepted
    assert v.check(v.frame(_epoch(stim_counter=3, board_time_us=t + 300_000)), 1.3)[0].accepted
    assert v.stats["stray_frames"] == 1 and v.stats["epochs_missed"] == 0

    def blk(first, tt):
        return EmgBlock(tt, first, 20000, 100, np.zeros((2, 400), np.int32))

    assert v.check(v.frame(blk(0, t)), 1.0)[0].accepted
    assert v.check(v.frame(blk(40000, t + 2_000_000)), 1.02)[0].accepted  # 2 s ahead: a stray (or a gap)
    assert v.check(v.frame(blk(400, t + 20_000)), 1.04)[0].accepted  # no: the stream goes on from before it
    assert v.check(v.frame(blk(800, t + 40_000)), 1.06)[0].accepted
    assert v.stats["stray_frames"] == 2 and v.stats["emg_samples_missed"] == 0


def test_a_real_gap_is_not_taken_for_a_stray():
    v = FrameValidator()
    for i in range(5):
        v.check(Frame(i, BoardHeartbeat(i * 100_000, i)), i * 0.1)
    for i in range(50, 55):  # 45 frames lost on the line: then the numbering simply goes on
        assert v.check(Frame(i, BoardHeartbeat(i * 100_000, i)), i * 0.1)[0].accepted
    # an old frame from before the gap is still a replay
    assert v.check(Frame(3, BoardHeartbeat(300_000, 3)), 5.5)[0].category == "replayed"
    assert v.stats["frames_missed"] == 45 and v.stats["stray_frames"] == 0


def test_a_defect_in_a_rule_drops_the_frame_and_the_receiver_goes_on(monkeypatch):
    rx = Receiver()

    def broken(self, m, now):
        raise KeyError("a bug")

    from firmware_bridge import validate

    monkeypatch.setitem(validate._CHECKS, BoardHeartbeat, broken)
    data = encode(BoardHeartbeat(1, 0), 0) + encode(BoardStatus(1_000_000, Fault.NONE, (), 0, 1), 1)
    verdicts, _events = rx.feed(data, 1.0)
    assert [(v.accepted, v.reason) for v in verdicts] == [(False, "malformed"), (True, "")]
    assert rx.snapshot()["invalid_by_reason"] == {"malformed": 1}
