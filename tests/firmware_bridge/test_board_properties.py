"""Property tests of the virtual board: whatever a host sends, and in whatever rhythm, the
board never raises, never stimulates against its safety contract, and answers every
intact frame."""

from __future__ import annotations

import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware_bridge import codec
from firmware_bridge.clock import ManualClock
from firmware_bridge.messages import (
    Ack,
    Capabilities,
    ConfigureAcquisition,
    Hello,
    HostHeartbeat,
    ImpedanceRequest,
    Nack,
    Output,
    SimControl,
    StimMode,
    Stimulate,
)
from firmware_bridge.sim.board import VirtualBoard
from firmware_bridge.sim.physiology import Patient

stimulate = st.builds(
    Stimulate,
    output=st.sampled_from(list(Output)),
    mode=st.sampled_from(list(StimMode)),
    current_uA=st.integers(0, 12000),
    pulse_width_us=st.integers(40, 260),
    rate_mHz=st.integers(400, 31000),
)
configure = st.builds(
    ConfigureAcquisition,
    sample_rate_hz=st.sampled_from([10000, 20000, 12345]),
    channel_mask=st.integers(0, 4),
    gain=st.integers(0, 120),
    stream_enabled=st.booleans(),
    stream_block_samples=st.integers(0, 5000),
    stream_decimation=st.integers(0, 120),
    epoch_pre_ms=st.integers(0, 120),
    epoch_post_ms=st.integers(0, 220),
)
controls = st.sampled_from([
    SimControl("probe", '{"contact": "nerve", "site": "VAGUS", "side": "L"}'),
    SimControl("probe", '{"contact": "air"}'),
    SimControl("aps_attach", '{"side": "R"}'),
    SimControl("cautery", '{"duration_s": 0.3}'),
    SimControl("traction", '{"side": "L", "severity": 0.8, "onset_s": 1}'),
    SimControl("lead_off", '{"electrode": "L_POS"}'),
    SimControl("reset", "{}"),
    SimControl("fault", '{"kind": "over_current"}'),
    SimControl("bogus", "{}"),
    SimControl("probe", "{not json"),
])
host_message = st.one_of(
    st.just(Hello()), st.just(HostHeartbeat(1)), st.just(HostHeartbeat(2)), st.just(ImpedanceRequest()),
    stimulate, stimulate, st.just(ConfigureAcquisition()), configure, controls,
)
action = st.one_of(
    st.tuples(st.just("advance"), st.floats(0.0, 0.3)),
    st.tuples(st.just("advance"), st.floats(0.0, 2.5)),
    st.tuples(st.just("send"), host_message),
    st.tuples(st.just("bytes"), st.binary(min_size=1, max_size=80)),
)


PULSES = []  # pulses delivered per example, to check that the property is exercised


def _note_answers(frames, sent: dict[int, object], answered: set[int]) -> None:
    """Mark the host frames the board answered (Ack/Nack by number; Capabilities answer Hello)."""
    for f in frames:
        m = f.message
        if isinstance(m, (Ack, Nack)):
            answered.add(m.seq)
        elif isinstance(m, Capabilities):
            answered.update(s for s, v in sent.items() if isinstance(v, Hello))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(action, min_size=1, max_size=50))
def test_any_host_behaviour_keeps_the_safety_contract(actions):
    clock = ManualClock()
    board = VirtualBoard(clock, seed=1)
    board.control("aps_attach", side="L")
    dec = codec.Decoder()
    seq = 0
    last_hb: float | None = None  # scenario time of the last heartbeat since the last reset
    sent: dict[int, object] = {}
    answered: set[int] = set()
    resets = 0
    # a host that opened a session, then does anything at all
    prefix = [("send", Hello()), ("send", HostHeartbeat(0)), ("send", ConfigureAcquisition()),
              ("send", Stimulate(Output.APS, StimMode.CONTINUOUS, 1000, 100, 4000))]
    for kind, value in prefix + list(actions):
        if kind == "advance":
            clock.advance(value)
        elif kind == "send":
            frame = codec.encode(value, seq)
            sent[seq] = value
            board.receive(frame)
            if isinstance(value, HostHeartbeat):
                last_hb = board.scenario_time()
            if isinstance(value, SimControl) and value.command == "reset":
                resets += 1
                last_hb = None
            seq += 1
        else:
            board.receive(value)  # random bytes: dropped, never fatal
        _note_answers(dec.feed(board.poll()), sent, answered)
        now = board.scenario_time()
        silent = math.inf if last_hb is None else now - last_hb
        # safety contract: no pulse later than 500 ms after the last heartbeat
        if board.truth:
            t_last_pulse = board.truth[-1].t
            if last_hb is None:
                assert resets or not board.truth  # before any heartbeat nothing was accepted
            else:
                assert t_last_pulse <= last_hb + 0.5 + 1e-6 or resets
        if silent >= 0.5 + 1e-6:
            assert board.stimulating == ()
        if last_hb is not None and silent >= 2.0 + 1e-6:
            assert board.beeper_on
        if last_hb is not None and silent < 2.0 - 1e-6:
            assert not board.beeper_on
    PULSES.append(len(board.truth))
    # every intact host frame other than a heartbeat was answered
    for s, v in sent.items():
        if not isinstance(v, HostHeartbeat) and not (isinstance(v, SimControl) and v.command in ("reset",)):
            if resets == 0:
                assert s in answered, v


def test_the_safety_property_saw_stimulation():
    # runs after the property above (file order): a good share of examples stimulated
    if PULSES:
        assert sum(1 for n in PULSES if n > 0) >= 0.1 * len(PULSES)


@settings(max_examples=80, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    site=st.sampled_from(["VAGUS", "RLN", "EBSLN"]),
    side=st.sampled_from(["L", "R"]),
    current=st.integers(0, 10000),
    pw=st.integers(50, 250),
    contact=st.sampled_from(["nerve", "fluid", "tissue", "air"]),
    t=st.floats(0.0, 30000.0),
)
def test_any_stimulus_gives_a_physical_outcome(seed, site, side, current, pw, contact, t):
    p = Patient(seed)
    on_nerve = contact in ("nerve", "fluid")
    p.set_probe(contact, site if on_nerve else None, side if on_nerve else None)
    out = p.stimulate(t, Output.PROBE, current, pw, 20000)
    assert 0 <= out.delivered_uA <= current * 1.05 + 10
    assert out.amplitude_uV >= 0 and math.isfinite(out.amplitude_uV)
    assert out.overlay.shape == (2, 600) and bool(abs(out.overlay).max() < 1e6)
    if out.amplitude_uV > 0:
        assert 2.0 < out.latency_ms < 12.0 and out.onset_ms < out.latency_ms
    if contact in ("tissue", "air"):
        assert out.amplitude_uV == 0
    r = [p.recruitment(site, side, c / 1000.0, pw) for c in (0, current // 2, current)]
    assert 0.0 <= r[0] <= r[1] <= r[2] <= 1.0
