"""The virtual board through the real codec on a ManualClock: the protocol of
PROTOCOL.md, the safety contract, refusals, controls and faults."""

from __future__ import annotations

import json

import numpy as np
import pytest

from firmware_bridge import codec
from firmware_bridge.clock import ManualClock
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
    SimControl,
    StimEpoch,
    StimMode,
    Stimulate,
)
from firmware_bridge.sim.board import ControlError, VirtualBoard


class Host:
    """A minimal host: encodes with the real codec, decodes the board's bytes."""

    def __init__(self, board: VirtualBoard, clock: ManualClock) -> None:
        self.board, self.clock = board, clock
        self.seq = 0
        self.hb = 0
        self.decoder = codec.Decoder()
        self.inbox: list = []

    def send(self, message) -> int:
        seq = self.seq
        self.board.receive(codec.encode(message, seq))
        self.seq += 1
        return seq

    def heartbeat(self) -> None:
        self.send(HostHeartbeat(counter=self.hb))
        self.hb += 1

    def pump(self) -> list:
        frames = self.decoder.feed(self.board.poll())
        msgs = [f.message for f in frames]
        self.inbox += msgs
        return msgs

    def request(self, message):
        seq = self.send(message)
        for m in self.pump():
            if isinstance(m, (Ack, Nack)) and m.seq == seq:
                return m
            if isinstance(m, Capabilities) and isinstance(message, Hello):
                return m
        raise AssertionError(f"no answer to {message}")

    def run(self, seconds: float, step: float = 0.1, heartbeats: bool = True) -> list:
        out = []
        n = int(round(seconds / step))
        for _ in range(n):
            self.clock.advance(step)
            if heartbeats:
                self.heartbeat()
            out += self.pump()
        return out

    def of(self, kind, msgs=None) -> list:
        return [m for m in (self.inbox if msgs is None else msgs) if isinstance(m, kind)]


def make(seed: int = 3, configure: bool = True, **kw) -> Host:
    clock = ManualClock()
    host = Host(VirtualBoard(clock, seed=seed, **kw), clock)
    assert isinstance(host.request(Hello()), Capabilities)
    host.heartbeat()
    if configure:
        assert isinstance(host.request(ConfigureAcquisition()), Ack)
    return host


# ----------------------------------------------------------------------------- session


def test_hello_gets_capabilities_of_a_simulated_board():
    host = make(configure=False)
    caps = host.of(Capabilities)[0]
    assert caps.simulated and caps.protocol_version == 1 and Output.APS in caps.outputs
    nack = host.request(Hello(protocol_version=7))
    assert isinstance(nack, Nack) and nack.reason == NackReason.UNSUPPORTED_VERSION and "1" in nack.detail


def test_heartbeat_and_status_periods():
    host = make()
    msgs = host.run(3.0)
    beats = host.of(BoardHeartbeat, msgs)
    assert 29 <= len(beats) <= 31
    assert [b.counter for b in beats] == list(range(beats[0].counter, beats[0].counter + len(beats)))
    status = host.of(BoardStatus, msgs)
    assert 3 <= len(status) <= 4
    assert status[-1].faults == Fault.NONE and status[-1].uptime_s in (2, 3)
    assert status[-1].host_heartbeat_age_ms <= 100


def test_acquisition_idle_until_configured():
    host = make(configure=False)
    assert not host.of(EmgBlock, host.run(0.5))
    nack = host.request(Stimulate(Output.PROBE, StimMode.SINGLE))
    assert nack.reason == NackReason.BAD_STATE and "ConfigureAcquisition" in nack.detail
    assert isinstance(host.request(ConfigureAcquisition()), Ack)
    assert host.of(EmgBlock, host.run(0.5))


@pytest.mark.parametrize(
    "field,value,fragment",
    [
        ("sample_rate_hz", 12345, "sample_rate_hz=12345"),
        ("channel_mask", 0, "channel_mask=0 out of range 1-3"),
        ("channel_mask", 4, "channel_mask=4 out of range 1-3"),
        ("gain", 0, "gain=0 out of range 1-100"),
        ("stream_block_samples", 5000, "stream_block_samples=5000 out of range 1-4096"),
        ("stream_decimation", 0, "stream_decimation=0 out of range 1-100"),
        ("stream_decimation", 7, "stream_decimation=7 must divide sample_rate_hz=20000"),
        ("epoch_pre_ms", 101, "epoch_pre_ms=101 out of range 0-100 ms"),
        ("epoch_post_ms", 0, "epoch_post_ms=0 out of range 1-200 ms"),
    ],
)
def test_configure_out_of_range_is_refused_naming_the_field(field, value, fragment):
    host = make(configure=False)
    nack = host.request(ConfigureAcquisition(**{field: value}))
    assert isinstance(nack, Nack) and nack.reason == NackReason.OUT_OF_RANGE
    assert fragment in nack.detail
    assert not host.board.acquiring  # no effect at all


@pytest.mark.parametrize(
    "kw,fragment",
    [
        (dict(current_uA=10001), "current_uA=10001 out of range 0-10000 uA"),
        (dict(pulse_width_us=40), "pulse_width_us=40 out of range 50-250 us"),
        (dict(pulse_width_us=251), "pulse_width_us=251 out of range 50-250 us"),
        (dict(mode=StimMode.CONTINUOUS, rate_mHz=499), "rate_mHz=499 out of range 500-30000 mHz"),
        (dict(mode=StimMode.CONTINUOUS, rate_mHz=30001), "rate_mHz=30001 out of range 500-30000 mHz"),
    ],
)
def test_stimulate_out_of_range_is_refused_naming_field_and_range(kw, fragment):
    host = make()
    args = dict(output=Output.PROBE, mode=StimMode.SINGLE, current_uA=1000, pulse_width_us=100, rate_mHz=4000)
    args.update(kw)
    nack = host.request(Stimulate(**args))
    assert isinstance(nack, Nack) and nack.reason == NackReason.OUT_OF_RANGE
    assert fragment in nack.detail
    msgs = host.run(0.2)
    assert not host.of(StimEpoch, msgs) and host.board.stimulating == ()


def test_stop_is_never_refused_and_single_rate_is_ignored():
    host = make()
    assert isinstance(host.request(Stimulate(Output.APS, StimMode.STOP, current_uA=99999, pulse_width_us=1)), Ack)
    assert isinstance(host.request(Stimulate(Output.PROBE, StimMode.SINGLE, rate_mHz=0)), Ack)


def test_every_accepted_command_is_acked_with_its_sequence_number():
    host = make()
    for m in (Stimulate(Output.PROBE, StimMode.SINGLE), ImpedanceRequest(), SimControl("probe", '{"contact": "air"}'),
              ConfigureAcquisition(stream_block_samples=200)):
        seq = host.send(m)
        acks = [a for a in host.of(Ack, host.pump()) if a.seq == seq]
        assert len(acks) == 1, m


def test_intact_but_bad_frames_are_nacked_and_bad_crcs_dropped():
    host = make()
    good = codec.encode(HostHeartbeat(1), 50)
    corrupted = good[:-1] + bytes([good[-1] ^ 1])
    host.board.receive(b"\x00garbage" + corrupted)
    assert not host.of(Nack, host.pump())
    assert host.board.decoder.counters.bad_crc == 1
    # an unknown type that is otherwise intact
    frame = bytearray(codec.encode(HostHeartbeat(1), 51))
    frame[3] = 0x3E
    head = bytes(frame[:14])
    frame[14:16] = codec.header_crc(head).to_bytes(2, "little")
    frame[-4:] = codec.frame_crc(bytes(frame[:-4])).to_bytes(4, "little")
    host.board.receive(bytes(frame))
    nacks = host.of(Nack, host.pump())
    assert len(nacks) == 1 and nacks[0].seq == 51 and nacks[0].reason == NackReason.UNKNOWN_MESSAGE


def test_board_messages_sent_to_the_board_are_nacked():
    host = make()
    nack = host.request(Ack(seq=3))
    assert nack.reason == NackReason.UNKNOWN_MESSAGE


# ----------------------------------------------------------------------------- safety contract


def _start_aps(host: Host) -> None:
    host.board.control("aps_attach", side="L")
    assert isinstance(host.request(Stimulate(Output.APS, StimMode.CONTINUOUS, 1000, 100, 4000)), Ack)


def test_no_stimulation_before_the_first_heartbeat():
    clock = ManualClock()
    host = Host(VirtualBoard(clock, seed=1), clock)
    host.request(Hello())
    host.request(ConfigureAcquisition())
    nack = host.request(Stimulate(Output.PROBE, StimMode.SINGLE))
    assert nack.reason == NackReason.BAD_STATE and "HostHeartbeat" in nack.detail
    host.run(3.0, heartbeats=False)
    assert not host.board.beeper_on  # never heard a host: nothing to miss


def test_host_silent_500ms_stops_stimulation():
    host = make()
    _start_aps(host)
    msgs = host.run(1.0)
    assert len(host.of(StimEpoch, msgs)) >= 3 and host.board.stimulating == (Output.APS,)
    host.clock.advance(0.45)
    host.pump()
    assert host.board.stimulating == (Output.APS,)  # 450 ms: still going
    host.clock.advance(0.06)
    msgs = host.pump()
    assert host.board.stimulating == ()
    status = host.of(BoardStatus, msgs)[-1]  # sent at once
    assert status.faults & Fault.HOST_SILENT and status.stimulating == ()
    assert status.host_heartbeat_age_ms >= 500
    counter = host.board.truth[-1].stim_counter
    host.run(1.0, heartbeats=False)
    assert host.board.truth[-1].stim_counter == counter  # no pulse since
    nack = host.request(Stimulate(Output.PROBE, StimMode.SINGLE))
    assert nack.reason == NackReason.BAD_STATE and "HOST_SILENT" in nack.detail


def test_only_host_heartbeats_feed_the_watchdog():
    host = make()
    _start_aps(host)
    for _ in range(8):  # commands keep coming, heartbeats do not
        host.clock.advance(0.1)
        host.send(ImpedanceRequest())
        host.pump()
    assert host.board.stimulating == () and host.board.faults & Fault.HOST_SILENT


def test_host_silent_2s_sounds_the_beeper_and_heartbeat_silences_it():
    host = make()
    _start_aps(host)
    host.run(0.5)
    t_silent = host.board.scenario_time()
    host.run(1.9, step=0.05, heartbeats=False)
    assert not host.board.beeper_on
    msgs = host.run(0.2, step=0.05, heartbeats=False)
    assert host.board.beeper_on
    assert host.of(BoardStatus, msgs)[-1].faults & Fault.BACKUP_BEEPER
    (t_on, on), = host.board.beeper_history
    assert on and t_on == pytest.approx(t_silent + 2.0, abs=0.06)
    host.clock.advance(1.0)
    host.heartbeat()
    msgs = host.pump()
    assert not host.board.beeper_on and host.board.beeper_history[-1][1] is False
    assert host.board.beeper_history[-1][0] == pytest.approx(t_silent + 3.0, abs=0.11)
    status = host.of(BoardStatus, msgs)[-1]
    assert not status.faults & (Fault.BACKUP_BEEPER | Fault.HOST_SILENT)
    # stimulation stays stopped until the host commands it again
    msgs = host.run(1.0)
    assert host.board.stimulating == () and not host.of(StimEpoch, msgs)
    assert isinstance(host.request(Stimulate(Output.APS, StimMode.CONTINUOUS, 1000, 100, 4000)), Ack)
    assert host.of(StimEpoch, host.run(1.0))


def test_heartbeats_keep_stimulation_going_for_long():
    host = make()
    _start_aps(host)
    msgs = host.run(10.0, step=0.2)
    assert not host.board.beeper_on and host.board.stimulating == (Output.APS,)
    assert 38 <= len(host.of(StimEpoch, msgs)) <= 41


# ----------------------------------------------------------------------------- impedance, faults


def test_impedance_request_and_lead_off():
    host = make()
    host.board.control("lead_off", electrode="R_NEG")
    host.board.control("impedance", electrode="L_POS", ohm=7000)
    assert isinstance(host.request(ImpedanceRequest()), Ack)
    assert host.request(ImpedanceRequest()).reason == NackReason.BUSY
    msgs = host.run(0.3)
    (res,) = host.of(ImpedanceResult, msgs)
    z = res.as_dict()
    assert set(z) == set(Electrode)
    assert z[Electrode.R_NEG] == -1 and z[Electrode.L_POS] == pytest.approx(7000, rel=0.05)
    assert 500 < z[Electrode.GROUND] < 5000
    assert host.of(BoardStatus)[-1].faults & Fault.LEAD_OFF
    blocks = host.of(EmgBlock, msgs)
    right = np.concatenate([b.samples[1] for b in blocks])
    assert np.all(right == 0)  # flat trace
    assert np.std(np.concatenate([b.samples[0] for b in blocks])) > 0
    host.board.control("lead_on", electrode="R_NEG")
    host.run(0.2)
    assert not host.of(BoardStatus)[-1].faults & Fault.LEAD_OFF


def test_compliance_limit_flag():
    host = make()
    host.board.control("probe", contact="nerve", site="RLN", side="L")
    host.board.control("impedance", electrode="STIM_RETURN", ohm=40000)
    host.request(Stimulate(Output.PROBE, StimMode.SINGLE, current_uA=2000))
    msgs = host.run(0.2)
    (ep,) = host.of(StimEpoch, msgs)
    assert ep.delivered_current_uA < 1100 and host.of(BoardStatus)[-1].faults & Fault.COMPLIANCE_LIMIT
    host.board.control("impedance", electrode="STIM_RETURN", ohm=1000)
    host.request(Stimulate(Output.PROBE, StimMode.SINGLE, current_uA=2000))
    msgs = host.run(0.2)
    assert not host.board.faults & Fault.COMPLIANCE_LIMIT


def test_cautery_saturates_and_flags_it():
    host = make()
    host.board.control("cautery", duration_s=1.0)
    msgs = host.run(0.5)
    fs = host.of(EmgBlock, msgs)
    full = (1 << 20) - 1
    assert max(int(np.abs(b.samples).max()) for b in fs) == full
    assert host.of(BoardStatus, msgs)[-1].faults & Fault.ADC_SATURATION
    host.run(1.0)
    assert not host.board.faults & Fault.ADC_SATURATION


def test_over_current_trip_latches_until_stop():
    host = make()
    _start_aps(host)
    host.board.control("fault", kind="over_current")
    host.run(0.3)
    assert host.board.stimulating == () and host.of(BoardStatus)[-1].faults & Fault.OVER_CURRENT
    assert host.request(Stimulate(Output.APS, StimMode.CONTINUOUS, 1000, 100, 1000)).reason == NackReason.BAD_STATE
    assert isinstance(host.request(Stimulate(Output.APS, StimMode.STOP)), Ack)
    assert not host.board.faults & Fault.OVER_CURRENT
    assert isinstance(host.request(Stimulate(Output.APS, StimMode.CONTINUOUS, 1000, 100, 1000)), Ack)


def test_watchdog_reset_restarts_the_board():
    host = make()
    _start_aps(host)
    host.run(0.5)
    host.board.control("reset")
    msgs = host.run(1.5)
    status = host.of(BoardStatus, msgs)
    assert status[0].faults & Fault.WATCHDOG and not status[-1].faults & Fault.WATCHDOG
    assert status[0].uptime_s == 0
    assert host.board.stimulating == () and not host.board.acquiring
    assert host.decoder.counters.seq_restarts["board"] == 1


def test_unplug_mute_garbage_and_corruption():
    host = make()
    host.board.control("unplug", duration_s=1.0)
    assert host.run(0.9) == []
    msgs = host.run(0.5)
    assert host.of(BoardHeartbeat, msgs) and not host.board.acquiring  # powered up again
    host.request(ConfigureAcquisition())
    host.board.control("mute", duration_s=0.5)
    host.run(0.4)
    before = host.decoder.counters.frames_missed["board"]
    host.run(0.5)
    assert host.decoder.counters.frames_missed["board"] > before  # the host sees the gap
    host.board.control("garbage", n_bytes=300)
    host.board.control("corrupt", frames=2)
    host.run(0.2)
    c = host.decoder.counters
    assert c.garbage >= 1 and c.bad_crc + c.bad_header_crc >= 2


# ----------------------------------------------------------------------------- controls


def test_sim_control_over_the_wire():
    host = make()
    ok = host.request(SimControl("probe", json.dumps({"contact": "nerve", "site": "RLN", "side": "R"})))
    assert isinstance(ok, Ack) and host.board.patient.probe.target() == "RLN-R"
    cases = [
        (SimControl("teleport", "{}"), NackReason.OUT_OF_RANGE, "unknown control 'teleport'"),
        (SimControl("probe", "{nope"), NackReason.MALFORMED, "not JSON"),
        (SimControl("probe", "[1]"), NackReason.MALFORMED, "JSON object"),
        (SimControl("probe", '{"contact": "air", "colour": 1}'), NackReason.MALFORMED, "unknown argument 'colour'"),
        (SimControl("traction", '{"side": "L", "severity": 3}'), NackReason.OUT_OF_RANGE,
         "severity=3 out of range 0-1"),
        (SimControl("traction", "{}"), NackReason.MALFORMED, "missing argument 'side'"),
        (SimControl("lead", '{"electrode": "NOSE"}'), NackReason.OUT_OF_RANGE, "electrode must be one of"),
    ]
    for msg, reason, fragment in cases:
        nack = host.request(msg)
        assert isinstance(nack, Nack) and nack.reason == reason and fragment in nack.detail, (msg, nack)


def test_python_controls_raise_clear_errors():
    host = make()
    with pytest.raises(ControlError, match="control tube: give left and/or right"):
        host.board.control("tube")
    with pytest.raises(ControlError, match="known: .*traction"):
        host.board.control("bogus")


def test_every_control_in_the_docstring_exists():
    import firmware_bridge.sim.board as board_module

    doc = board_module.__doc__
    for name in VirtualBoard.control_table_signatures():
        assert f"``{name}``" in doc, name
