"""Frame validation rule by rule (PROTOCOL.md section 12): each rule at its limit and just
beyond it, with the reason key and the detail a person reads in the journal; the counters;
the decisions on a held frame numbered 0 (restart or stray); ``reset``.

Explicit examples only: these tests are fast (they also run against every mutant of
``firmware_bridge/validate.py`` in ``make mutation``).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from firmware_bridge.codec import SEQ_MODULO, Frame
from firmware_bridge.messages import (
    Ack,
    BoardHeartbeat,
    BoardStatus,
    Capabilities,
    ConfigureAcquisition,
    Electrode,
    EmgBlock,
    Fault,
    Hello,
    HostHeartbeat,
    ImpedanceRequest,
    ImpedanceResult,
    Nack,
    NackReason,
    Output,
    StimEpoch,
    Stimulate,
    StimMode,
)
from firmware_bridge.validate import (
    MAX_BOARD_TIME_US,
    PENDING_KEPT,
    TOKENS_KEPT,
    FrameValidator,
    HostSupport,
    Verdict,
    check_capabilities,
)

CAPS = Capabilities(protocol_version=1, firmware_version="t-1", board_id="T1", config_token=True)
CONF = ConfigureAcquisition(sample_rate_hz=20000, stream_block_samples=400, epoch_pre_ms=10, epoch_post_ms=50)
SUPPORTED = ("this monitor supports protocol version 1, 2 EMG channels, a sample rate within 5000-50000 Hz, "
             "a probe output, a maximum current of 1000-30000 uA")


class Board:
    """A FrameValidator fed board frames numbered in order; ``caps`` (None: never given)
    accepted after a Hello, ``conf`` put in force by its Ack."""

    def __init__(self, caps: Capabilities | None = CAPS, conf: ConfigureAcquisition | None = None) -> None:
        self.v = FrameValidator()
        self.hseq = 0
        self.bseq = 100
        if caps is not None:
            self.host(Hello())
            assert self.rx(caps) == "ok"
        if conf is not None:
            assert self.rx(Ack(self.host(conf))) == "ok"

    def host(self, msg: object) -> int:
        seq = self.hseq
        self.v.sent(seq, msg)
        self.hseq += 1
        return seq

    def verdict(self, msg: object, now: float = 1.0) -> Verdict:
        self.bseq += 1
        [verdict] = self.v.check(Frame(self.bseq, msg), now)
        return verdict

    def rx(self, msg: object, now: float = 1.0) -> str | tuple[str, str, str]:
        return got(self.verdict(msg, now))


def got(v: Verdict) -> str | tuple[str, str, str]:
    return "ok" if v.accepted else (v.category, v.reason, v.detail)


def epoch(n: int = 1200, ch: int = 2, **kw) -> StimEpoch:
    base = dict(board_time_us=1_000_000, stim_counter=1, output=Output.APS, set_current_uA=1000,
                delivered_current_uA=990, pulse_width_us=100, sample_rate_hz=20000, pre_samples=200,
                nv_per_count=100, samples=np.zeros((ch, n), np.int32), config_token=None)
    base.update(kw)
    return StimEpoch(**base)


def blk(first: int, t: int, n: int = 400, rate: int = 20000, ch: int = 2, nv: int = 100) -> EmgBlock:
    return EmgBlock(t, first, rate, nv, np.zeros((ch, n), np.int32))


def bad(reason: str, detail: str) -> tuple[str, str, str]:
    return ("invalid", reason, detail)


# ----------------------------------------------------------------------------- stimulus epochs, one frame


def _sc(pre: int, post: int, ms: str = "10 + 50", want: str = "200 + 1000") -> tuple[str, str, str]:
    return bad("sample_count", f"{pre} + {post} samples before + after the stimulus; {ms} ms at 20000 Hz are {want}")


EPOCHS_CONFIGURED = [
    (dict(), "ok"),
    (dict(sample_rate_hz=10000), bad("sample_rate", "10000 Hz, configured 20000 Hz")),
    (dict(pre_samples=201, n=1201), "ok"),
    (dict(pre_samples=202, n=1202), _sc(202, 1000)),
    (dict(n=1201), "ok"),
    (dict(n=1199), "ok"),
    (dict(n=1202), _sc(200, 1002)),
    (dict(n=1198), _sc(200, 998)),
    (dict(n=0, pre_samples=0), bad("sample_count", "0 samples with the stimulus at sample 0 "
                                                   "(at least one sample after it)")),
    (dict(pre_samples=1200), bad("sample_count", "1200 samples with the stimulus at sample 1200 "
                                                 "(at least one sample after it)")),
    (dict(ch=1), bad("channels", "1 channels, 2 configured")),
    (dict(ch=3), bad("channels", "3 channels, 2 configured")),
    (dict(nv_per_count=1), "ok"),
    (dict(nv_per_count=0), bad("scale", "nv_per_count 0 (allowed 1-1000000)")),
    (dict(nv_per_count=1_000_000), "ok"),
    (dict(nv_per_count=1_000_001), bad("scale", "nv_per_count 1000001 (allowed 1-1000000)")),
    (dict(set_current_uA=10000), "ok"),
    (dict(set_current_uA=10001), bad("current", "set current 10001 uA (the hardware maximum is 10000 uA)")),
    (dict(delivered_current_uA=-1), "ok"),
    (dict(delivered_current_uA=-2), bad("current", "delivered current -2 uA (allowed -1 (not measured) or "
                                                   "0-11100 uA)")),
    (dict(delivered_current_uA=0), "ok"),
    (dict(delivered_current_uA=11100), "ok"),
    (dict(delivered_current_uA=11101), bad("current", "delivered current 11101 uA (allowed -1 (not measured) or "
                                                      "0-11100 uA)")),
    (dict(pulse_width_us=50), "ok"),
    (dict(pulse_width_us=49), bad("pulse_width", "49 us (the board's range is 50-250 us)")),
    (dict(pulse_width_us=250), "ok"),
    (dict(pulse_width_us=251), bad("pulse_width", "251 us (the board's range is 50-250 us)")),
    (dict(config_token=8), bad("token", "token 8 on APS, never given for that output")),
    (dict(board_time_us=MAX_BOARD_TIME_US), "ok"),
    (dict(board_time_us=MAX_BOARD_TIME_US + 1),
     bad("board_time", "board time 281474976710657 us (8.92 years) is beyond any plausible uptime "
                       "(at most 281474976710656 us)")),
]


@pytest.mark.parametrize(("change", "want"), EPOCHS_CONFIGURED)
def test_a_stimulus_epoch_against_the_configuration_at_each_limit(change, want):
    b = Board(CAPS, CONF)
    assert b.rx(epoch(**change)) == want
    if want != "ok":
        assert b.v.stats["invalid_by_reason"] == {want[1]: 1} and b.v.stats["invalid"] == 1


EPOCHS_CAPS_ONLY = [
    (dict(sample_rate_hz=10000), "ok"),
    (dict(sample_rate_hz=15000), bad("sample_rate", "15000 Hz (the board has 10000, 20000 Hz)")),
    (dict(ch=1), "ok"),
    (dict(ch=3), bad("channels", "3 channels (the board has 2)")),
    (dict(ch=0), bad("channels", "0 channels (the board has 2)")),
    (dict(n=6001), "ok"),  # 300 ms at 20 kHz and one sample
    (dict(n=6002), bad("sample_count", "6002 samples at 20000 Hz, more than 300 ms")),
    (dict(n=1, pre_samples=0), "ok"),
    (dict(n=2, pre_samples=1), "ok"),
    (dict(n=2, pre_samples=2), bad("sample_count", "2 samples with the stimulus at sample 2 "
                                                   "(at least one sample after it)")),
]


@pytest.mark.parametrize(("change", "want"), EPOCHS_CAPS_ONLY)
def test_a_stimulus_epoch_before_any_configuration_is_checked_against_the_capabilities(change, want):
    assert Board(CAPS).rx(epoch(**change)) == want


EPOCHS_UNKNOWN_BOARD = [
    (dict(sample_rate_hz=0), bad("sample_rate", "0 Hz")),
    (dict(sample_rate_hz=1, n=1, pre_samples=0), "ok"),
    (dict(sample_rate_hz=1_000_000), "ok"),
    (dict(sample_rate_hz=1_000_001), bad("sample_rate", "1000001 Hz")),
    (dict(ch=1), "ok"),
    (dict(ch=8), "ok"),
    (dict(ch=9), bad("channels", "9 channels (the board has 8)")),
    (dict(set_current_uA=30000), "ok"),
    (dict(set_current_uA=30001), bad("current", "set current 30001 uA (the hardware maximum is 30000 uA)")),
    (dict(delivered_current_uA=33101), bad("current", "delivered current 33101 uA (allowed -1 (not measured) "
                                                      "or 0-33100 uA)")),
    (dict(pulse_width_us=1), "ok"),
    (dict(pulse_width_us=0), bad("pulse_width", "0 us (the board's range is 1-1000 us)")),
    (dict(pulse_width_us=1000), "ok"),
    (dict(pulse_width_us=1001), bad("pulse_width", "1001 us (the board's range is 1-1000 us)")),
]


@pytest.mark.parametrize(("change", "want"), EPOCHS_UNKNOWN_BOARD)
def test_a_stimulus_epoch_from_a_board_not_yet_described_is_checked_against_plain_limits(change, want):
    assert Board(None).rx(epoch(**change)) == want


def test_a_stimulus_on_an_output_the_board_does_not_have_is_invalid():
    b = Board(dataclasses.replace(CAPS, outputs=(Output.PROBE,)))
    assert b.rx(epoch()) == bad("output", "output APS, not an output of this board")
    assert b.rx(epoch(output=Output.PROBE, stim_counter=2)) == "ok"


def test_epoch_window_in_samples_follows_the_configured_milliseconds():
    b = Board(CAPS, dataclasses.replace(CONF, epoch_pre_ms=100, epoch_post_ms=200))
    assert b.rx(epoch(n=6002, pre_samples=2001)) == "ok"  # 2000 + 4000, one more each side
    assert b.rx(epoch(n=6004, pre_samples=2002, stim_counter=2, board_time_us=2_000_000)) == \
        _sc(2002, 4002, "100 + 200", "2000 + 4000")


def test_the_configured_channel_mask_counts_only_channels_the_board_has():
    b = Board(CAPS, dataclasses.replace(CONF, channel_mask=0b111))  # the board has 2 channels
    assert b.rx(epoch(ch=3)) == bad("channels", "3 channels, 2 configured")
    assert b.rx(epoch(ch=2)) == "ok"
    # the board's channels not yet known: up to 8
    b = Board(None, dataclasses.replace(CONF, channel_mask=0b1_0000_0011))
    assert b.rx(epoch(ch=3)) == bad("channels", "3 channels, 2 configured")
    assert b.rx(epoch(ch=2)) == "ok"


# ----------------------------------------------------------------------------- stimulus epochs in sequence


def test_stimulus_epochs_in_sequence_duplicates_replays_and_time():
    b = Board(CAPS, CONF)
    assert b.rx(epoch(stim_counter=1, board_time_us=1_000_000)) == "ok"
    assert b.rx(epoch(stim_counter=1, board_time_us=1_000_000)) == ("duplicate", "", "stimulus 1 again")
    assert b.rx(epoch(stim_counter=2, board_time_us=999_000)) == \
        bad("time_backwards", "stimulus at board time 999000 us, before the previous one (1000000 us)")
    assert b.rx(epoch(stim_counter=2, board_time_us=1_000_000)) == \
        bad("pulse_overlap", "stimulus 2 on APS at board time 1000000 us, during the previous one "
                             "(1000000 us, 100 us wide)")
    assert b.rx(epoch(stim_counter=2, board_time_us=1_000_100)) == "ok"
    assert b.rx(epoch(stim_counter=1, board_time_us=1_100_000)) == ("replayed", "", "stimulus 1 is older than 2")
    assert b.rx(epoch(stim_counter=5, board_time_us=1_200_000)) == "ok"
    assert b.rx(epoch(stim_counter=9, board_time_us=1_300_000)) == "ok"
    st = b.v.stats
    assert (st["epochs_missed"], st["duplicate"], st["replayed"], st["invalid"]) == (5, 1, 1, 2)


def test_a_pulse_one_microsecond_wide_ends_one_microsecond_later():
    b = Board(None)
    assert b.rx(epoch(stim_counter=1, pulse_width_us=1)) == "ok"
    assert b.rx(epoch(stim_counter=2, pulse_width_us=1, board_time_us=1_000_001)) == "ok"


# ----------------------------------------------------------------------------- heartbeats, counters


def test_heartbeats_in_sequence():
    b = Board(None)
    assert b.rx(BoardHeartbeat(1_000_000, 0)) == "ok"
    assert b.rx(BoardHeartbeat(1_000_000, 1)) == \
        bad("time_backwards", "heartbeat at board time 1000000 us, not after the previous one (1000000 us)")
    assert b.rx(BoardHeartbeat(1_100_000, 0)) == ("duplicate", "", "heartbeat 0 again")
    assert b.rx(BoardHeartbeat(1_100_000, 2)) == "ok"
    assert b.rx(BoardHeartbeat(1_200_000, 3)) == "ok"
    assert b.rx(BoardHeartbeat(1_300_000, 1)) == ("replayed", "", "heartbeat 1 is older than 3")
    assert b.v.stats["heartbeats_missed"] == 1


def test_every_gap_adds_to_the_missed_count_and_a_second_jump_keeps_the_first_jumps_origin():
    b = Board(None)
    for c, t in ((0, 1_000_000), (1, 1_100_000), (5, 1_500_000), (9, 1_900_000)):
        assert b.rx(BoardHeartbeat(t, c)) == "ok"
    assert b.v.stats["heartbeats_missed"] == 6
    # jumps ahead twice, then the numbering goes on from before the first jump: a stray
    b = Board(None)
    for c, t in ((0, 1_000_000), (1, 1_100_000), (100, 1_150_000), (200, 1_160_000), (2, 1_200_000)):
        assert b.rx(BoardHeartbeat(t, c)) == "ok"
    assert b.v.stats["stray_frames"] == 1


def test_frame_numbers_repeated_or_older():
    v = FrameValidator()
    assert v.check(Frame(5, BoardHeartbeat(1_000_000, 0)), 1.0)[0].accepted
    [d] = v.check(Frame(5, BoardHeartbeat(1_100_000, 1)), 1.1)
    assert got(d) == ("duplicate", "", "frame number 5 again")
    [r] = v.check(Frame(3, BoardHeartbeat(1_100_000, 1)), 1.1)
    assert got(r) == ("replayed", "", "frame number 3 is older than 5")


# ----------------------------------------------------------------------------- board time


def _hb_then(t0: int, now0: float, msg: object, now: float, conf: ConfigureAcquisition | None = None):
    b = Board(None, conf)
    assert b.rx(BoardHeartbeat(t0, 0), now0) == "ok"
    return b.rx(msg, now)


def _status(t: int) -> BoardStatus:
    return BoardStatus(t, Fault.NONE, (), 0, t // 1_000_000)


TIMES = [
    # ahead: 2 s plus 5 % of the host time that passed (1000 s here: 1052 s)
    (_status(1_001_000_000 + 1_052_000_000), "ok"),
    (_status(1_001_000_000 + 1_052_000_001),
     bad("board_time", "board time jumped ahead by 1052.000 s while 1000.000 s passed (at most 2 s more)")),
    # behind: 12 s before any acquisition configuration
    (_status(1_001_000_000 - 12_000_000), "ok"),
    (_status(1_001_000_000 - 12_000_001),
     bad("back_dated", "board time 989.000 s is 12.000 s older than the board's clock (1001.000 s)")),
]


@pytest.mark.parametrize(("msg", "want"), TIMES)
def test_board_time_ahead_of_and_behind_the_boards_clock(msg, want):
    assert _hb_then(1_001_000_000, 0.0, msg, 1000.0) == want


def test_within_a_second_of_host_time_the_board_may_lead_by_2_s_and_5_percent():
    assert _hb_then(10_000_000, 0.0, _status(12_525_000), 0.5) == "ok"
    assert _hb_then(10_000_000, 0.0, _status(12_525_001), 0.5)[1] == "board_time"


def test_back_dated_by_a_long_time_names_the_times():
    assert _hb_then(2_000_000_000, 0.0, _status(1_000_000_000), 0.0) == \
        bad("back_dated", "board time 1000.000 s is 1000.000 s older than the board's clock (2000.000 s)")


@pytest.mark.parametrize(("conf", "lag_us"), [
    (CONF, 2_080_000),  # 2 s + one 400-sample block at 20 kHz + a 60 ms epoch window
    (dataclasses.replace(CONF, stream_decimation=2), 2_100_000),  # the block spans twice the time
])
def test_data_may_lag_the_boards_clock_by_2_s_one_block_and_one_epoch_window(conf, lag_us):
    t0 = 100_000_000
    assert _hb_then(t0, 0.0, _status(t0 - lag_us), 0.0, conf) == "ok"
    assert _hb_then(t0, 0.0, _status(t0 - lag_us - 1), 0.0, conf)[1] == "back_dated"


def test_the_boards_clock_is_anchored_where_it_last_advanced():
    b = Board(None)
    assert b.rx(BoardHeartbeat(10_000_000, 0), 0.0) == "ok"
    assert b.rx(_status(10_000_000), 100.0) == "ok"  # the same board time, later: no advance
    assert b.rx(BoardHeartbeat(10_000_000 + 107_000_000, 1), 100.0) == "ok"  # 100 s * 1.05 + 2 s


# ----------------------------------------------------------------------------- status


def test_status_uptime_must_match_the_board_time_within_2_s():
    assert Board(None).rx(BoardStatus(1_000_000_000, Fault.NONE, (), 0, 1002)) == "ok"
    assert Board(None).rx(BoardStatus(1_002_000_000, Fault.NONE, (), 0, 1000)) == "ok"
    assert Board(None).rx(BoardStatus(1_000_000_000, Fault.NONE, (), 0, 1003)) == \
        bad("status", "uptime 1003 s does not match board time 1000.000 s")


def test_status_in_sequence_and_its_outputs():
    b = Board(dataclasses.replace(CAPS, outputs=(Output.PROBE,)))
    assert b.rx(BoardStatus(5_000_000, Fault.NONE, (Output.PROBE,), 0, 5)) == "ok"
    assert b.rx(BoardStatus(5_000_000, Fault.NONE, (), 0, 5)) == "ok"  # the same time again
    assert b.rx(BoardStatus(4_999_999, Fault.NONE, (), 0, 5)) == \
        bad("time_backwards", "status at board time 4999999 us, before the previous one (5000000 us)")
    assert b.rx(BoardStatus(6_000_000, Fault.NONE, (Output.APS, Output.PROBE), 0, 6)) == \
        bad("output", "stimulating on APS, not an output of this board")
    # a board not described yet may stimulate on any output
    assert Board(None).rx(BoardStatus(6_000_000, Fault.NONE, (Output.APS,), 0, 6)) == "ok"


# ----------------------------------------------------------------------------- impedance


@pytest.mark.parametrize(("z", "want"), [
    (-1, "ok"),
    (-2, bad("impedance", "L_POS -2 ohm (allowed -1 (not measurable) or 0-100000000)")),
    (0, "ok"),
    (100_000_000, "ok"),
    (100_000_001, bad("impedance", "L_POS 100000001 ohm (allowed -1 (not measurable) or 0-100000000)")),
])
def test_impedance_values_at_their_limits(z, want):
    b = Board()
    b.host(ImpedanceRequest())
    assert b.rx(ImpedanceResult(2_000_000, ((Electrode.R_POS, 500), (Electrode.L_POS, z)))) == want


def test_impedance_results_answer_requests_one_each_in_time_order():
    b = Board()
    assert b.rx(ImpedanceResult(2_000_000, ())) == bad("unsolicited", "impedance result without an impedance request")
    b.host(ImpedanceRequest())
    b.host(ImpedanceRequest())
    assert b.rx(ImpedanceResult(2_000_000, ((Electrode.L_POS, 1), (Electrode.L_POS, 2)))) == \
        bad("impedance", "an electrode listed twice")
    assert b.rx(ImpedanceResult(2_000_000, ())) == "ok"
    assert b.rx(ImpedanceResult(1_999_999, ())) == \
        bad("time_backwards", "impedance at board time 1999999 us, before the previous one")
    assert b.rx(ImpedanceResult(2_000_000, ())) == "ok"  # the same time: the second request's answer
    assert b.rx(ImpedanceResult(2_100_000, ()))[1] == "unsolicited"


def test_a_refused_impedance_request_is_answered():
    b = Board()
    s1, s2 = b.host(ImpedanceRequest()), b.host(ImpedanceRequest())
    assert b.rx(Nack(s1, NackReason.BUSY)) == "ok"
    assert b.rx(ImpedanceResult(2_000_000, ())) == "ok"  # answers the other request
    assert b.rx(ImpedanceResult(2_100_000, ()))[1] == "unsolicited"
    assert b.rx(Nack(s2, NackReason.BUSY)) == "ok"  # refused after all: nothing pending below 0
    assert b.rx(ImpedanceResult(2_200_000, ()))[1] == "unsolicited"


def test_a_single_refused_impedance_request_leaves_nothing_pending():
    b = Board()
    s = b.host(ImpedanceRequest())
    assert b.rx(Nack(s, NackReason.BUSY)) == "ok"
    assert b.rx(ImpedanceResult(2_000_000, ())) == bad("unsolicited", "impedance result without an impedance request")


# ----------------------------------------------------------------------------- refusals and board support


def test_a_refusal_of_nothing_is_unsolicited():
    assert Board().rx(Nack(998, NackReason.BUSY)) == \
        bad("unsolicited", "refusal for frame 998, which the host did not send or was answered")


def test_only_an_unsupported_version_refusal_of_hello_refuses_the_board():
    b = Board(None)
    assert b.rx(Nack(b.host(Hello()), NackReason.BUSY)) == "ok"
    assert b.rx(Nack(b.host(CONF), NackReason.UNSUPPORTED_VERSION, "speaks 2")) == "ok"
    assert b.v.board_state == "unknown" and b.v.take_notices() == []
    assert b.rx(Nack(b.host(Hello()), NackReason.UNSUPPORTED_VERSION)) == "ok"
    [n] = b.v.take_notices()
    assert n.kind == "incompatible" and n.detail == "the board does not speak protocol version 1; " + SUPPORTED
    assert b.v.refusal == n.detail and n.data == {"claimed": ""}
    assert b.rx(Nack(b.host(Hello()), NackReason.UNSUPPORTED_VERSION, "speaks 2")) == "ok"
    [n] = b.v.take_notices()  # another claim: reported again
    assert n.detail == "the board does not speak protocol version 1 (speaks 2); " + SUPPORTED
    assert n.data == {"claimed": "speaks 2"}
    assert b.rx(Nack(b.host(Hello()), NackReason.UNSUPPORTED_VERSION, "speaks 2")) == "ok"
    assert b.v.take_notices() == []  # the same refusal: reported once


def test_a_board_refused_after_it_was_accepted_loses_its_capabilities():
    b = Board(CAPS)
    assert b.v.capabilities == CAPS and b.v.stimulation_allowed
    b.host(Hello())
    assert b.rx(dataclasses.replace(CAPS, channels=1))[0] == "refused"
    assert b.v.capabilities is None and b.v.board_state == "refused" and not b.v.stimulation_allowed
    [n] = b.v.take_notices()
    assert n.detail == ("board T1 (firmware t-1) claims 1 EMG channels (this monitor needs 2: left and right); "
                        + SUPPORTED)


@pytest.mark.parametrize(("change", "problems"), [
    (dict(sample_rates_hz=(1, 20000)), []),  # 1 Hz is a sample rate (not one this monitor uses)
    (dict(sample_rates_hz=(1_000_000, 20000)), []),
    (dict(sample_rates_hz=(1_000_001, 20000)), ["sample rates 1000001 Hz (not a sample rate)"]),
    (dict(sample_rates_hz=(0, 2_000_000, 20000)), ["sample rates 0, 2000000 Hz (not a sample rate)"]),
    (dict(sample_rates_hz=(5000,)), []),
    (dict(sample_rates_hz=(50000,)), []),
    (dict(sample_rates_hz=(4999, 50001)),
     ["sample rates 4999, 50001 Hz (this monitor needs one within 5000-50000 Hz)"]),
    (dict(sample_rates_hz=()), ["sample rates none Hz (this monitor needs one within 5000-50000 Hz)"]),
    (dict(outputs=(Output.APS, Output.APS)),
     ["no the probe output (outputs: APS, APS)", "outputs listed twice (APS, APS)"]),
])
def test_capabilities_problems_in_full(change, problems):
    assert check_capabilities(dataclasses.replace(CAPS, **change)) == problems


def test_every_output_the_host_requires_is_named_when_missing():
    both = HostSupport(required_outputs=(Output.PROBE, Output.APS))
    assert check_capabilities(dataclasses.replace(CAPS, outputs=()), both) == \
        ["no the probe and no the vagal electrode output (outputs: none)"]


def test_the_validator_checks_capabilities_against_its_own_host_support():
    b = FrameValidator(HostSupport(channels=1))
    b.sent(0, Hello())
    assert b.check(Frame(1, dataclasses.replace(CAPS, channels=1)), 1.0)[0].accepted
    assert b.board_state == "accepted"


def test_a_refused_then_supported_board_is_reported_both_times():
    b = Board(None)
    b.host(Hello())
    two = dataclasses.replace(CAPS, protocol_version=2, channels=1)
    assert b.rx(two)[0] == "refused"
    [n] = b.v.take_notices()
    assert n.kind == "incompatible"
    assert n.detail == ("board T1 (firmware t-1) claims protocol version 2 (this monitor speaks version 1); "
                        "1 EMG channels (this monitor needs 2: left and right); " + SUPPORTED)
    assert n.data == {"board_id": "T1", "firmware": "t-1", "protocol_version": 2,
                      "problems": ["protocol version 2 (this monitor speaks version 1)",
                                   "1 EMG channels (this monitor needs 2: left and right)"]}
    b.host(Hello())
    assert b.rx(CAPS) == "ok"
    assert b.v.board_state == "accepted" and b.v.refusal == "" and b.v.capabilities == CAPS
    [n] = b.v.take_notices()
    assert (n.kind, n.detail, n.data) == ("board_accepted", "board T1 (firmware t-1) is supported", {"board_id": "T1"})


def test_an_acknowledgement_of_nothing_is_unsolicited():
    assert Board().rx(Ack(999)) == \
        bad("unsolicited", "acknowledgement for frame 999, which the host did not send or was answered")


def test_host_heartbeats_are_never_answered():
    b = Board()
    assert b.rx(Ack(b.host(HostHeartbeat(3))))[1] == "unsolicited"


def test_the_oldest_unanswered_host_frames_are_forgotten():
    b = Board(None)
    seqs = [b.host(Stimulate(Output.PROBE, StimMode.STOP)) for _ in range(PENDING_KEPT + 1)]
    assert b.rx(Ack(seqs[0]))[1] == "unsolicited"
    assert b.rx(Ack(seqs[1])) == "ok"
    assert b.rx(Ack(seqs[-1])) == "ok"


def test_only_the_last_16_configuration_tokens_of_an_output_are_known():
    b = Board(CAPS, CONF)
    for tok in range(1, TOKENS_KEPT + 2):
        assert b.rx(Ack(b.host(Stimulate(Output.APS, StimMode.CONTINUOUS, 1000, 100, 1000, config_token=tok)))) == "ok"
    assert b.rx(epoch(config_token=1)) == bad("token", "token 1 on APS, never given for that output")
    assert b.rx(epoch(config_token=2)) == "ok"


# ----------------------------------------------------------------------------- EMG stream


EMG_CONFIGURED = [
    (blk(0, 1_000_000), "ok"),
    (blk(0, 1_000_000, rate=10000), bad("sample_rate", "EMG at 10000 Hz, configured 20000 Hz")),
    (blk(0, 1_000_000, n=399), bad("sample_count", "399 samples per channel, configured 400")),
    (blk(0, 1_000_000, ch=3), bad("channels", "3 channels, 2 configured")),
    (blk(0, 1_000_000, nv=0), bad("scale", "nv_per_count 0 (allowed 1-1000000)")),
]


@pytest.mark.parametrize(("msg", "want"), EMG_CONFIGURED)
def test_an_emg_block_against_the_configuration(msg, want):
    assert Board(CAPS, CONF).rx(msg) == want


def test_a_decimated_stream_has_the_decimated_rate():
    b = Board(CAPS, dataclasses.replace(CONF, stream_decimation=2))
    assert b.rx(blk(0, 1_000_000, rate=20000)) == bad("sample_rate", "EMG at 20000 Hz, configured 10000 Hz")
    assert b.rx(blk(0, 1_000_000, rate=10000)) == "ok"


EMG_CAPS_ONLY = [
    (CAPS, blk(0, 1_000_000, rate=100), "ok"),  # 10 kHz / 100
    (CAPS, blk(0, 1_000_000, rate=199), bad("sample_rate", "EMG at 199 Hz (the board samples at 10000, 20000 Hz)")),
    (CAPS, blk(0, 1_000_000, rate=0), bad("sample_rate", "EMG at 0 Hz (the board samples at 10000, 20000 Hz)")),
    (dataclasses.replace(CAPS, sample_rates_hz=(20200,)), blk(0, 1_000_000, rate=202), "ok"),  # decimation 100
    (dataclasses.replace(CAPS, sample_rates_hz=(20200,)), blk(0, 1_000_000, rate=200),  # 101
     bad("sample_rate", "EMG at 200 Hz (the board samples at 20200 Hz)")),
    (dataclasses.replace(CAPS, sample_rates_hz=(20000, 100)), blk(0, 1_000_000, rate=1), "ok"),
    (CAPS, blk(0, 1_000_000, n=1), "ok"),
    (CAPS, blk(0, 1_000_000, n=0), bad("sample_count", "0 samples per channel (allowed 1-4096)")),
    (CAPS, blk(0, 1_000_000, n=4096), "ok"),
    (CAPS, blk(0, 1_000_000, n=4097), bad("sample_count", "4097 samples per channel (allowed 1-4096)")),
    (None, blk(0, 1_000_000, rate=1), "ok"),
    (None, blk(0, 1_000_000, rate=0), bad("sample_rate", "EMG at 0 Hz (the board samples at unknown Hz)")),
    (None, blk(0, 1_000_000, rate=1_000_000), "ok"),
    (None, blk(0, 1_000_000, rate=1_000_001), bad("sample_rate", "EMG at 1000001 Hz (the board samples at "
                                                                 "unknown Hz)")),
]


@pytest.mark.parametrize(("caps", "msg", "want"), EMG_CAPS_ONLY)
def test_an_emg_block_before_any_configuration(caps, msg, want):
    assert Board(caps).rx(msg) == want


@pytest.mark.parametrize(("dt", "want"), [(20_000 + 2_200, "ok"), (20_000 - 2_200, "ok"),
                                           (20_000 + 2_201, "board_time"), (20_000 - 2_201, "board_time")])
def test_emg_board_time_follows_the_samples_within_1_percent_and_2_ms(dt, want):
    b = Board(CAPS, CONF)
    assert b.rx(blk(0, 1_000_000)) == "ok"
    v = b.verdict(blk(400, 1_000_000 + dt))
    assert (v.reason or "ok") == want


def test_emg_board_time_that_does_not_follow_names_both_durations():
    b = Board(CAPS, CONF)
    assert b.rx(blk(400, 1_000_000), 1.0) == "ok"
    assert b.rx(blk(1_200_400, 63_000_000), 63.0) == \
        bad("board_time", "EMG board time moved 62.0000 s for 1200000 samples at 20000 Hz (60.0000 s)")
    assert b.rx(blk(400, 1_000_000)) == ("duplicate", "", "EMG from sample 400 again")
    assert b.rx(blk(800, 1_000_000)) == \
        bad("time_backwards", "EMG at board time 1000000 us, not after the previous block (1000000 us)")


def test_emg_blocks_duplicated_or_replayed_name_the_samples():
    b = Board(CAPS, CONF)
    for first, t in ((0, 1_000_000), (400, 1_020_000), (800, 1_040_000)):
        assert b.rx(blk(first, t)) == "ok"
    assert b.rx(blk(800, 1_060_000)) == ("duplicate", "", "EMG from sample 800 again")
    assert b.rx(blk(400, 1_060_000)) == ("replayed", "", "EMG from sample 400; the stream is at 1200")
    assert b.rx(blk(1200, 1_060_000)) == "ok"
    assert (b.v.stats["duplicate"], b.v.stats["replayed"]) == (1, 1)


def test_emg_gaps_add_up():
    b = Board(CAPS, CONF)
    for first, t in ((0, 1_000_000), (800, 1_040_000), (2000, 1_100_000)):
        assert b.rx(blk(first, t)) == "ok"
    assert b.v.stats["emg_samples_missed"] == 1200


def test_a_real_emg_gap_is_not_taken_for_a_stray():
    b = Board(CAPS, CONF)
    for first, t in ((0, 1_000_000), (400, 1_020_000), (4000, 1_200_000), (4400, 1_220_000), (4800, 1_240_000)):
        assert b.rx(blk(first, t)) == "ok"
    # a block from before the gap, with a newer board time: not the stream going on
    assert b.rx(blk(800, 1_250_000)) == ("replayed", "", "EMG from sample 800; the stream is at 5200")
    assert b.v.stats["stray_frames"] == 0


def _emg_after_a_stray(b: Board) -> None:
    for first, t in ((0, 1_000_000), (400, 1_020_000), (4000, 1_200_000)):  # 4000: 180 ms ahead
        assert b.rx(blk(first, t)) == "ok"


def test_emg_after_a_stray_block_goes_on_from_before_it_only_with_a_newer_time():
    b = Board(CAPS, CONF)
    _emg_after_a_stray(b)
    # the block before the stray's jump again (its own time): still the same block
    assert b.rx(blk(400, 1_020_000)) == ("replayed", "", "EMG from sample 400; the stream is at 4400")
    # a block from before the stream's position before the jump, though newer: a replay
    assert b.rx(blk(400, 1_040_000)) == ("replayed", "", "EMG from sample 400; the stream is at 4400")
    # where the stream was, but at the time of the last block before the jump: not the stream
    assert got(b.verdict(blk(800, 1_020_000)))[0] == "replayed"
    assert b.v.stats["stray_frames"] == 0
    assert b.rx(blk(800, 1_040_000)) == "ok"
    assert b.rx(blk(800, 1_040_000)) == ("duplicate", "", "EMG from sample 800 again")
    assert b.v.stats["stray_frames"] == 1 and b.v.stats["emg_samples_missed"] == 0


def test_emg_after_two_jumps_ahead_goes_on_from_before_the_first():
    b = Board(CAPS, CONF)
    _emg_after_a_stray(b)
    assert b.rx(blk(8000, 1_400_000)) == "ok"
    assert b.rx(blk(800, 1_040_000)) == "ok"
    assert b.v.stats["stray_frames"] == 1


@pytest.mark.parametrize(("first", "want"), [(800 + 64 * 400, "ok"), (801 + 64 * 400, "replayed")])
def test_emg_may_go_on_from_before_a_stray_within_64_blocks(first, want):
    b = Board(CAPS, CONF)
    for f, t in ((0, 1_000_000), (400, 1_020_000), (40000, 3_000_000)):
        assert b.rx(blk(f, t), t / 1e6) == "ok"
    t = 1_020_000 + (first - 400) * 50
    assert (b.verdict(blk(first, t), 3.0).category) == want


@pytest.mark.parametrize(("first", "want"), [(66, "ok"), (67, "replayed")])
def test_the_stray_window_of_a_stream_of_single_samples_is_64_samples(first, want):
    b = Board(CAPS)
    for f in (0, 1, 1000):
        assert b.rx(blk(f, 1_000_000 + f * 50, n=1)) == "ok"
    assert b.verdict(blk(first, 1_000_000 + first * 50, n=1)).category == want


def test_emg_may_go_on_from_before_a_stray_whatever_it_claims_to_have_skipped():
    b = Board(CAPS)  # before a configuration data may lag 12 s
    assert b.rx(blk(0, 1000), 0.0) == "ok"
    assert b.rx(blk(400, 21_000), 0.02) == "ok"
    assert b.rx(blk(200_400, 10_021_000), 10.0) == "ok"  # 10 s ahead: 199600 samples skipped?
    assert b.rx(blk(800, 41_000), 10.01) == "ok"  # no: a stray
    assert b.v.stats["stray_frames"] == 1 and b.v.stats["emg_samples_missed"] == 0


def test_emg_starts_again_from_sample_0_after_a_configuration_is_acknowledged():
    b = Board(CAPS, CONF)
    for first, t in ((0, 1_000_000), (400, 1_020_000), (800, 1_040_000)):
        assert b.rx(blk(first, t)) == "ok"
    assert b.rx(blk(0, 1_060_000)) == ("replayed", "", "EMG from sample 0; the stream is at 1200")
    assert b.rx(Ack(b.host(CONF))) == "ok"
    assert b.rx(blk(0, 1_070_000)) == "ok"
    assert b.rx(blk(400, 1_090_000)) == "ok"
    assert b.rx(blk(0, 1_110_000))[0] == "replayed"  # once only
    assert b.v.stats["emg_samples_missed"] == 0


def test_emg_blocks_the_stream_skipped_when_it_went_on_from_before_a_stray_are_replays():
    b = Board(CAPS, CONF)
    _emg_after_a_stray(b)
    assert b.rx(blk(1200, 1_060_000)) == "ok"  # from before the stray, 400 samples lost
    assert b.rx(blk(800, 1_040_000)) == ("replayed", "", "EMG from sample 800; the stream is at 1600")
    assert b.v.stats["stray_frames"] == 1 and b.v.stats["emg_samples_missed"] == 400


def test_emg_from_before_a_new_configuration_is_a_replay():
    b = Board(CAPS, dataclasses.replace(CONF, stream_block_samples=100))
    for first, t in ((0, 1_000_000), (100, 1_005_000), (1000, 1_050_000)):  # 800 samples lost
        assert b.rx(blk(first, t, n=100)) == "ok"
    assert b.rx(Ack(b.host(CONF))) == "ok"  # 400-sample blocks: the stream starts again
    assert b.rx(blk(0, 1_060_000)) == "ok"
    # a block numbered as the old stream went on (after its gap): not this stream
    assert b.rx(blk(200, 1_010_000)) == ("replayed", "", "EMG from sample 200; the stream is at 400")


# ----------------------------------------------------------------------------- frame 0: restart or stray


def _numbered(v: FrameValidator, seqs, t0: int = 0, now0: float = 0.0, c0: int = 0) -> None:
    for i, seq in enumerate(seqs):
        assert v.check(Frame(seq, BoardHeartbeat(t0 + i * 1_000_000, c0 + i)), now0 + i)[0].accepted


def test_a_second_frame_0_while_one_is_held_is_a_duplicate():
    v = FrameValidator()
    _numbered(v, range(1, 10))
    assert v.check(Frame(0, BoardHeartbeat(0, 0)), 10.0) == []
    again = BoardHeartbeat(100, 1)
    assert v.check(Frame(0, again), 10.0) == [Verdict(0, again, False, "duplicate", "", "frame number 0 again")]
    assert v.stats["duplicate"] == 1


def test_a_held_frame_0_among_the_old_numbering_is_a_replay():
    v = FrameValidator()
    _numbered(v, range(1, 11))  # last 10; board time 9 s
    held = BoardHeartbeat(9_500_000, 3)  # not a restarted board's first heartbeat
    assert v.check(Frame(0, held), 10.0) == []
    nxt = BoardHeartbeat(10_000_000, 10)
    assert v.check(Frame(11, nxt), 10.0) == [
        Verdict(0, held, False, "replayed", "", "frame number 0 among frames numbered 10..11"),
        Verdict(11, nxt, True)]
    assert v.stats["replayed"] == 1 and v.stats["board_restarts"] == 0


@pytest.mark.parametrize(("counter", "t", "restarted"), [
    (0, 0, True),
    (15, 0, True),
    (16, 0, False),  # a heartbeat counter too high for a board that just started
    (0, 7_000_000 - 1, True),  # the newest board time is 9 s: more than 2 s back
    (0, 7_000_000, False),
])
def test_a_held_heartbeat_decides_a_restart_when_both_numberings_fit(counter, t, restarted):
    v = FrameValidator()
    _numbered(v, range(1, 11))  # frames 1..10, board time up to 9 s
    held = BoardHeartbeat(t, counter)
    assert v.check(Frame(0, held), 10.0) == []
    out = v.check(Frame(11, BoardHeartbeat(t + 100_000, counter + 1)), 10.1)
    assert v.stats["board_restarts"] == int(restarted)
    if restarted:
        assert [x.accepted for x in out] == [True, True]
        [n] = v.take_notices()
        assert (n.kind, n.detail) == ("board_restarted", "the board restarted (its frame numbering began again at 0)")
        assert v.stats["frames_missed"] == 10  # 1..10 of the new numbering
    else:
        assert [x.category for x in out][0] == "replayed" and v.take_notices() == []


@pytest.mark.parametrize(("t", "restarted"), [
    (1_000_000, True),  # the held frame's own board time
    (999_999, False),  # before it
    (3_525_000, True),  # 0.5 s later: at most 0.5 s x 1.05 + 2 s ahead of it
    (3_525_001, False),
    (9_100_000, False),  # the old clock going on: the 0 was a stray (a CI fuzz example)
])
def test_a_restart_needs_the_next_frame_to_go_on_from_the_held_frames_clock(t, restarted):
    v = FrameValidator()
    _numbered(v, range(1, 11))  # frames 1..10, board time up to 9 s, heartbeat counter up to 9
    held = BoardHeartbeat(1_000_000, 0)
    assert v.check(Frame(0, held), 10.0) == []
    out = v.check(Frame(11, BoardStatus(t, Fault.NONE, (), 0, t // 1_000_000)), 10.5)
    assert v.stats["board_restarts"] == int(restarted)
    if restarted:
        assert [x.accepted for x in out] == [True, True]
    else:
        assert out[0] == Verdict(0, held, False, "replayed", "", "frame number 0 among frames numbered 10..11")
        assert out[1].accepted and v.take_notices() == []


def test_a_stray_0_after_a_jump_ahead_does_not_restart_the_clock():
    v = FrameValidator()
    _numbered(v, range(1, 11), 5_000_000, 5.0)  # board time 5-14 s
    assert v.check(Frame(1000, BoardHeartbeat(14_100_000, 10)), 14.1)[0].accepted  # a jump ahead
    assert v.check(Frame(0, BoardHeartbeat(0, 0)), 14.2) == []  # only the new numbering fits the next frame
    out = v.check(Frame(11, BoardHeartbeat(14_300_000, 11)), 14.3)  # but the old clock goes on
    assert [x.category for x in out] == ["replayed", "ok"] and v.stats["board_restarts"] == 0


def test_a_next_frame_without_a_board_time_leaves_the_restart_to_the_numbering():
    v = FrameValidator()
    _numbered(v, range(1000, 1010))
    assert v.check(Frame(0, BoardHeartbeat(500_000_000, 0)), 10.0) == []
    v.check(Frame(1, Nack(0, NackReason.BUSY, "")), 10.1)
    assert v.stats["board_restarts"] == 1


def test_a_held_frame_without_a_board_time_leaves_the_restart_to_the_numbering():
    """A restarted board's frame 0 may be its Capabilities (no board time): the numbering
    decides, as before the clock rule."""
    v = FrameValidator()
    _numbered(v, range(1000, 1010))
    assert v.check(Frame(0, CAPS), 10.0) == []
    v.check(Frame(1, BoardHeartbeat(300_000, 0)), 10.1)
    assert v.stats["board_restarts"] == 1


def test_a_held_status_is_no_sign_of_a_restart():
    v = FrameValidator()
    _numbered(v, range(1, 11))
    assert v.check(Frame(0, BoardStatus(0, Fault.NONE)), 10.0) == []
    out = v.check(Frame(11, BoardHeartbeat(10_000_000, 10)), 10.1)
    assert [x.category for x in out] == ["replayed", "ok"] and v.stats["board_restarts"] == 0


@pytest.mark.parametrize(("nxt", "restarted"), [(64, True), (65, False)])
def test_a_restarted_boards_next_frame_is_numbered_at_most_64(nxt, restarted):
    v = FrameValidator()
    _numbered(v, range(1000, 1010))
    assert v.check(Frame(0, BoardHeartbeat(0, 0)), 10.0) == []
    v.check(Frame(nxt, BoardHeartbeat(100_000, 1)), 10.1)
    assert v.stats["board_restarts"] == int(restarted)


def test_restarts_are_counted_and_the_new_numbering_counts_its_gaps():
    v = FrameValidator()
    _numbered(v, range(1000, 1010))
    for k in (1, 2):
        assert v.check(Frame(0, BoardHeartbeat(0, 0)), 10.0 * k) == []
        missed = v.stats["frames_missed"]
        assert [x.accepted for x in v.check(Frame(3, BoardHeartbeat(100_000, 1)), 10.0 * k)] == [True, True]
        assert v.stats["frames_missed"] - missed == 2 and v.stats["board_restarts"] == k
        _numbered(v, range(1000, 1010), 200_000, 10.0 * k, 2)


def test_frame_0_after_a_wrap_with_frames_lost_is_no_restart():
    v = FrameValidator()
    _numbered(v, range(SEQ_MODULO - 12, SEQ_MODULO - 9))  # last: 2^32 - 10
    assert v.check(Frame(0, BoardHeartbeat(3_000_000, 3)), 3.0) == []
    v.check(Frame(54, BoardHeartbeat(3_100_000, 4)), 3.1)  # 2^32 - 10 + 64
    assert v.stats["board_restarts"] == 0


# ----------------------------------------------------------------------------- reset


def test_reset_forgets_the_board_but_not_its_refusal():
    b = Board(CAPS, CONF)
    b.host(ImpedanceRequest())
    pending = b.host(Hello())
    _numbered(b.v, range(200, 205), 5_000_000, 5.0)
    b.v.reset()
    assert b.v.board_state == "unknown" and b.v.capabilities is None and not b.v.stimulation_allowed
    # the numbering, the clock and the heartbeat counter start anew
    assert b.v.check(Frame(0, BoardHeartbeat(1_000, 0)), 10.0)[0].accepted
    b.bseq = 0
    assert b.rx(ImpedanceResult(2_000, ()), 10.0) == bad("unsolicited", "impedance result without an impedance request")
    assert b.rx(CAPS, 10.0) == bad("unsolicited", "capabilities without a Hello")
    assert b.rx(Ack(pending), 10.0)[1] == "unsolicited"
    # a refused board stays refused over a new connection
    r = Board(None)
    r.host(Hello())
    assert r.rx(dataclasses.replace(CAPS, channels=1))[0] == "refused"
    r.v.reset()
    assert r.v.board_state == "refused"


# ----------------------------------------------------------------------------- counters, refusals, defects


def test_a_new_validator_has_counted_nothing_and_refused_nothing():
    v = FrameValidator()
    assert v.stats == {"accepted": 0, "invalid": 0, "duplicate": 0, "replayed": 0, "refused": 0,
                       "invalid_by_reason": {}, "frames_missed": 0, "epochs_missed": 0, "emg_samples_missed": 0,
                       "heartbeats_missed": 0, "board_restarts": 0, "stray_frames": 0}
    assert v.refusal == "" and v.board_state == "unknown" and v.capabilities is None


def test_every_verdict_is_counted_once():
    b = Board(None)
    for i in range(3):
        assert b.rx(BoardHeartbeat(1_000_000 + i * 100_000, i)) == "ok"
    for i in range(2):
        assert b.rx(BoardHeartbeat(2**63, 10 + i))[1] == "board_time"
    assert b.v.stats["accepted"] == 3 and b.v.stats["invalid"] == 2
    assert b.v.stats["invalid_by_reason"] == {"board_time": 2}


def test_a_refused_boards_frames_are_refused_with_the_refusal():
    b = Board(None)
    b.host(Hello())
    two = dataclasses.replace(CAPS, protocol_version=2)
    assert b.rx(two)[0] == "refused"
    refusal = b.v.refusal
    assert refusal.startswith("board T1 (firmware t-1) claims protocol version 2")
    hb = BoardHeartbeat(1_000_000, 0)
    assert b.verdict(hb) == Verdict(b.bseq, hb, False, "refused", "", refusal)
    b.host(Hello())
    assert b.verdict(two) == Verdict(b.bseq, two, False, "refused", "", refusal)
    assert b.v.stats["refused"] == 3 and b.v.stats["invalid"] == 0


def test_a_defect_in_a_rule_is_a_malformed_verdict(monkeypatch):
    from firmware_bridge import validate

    def broken(self, m, now):
        raise ValueError("a bug")

    monkeypatch.setitem(validate._CHECKS, BoardHeartbeat, broken)
    v = FrameValidator()
    hb = BoardHeartbeat(1, 0)
    assert v.check(Frame(7, hb), 1.0) == [
        Verdict(7, hb, False, "invalid", "malformed", "cannot be checked (ValueError('a bug'))")]
    assert v.stats["invalid_by_reason"] == {"malformed": 1}


@pytest.mark.parametrize(("change", "problems"), [
    (dict(max_current_uA=1000), []),
    (dict(max_current_uA=30000), []),
    (dict(max_current_uA=999), ["maximum current 999 uA (supported: 1000-30000 uA)"]),
    (dict(min_pulse_width_us=1, max_pulse_width_us=50), []),
    (dict(min_pulse_width_us=250, max_pulse_width_us=250), []),
    (dict(min_pulse_width_us=10, max_pulse_width_us=40),
     ["pulse widths 10-40 us (this monitor needs a range within 50-250 us)"]),
    (dict(min_pulse_width_us=251, max_pulse_width_us=300),
     ["pulse widths 251-300 us (this monitor needs a range within 50-250 us)"]),
    (dict(min_rate_mHz=1, max_rate_mHz=500), []),
    (dict(min_rate_mHz=30000, max_rate_mHz=30000), []),
    (dict(min_rate_mHz=100, max_rate_mHz=400),
     ["stimulation rates 100-400 mHz (this monitor needs a range within 500-30000 mHz)"]),
    (dict(min_rate_mHz=30001, max_rate_mHz=40000),
     ["stimulation rates 30001-40000 mHz (this monitor needs a range within 500-30000 mHz)"]),
])
def test_capabilities_ranges_at_their_limits(change, problems):
    assert check_capabilities(dataclasses.replace(CAPS, **change)) == problems


# ----------------------------------------------------------------------------- numbering: jumps and strays


def _frames(v: FrameValidator, seqs, t0: int = 1_000_000) -> list[Verdict]:
    out = []
    for seq in seqs:
        out += v.check(Frame(seq, BoardStatus(t0, Fault.NONE, (), 0, 1)), 1.0)
    return out


def test_frame_numbers_repeated_or_older_in_full():
    v = FrameValidator()
    _frames(v, [1000])
    st = BoardStatus(1_000_000, Fault.NONE, (), 0, 1)
    assert v.check(Frame(1000, st), 1.0) == [Verdict(1000, st, False, "duplicate", "", "frame number 1000 again")]
    assert v.check(Frame(999, st), 1.0) == [
        Verdict(999, st, False, "replayed", "", "frame number 999 is older than 1000")]


def test_a_frame_numbered_half_the_numbering_ahead_is_older():
    v = FrameValidator()
    _frames(v, [1000])
    assert [x.category for x in _frames(v, [1000 + SEQ_MODULO // 2])] == ["replayed"]
    assert [x.category for x in _frames(v, [1000 + SEQ_MODULO // 2 - 1])] == ["ok"]


@pytest.mark.parametrize(("back", "want"), [(1, "ok"), (64, "ok"), (65, "replayed")])
def test_after_a_frame_numbered_ahead_the_numbering_may_go_on_within_64(back, want):
    v = FrameValidator()
    _frames(v, range(1000, 1005))  # last 1004
    _frames(v, [5000])  # 3995 frames lost? or a stray
    [x] = _frames(v, [1004 + back])
    assert x.category == want
    if want == "ok":
        assert v.stats["stray_frames"] == 1 and v.stats["frames_missed"] == back - 1
    else:
        assert v.stats["stray_frames"] == 0 and v.stats["frames_missed"] == 3995


def test_strays_are_counted_and_after_one_an_old_frame_is_a_replay():
    v = FrameValidator()
    _frames(v, range(1000, 1005))
    _frames(v, [5000, 1005, 1006, 9000, 1007])
    assert v.stats["stray_frames"] == 2 and v.stats["frames_missed"] == 0
    assert [x.category for x in _frames(v, [1003])] == ["replayed"]


def test_once_the_numbering_goes_on_after_a_jump_the_jump_was_real():
    v = FrameValidator()
    _frames(v, range(1000, 1005))
    _frames(v, [5000, 5001])
    assert [x.category for x in _frames(v, [1005])] == ["replayed"]
    assert v.stats["frames_missed"] == 3995 and v.stats["stray_frames"] == 0


def _hbs(b: Board, pairs) -> None:
    for c, t in pairs:
        assert b.rx(BoardHeartbeat(t, c)) == "ok", (c, t)


@pytest.mark.parametrize(("back", "want"), [(1, "ok"), (2, "ok"), (64, "ok"), (65, "replayed")])
def test_a_counter_stream_may_go_on_from_before_a_jump_within_64(back, want):
    b = Board(None)
    _hbs(b, [(1000, 1_000_000), (1001, 1_100_000), (5000, 1_150_000)])
    v = b.verdict(BoardHeartbeat(1_200_000, 1001 + back))
    assert v.category == want
    assert b.v.stats["stray_frames"] == (1 if want == "ok" else 0)
    if want == "ok":
        assert b.v.stats["heartbeats_missed"] == back - 1


def test_a_counter_gap_of_one_is_remembered_as_a_jump():
    b = Board(None)
    _hbs(b, [(0, 1_000_000), (1, 1_100_000), (3, 1_150_000), (2, 1_200_000)])  # 3 was a stray
    assert b.v.stats["stray_frames"] == 1 and b.v.stats["heartbeats_missed"] == 0


def test_counter_strays_are_counted():
    b = Board(None)
    _hbs(b, [(0, 1_000_000), (1, 1_100_000), (100, 1_150_000), (2, 1_200_000), (3, 1_300_000),
             (200, 1_350_000), (4, 1_400_000)])
    assert b.v.stats["stray_frames"] == 2 and b.v.stats["heartbeats_missed"] == 0


def test_a_counter_half_the_numbering_ahead_is_older():
    b = Board(None)
    _hbs(b, [(0, 1_000_000)])
    assert b.rx(BoardHeartbeat(1_100_000, SEQ_MODULO // 2)) == \
        ("replayed", "", "heartbeat 2147483648 is older than 0")


def test_a_heartbeat_back_in_time_is_not_taken_for_the_stream_before_a_jump():
    b = Board(None)
    _hbs(b, [(0, 1_000_000), (1, 1_100_000), (10, 1_500_000)])
    assert b.rx(BoardHeartbeat(1_200_000, 11)) == \
        bad("time_backwards", "heartbeat at board time 1200000 us, not after the previous one (1500000 us)")


def test_an_invalid_frames_verdict_in_full():
    v = FrameValidator()
    hb = BoardHeartbeat(MAX_BOARD_TIME_US + 1, 0)
    assert v.check(Frame(7, hb), 1.0) == [
        Verdict(7, hb, False, "invalid", "board_time", "board time 281474976710657 us (8.92 years) is beyond any "
                                                       "plausible uptime (at most 281474976710656 us)")]
