"""Both outputs at once: the continuous vagal electrode (APS) at 1 Hz while the surgeon's probe
runs a train (``app.engine.overlap``).

- The other output's stimulus artifact in an epoch is blanked. Before, with the left vagus
  cut and the probe at 30 Hz on tissue, every APS epoch read as a response of about 740 µV.
- Its *response* cannot be blanked: the probe on the left RLN answers 3-15 ms after its
  pulse, on the same channel as the left vagus. An epoch that a pulse of the other output
  reaches is not measured (``other_stimulus``) unless that pulse is known to evoke nothing
  on this channel, and an epoch waits for the other output's pulses that can reach it.
  Before, the cut left vagus read as answering (about 1,850 µV) and "recovered" while the
  probe checked the left RLN, and probed tissue read as nerve from the vagal response, which
  then made a false loss of signal on the RLN.
"""

from __future__ import annotations

import statistics

from app.settings import Settings
from engine_testkit import rule_events, stepped


def _aps_baseline(tmp_path, seed: int = 5, run_s: float = 25.0, **aps):
    """A case on the left with the vagal electrode on (1 Hz unless ``aps`` says otherwise:
    ``stim.set`` arguments) for ``run_s`` (25 s: its baseline taken)."""
    s = stepped(tmp_path, settings=Settings(), seed=seed)
    s.run_for(0.5)
    s.must("case.start", patient_id="TWO-OUTPUTS", planned_sides=["L"])
    s.board.control("aps_attach", side="L")
    s.must("aps.side", side="L")
    if aps:
        s.must("stim.set", output="aps", **aps)
    s.must("stim.output", output="aps", on=True)
    s.run_for(run_s)
    return s


def _probe(s, contact: str, side: str, rate_hz: float, after_s: float) -> float:
    """The probe, its stimuli tagged RLN ``side``, on ``contact``; started ``after_s`` from
    now (which sets its phase to the vagal pulses). Returns the case time it started."""
    s.board.control("probe", contact=contact, site="RLN", side=side)
    s.must("probe.site", site="RLN", side=side)
    s.must("stim.set", output="probe", rate_hz=rate_hz, current_mA=1.0)
    s.run_for(after_s)
    s.must("stim.output", output="probe", on=True)
    return float(s.monitor.time.now_t())


def _stimuli(s, source: str) -> list[dict]:
    """The journaled stimuli of ``source`` in the open case."""
    case_id = s.monitor.case.case_id
    return [e.payload for e in s.monitor.journal.entries(case_id, kinds=["stimulus"], blobs=False)
            if e.payload["source"] == source]


def _active(s) -> list[tuple[str, str]]:
    return [(a.get("kind"), a.get("key")) for a in s.must("state.get")["alarms"]["active"]]


def _aps_then_probe_train():
    """A case with the vagal electrode on the left at 1 Hz (25 s: its baseline taken), then
    the probe at 30 Hz on tissue, out of step with the vagal pulses; its own stimuli are
    tagged RLN right, so they count for another nerve."""
    s = _aps_baseline(None)
    _probe(s, "tissue", "R", 30.0, 0.37)
    return s


def test_a_fast_probe_train_on_tissue_does_not_read_as_the_cut_vagus_response():
    """The left vagus stops answering while the probe runs: the APS epochs of the last ten
    seconds read below the 100 µV event threshold (or invalid), not as the probe's artifact,
    and the loss of signal on the left vagus is raised."""
    s = _aps_then_probe_train()
    s.board.control("traction", side="L", severity=1.0, onset_s=2)  # the vagal response is gone
    s.run_for(20.0)
    aps = next(x for x in s.must("trend.get")["series"] if x["source"] == "APS" and x["side"] == "L")
    t0 = aps["t_s"][-1] - 10.0  # the last ten seconds: the nerve has long stopped answering
    late = [a for t, a in zip(aps["t_s"], aps["amplitude_uV"], strict=True) if t >= t0]
    assert late, aps
    assert all(a is None or a < 100.0 for a in late), late
    active = [(a.get("kind"), a.get("key")) for a in s.must("state.get")["alarms"]["active"]]
    assert ("loss_of_signal", "VAGUS-L") in active, active  # before: no alarm at all


def test_a_fast_probe_train_on_tissue_leaves_the_healthy_vagus_amplitude_as_it_was():
    """The same, nerve intact: the APS amplitudes while the probe runs stay those of before
    (median within 10 %), every APS epoch a valid response. Before, the probe's artifact
    added about a fifth to them."""
    s = _aps_then_probe_train()
    t_probe = 25.37
    s.run_for(20.0)
    aps = next(x for x in s.must("trend.get")["series"] if x["source"] == "APS" and x["side"] == "L")
    before = [a for t, a in zip(aps["t_s"], aps["amplitude_uV"], strict=True) if 5.0 <= t < t_probe]
    during = [a for t, a in zip(aps["t_s"], aps["amplitude_uV"], strict=True) if t > t_probe + 1.0]
    assert len(before) >= 15 and len(during) >= 15
    assert all(a is not None for a in during), during
    ref = statistics.median(before)
    assert abs(statistics.median(during) - ref) <= 0.10 * ref, (ref, during)
    active = s.must("state.get")["alarms"]["active"]
    assert not [a for a in active if a.get("key") == "VAGUS-L"], active


def test_the_probe_on_the_same_sides_rln_does_not_make_the_cut_vagus_recover(tmp_path):
    """The left vagus is cut (loss of signal raised); the surgeon then checks the left RLN
    with the probe at 30 Hz for 15 s. The RLN answers, below the cut. No APS epoch of the
    train reads as a vagal response, the loss of signal is not "recovered", and once the
    probe stops the vagal electrode measures the silence again. Before, the APS epochs read
    about 1,850 µV and the loss of signal on VAGUS-L recovered."""
    s = _aps_baseline(tmp_path)
    s.board.control("transect", side="L", site="VAGUS")
    s.run_for(6.0)
    assert ("loss_of_signal", "VAGUS-L") in _active(s)
    t_probe = _probe(s, "nerve", "L", 30.0, 0.37)
    s.run_for(15.0)
    probe = [m for m in _stimuli(s, "PROBE") if m["valid"]]
    assert len(probe) > 300 and all(m["response"] for m in probe)  # the RLN answers all along
    during = [m for m in _stimuli(s, "APS") if m["t_s"] > t_probe + 0.1]
    assert len(during) >= 13
    assert all(not m["valid"] and m["invalid_reason"] == "other_stimulus" for m in during), during
    assert not rule_events(s.events, "signal_recovered")
    assert ("loss_of_signal", "VAGUS-L") in _active(s)
    s.must("stim.output", output="probe", on=False)
    t_off = float(s.monitor.time.now_t())
    s.run_for(5.0)
    after = [m for m in _stimuli(s, "APS") if m["t_s"] > t_off + 0.1]
    assert len(after) >= 4 and all(m["valid"] and not m["response"] for m in after), after
    assert ("loss_of_signal", "VAGUS-L") in _active(s) and not rule_events(s.events, "signal_recovered")


def test_a_healthy_vagus_is_not_measured_while_the_probe_answers_on_its_channel(tmp_path):
    """Nerve intact, the probe at 30 Hz on the left RLN: the APS epochs of the train are not
    measured (their window holds the RLN's responses too), no alarm comes, and after the
    probe the vagal amplitude is that of before (median within 10 %). Before, the APS median
    read about twice the baseline."""
    s = _aps_baseline(tmp_path)
    t_probe = _probe(s, "nerve", "L", 30.0, 0.37)
    s.run_for(10.0)
    s.must("stim.output", output="probe", on=False)
    t_off = float(s.monitor.time.now_t())
    s.run_for(10.0)
    aps = _stimuli(s, "APS")
    before = [m["amplitude_uV"] for m in aps if 5.0 <= m["t_s"] < t_probe]
    during = [m for m in aps if t_probe + 0.1 < m["t_s"] < t_off]
    after = [m for m in aps if m["t_s"] > t_off + 0.1]
    assert len(before) >= 15 and len(during) >= 9 and len(after) >= 9
    assert all(m["invalid_reason"] == "other_stimulus" for m in during), during
    assert all(m["valid"] and m["response"] for m in after), after
    ref = statistics.median(before)
    assert abs(statistics.median(m["amplitude_uV"] for m in after) - ref) <= 0.10 * ref
    assert _active(s) == []
    said = [(e["kind"], e["message"]) for e in s.events if e.get("kind", "").startswith("other_stimulus")]
    assert said == [("other_stimulus_start", "left vagus not measured while the probe stimulates: its responses "
                     "may fall in this response window"),
                    ("other_stimulus_end", f"left vagus measured again ({len(during)} stimuli not measured while "
                     "the probe stimulated)")], said


def test_the_probe_on_the_other_sides_rln_leaves_the_vagal_monitoring_alone(tmp_path):
    """The probe at 30 Hz on the right RLN answers on the right channel only: every APS
    epoch on the left is measured while it runs, at the amplitude of before."""
    s = _aps_baseline(tmp_path)
    t_probe = _probe(s, "nerve", "R", 30.0, 0.37)
    s.run_for(15.0)
    aps = _stimuli(s, "APS")
    before = [m["amplitude_uV"] for m in aps if 5.0 <= m["t_s"] < t_probe]
    during = [m for m in aps if m["t_s"] > t_probe + 1.0]
    assert len(during) >= 13 and all(m["valid"] and m["response"] for m in during), during
    ref = statistics.median(before)
    assert abs(statistics.median(m["amplitude_uV"] for m in during) - ref) <= 0.10 * ref
    assert _active(s) == []


def test_probed_tissue_never_reads_the_vagal_response_as_nerve(tmp_path):
    """The probe at 4 Hz on tissue (tagged RLN left), started so that every fourth pulse comes
    5 ms before a vagal pulse: the vagal response lands in that probe epoch's window. No probe
    epoch reads a response, those are not measured, and no alarm comes. Before, a fifth of
    them read about 1,250 µV: a false RLN baseline, then a false loss of signal on RLN-L."""
    s = _aps_baseline(tmp_path)
    t_probe = _probe(s, "tissue", "L", 4.0, 0.995)
    s.run_for(20.0)
    probe = [m for m in _stimuli(s, "PROBE") if m["t_s"] > t_probe]
    assert len(probe) >= 70
    assert not [m for m in probe if m["response"]], [m for m in probe if m["response"]]
    skipped = [m for m in probe if not m["valid"]]
    assert len(skipped) >= 15 and all(m["invalid_reason"] == "other_stimulus" for m in skipped)
    assert len(probe) - len(skipped) >= 50  # the rest measured: no response on tissue
    assert not rule_events(s.events, "baseline_set")[1:]  # the vagal baseline only
    assert _active(s) == []


def _to_phase(s, offset_s: float) -> float:
    """Run on to ``offset_s`` after (or before, if negative) a coming vagal pulse; returns
    that pulse's case time (the vagal pulses come every second, as journaled)."""
    now = float(s.monitor.time.now_t())
    pulse = _stimuli(s, "APS")[-1]["t_s"] + 1.0
    while pulse + offset_s <= now + 0.05:
        pulse += 1.0
    s.run_for(pulse + offset_s - now)
    return pulse


def _vagus_cut(tmp_path):
    s = _aps_baseline(tmp_path)
    s.board.control("transect", side="L", site="VAGUS")
    s.run_for(6.0)
    assert ("loss_of_signal", "VAGUS-L") in _active(s)
    s.board.control("probe", contact="nerve", site="RLN", side="L")
    s.must("probe.site", site="RLN", side="L")
    return s


def _train_on_cut_vagus(tmp_path, rate_hz: float, offset_s: float):
    """The cut vagus (``_vagus_cut``), then the probe's train on the left RLN started
    ``offset_s`` after a vagal pulse; returns the system and that pulse's case time."""
    s = _vagus_cut(tmp_path)
    s.must("stim.set", output="probe", rate_hz=rate_hz, current_mA=1.0)
    pulse = _to_phase(s, offset_s)
    s.must("stim.output", output="probe", on=True)
    return s, pulse


def _offsets(s, pulse: float) -> list[float]:
    """Probe pulses around the vagal pulse at ``pulse``, ms from it (as journaled)."""
    return [round(1000.0 * (m["t_s"] - pulse), 1) for m in _stimuli(s, "PROBE") if abs(m["t_s"] - pulse) < 0.04]


def test_a_probe_trains_first_pulse_just_after_a_vagal_pulse_is_waited_for(tmp_path):
    """The probe train on the left RLN starts 5 ms after a vagal pulse of the cut vagus: when
    that vagal epoch arrives, the probe's first pulse is not known yet. The epoch waits for
    it and is not measured; it never reads the RLN's response (before the wait: 1,804 µV)."""
    s, pulse = _train_on_cut_vagus(tmp_path, 4.0, 0.005)
    s.run_for(3.0)
    assert _offsets(s, pulse) == [5.0]
    first = next(m for m in _stimuli(s, "APS") if abs(m["t_s"] - pulse) < 1e-3)
    assert first["invalid_reason"] == "other_stimulus", first
    assert not [m for m in _stimuli(s, "APS") if m["t_s"] >= pulse and m["response"]]
    assert not rule_events(s.events, "signal_recovered")


def test_single_probe_pulses_just_after_vagal_pulses_never_read_as_the_cut_vagus(tmp_path):
    """Two single probe pulses on the left RLN, 5 and 12 ms after vagal pulses of the cut
    vagus: neither vagal epoch reads a response (before: 2,009 and 1,794 µV)."""
    s = _vagus_cut(tmp_path)
    pulses = []
    for offset in (0.005, 0.012):
        pulses.append(_to_phase(s, offset))
        s.must("stim.single")
    s.run_for(1.5)
    aps = {round(m["t_s"], 3): m for m in _stimuli(s, "APS")}
    for pulse, offset in zip(pulses, (5.0, 12.0), strict=True):
        assert _offsets(s, pulse) == [offset]
        m = aps[round(pulse, 3)]
        assert m["invalid_reason"] == "other_stimulus" and not m["response"], m
    assert not rule_events(s.events, "signal_recovered")


def test_a_slow_vagal_electrode_still_keeps_its_response_out_of_probe_epochs(tmp_path):
    """The vagal electrode at 0.5 Hz (its slowest), the probe at 4 Hz on tissue, one probe
    pulse 5 ms before each vagal pulse: no probe epoch reads the vagal response (before, one
    every two seconds did: a false RLN baseline, then a false loss of signal)."""
    s = _aps_baseline(tmp_path, run_s=30.0, rate_hz=0.5)
    s.board.control("probe", contact="tissue")
    s.must("probe.site", site="RLN", side="L")
    s.must("stim.set", output="probe", rate_hz=4.0, current_mA=1.0)
    now = float(s.monitor.time.now_t())
    s.run_for(_stimuli(s, "APS")[-1]["t_s"] + 4.0 - 0.005 - now)
    t0 = float(s.monitor.time.now_t())
    s.must("stim.output", output="probe", on=True)
    s.run_for(12.0)
    probe = [m for m in _stimuli(s, "PROBE") if m["t_s"] > t0]
    assert len(probe) >= 45 and not [m for m in probe if m["response"]]
    assert sum(m["invalid_reason"] == "other_stimulus" for m in probe) >= 5
    assert not [e for e in rule_events(s.events, "baseline_set") if e.get("site") == "RLN"]
    assert _active(s) == []


def test_a_contralateral_probe_train_close_before_the_vagal_pulse_leaves_it_measured(tmp_path):
    """The probe at 30 Hz on the right RLN, a pulse 14 ms before each vagal pulse and the next
    19 ms after it: both reach the vagal epoch and the vagal pulse reaches both of theirs.
    Their nearest neighbours of the train that nothing reached evoke nothing on the left
    channel, so every vagal epoch is measured (judged by the adjacent pulses alone, which
    are reached too, none was)."""
    s = _aps_baseline(tmp_path)
    s.board.control("probe", contact="nerve", site="RLN", side="R")
    s.must("probe.site", site="RLN", side="R")
    s.must("stim.set", output="probe", rate_hz=30.0, current_mA=1.0)
    pulse = _to_phase(s, -0.014)
    s.must("stim.output", output="probe", on=True)
    s.run_for(8.0)
    later = pulse + 5.0
    assert _offsets(s, later) == [-14.0, 19.3]
    during = [m for m in _stimuli(s, "APS") if m["t_s"] > pulse + 1.5]
    assert len(during) >= 6 and all(m["valid"] and m["response"] for m in during), during


def test_a_single_pulse_during_a_train_does_not_stop_the_train_being_watched(tmp_path):
    """The probe at 10 Hz on the left RLN, 5 ms after each vagal pulse of the cut vagus; the
    surgeon also asks a single pulse. The train goes on, and so does its watch: no vagal
    epoch reads the RLN's response and the loss of signal does not "recover" (before: every
    one after the single pulse read about 1,900 µV, and it recovered)."""
    s, pulse = _train_on_cut_vagus(tmp_path, 10.0, 0.005)
    s.run_for(2.0)
    s.must("stim.single")
    s.run_for(5.0)
    aps = [m for m in _stimuli(s, "APS") if m["t_s"] >= pulse]
    assert len(aps) >= 6 and all(m["invalid_reason"] == "other_stimulus" for m in aps), aps
    assert not rule_events(s.events, "signal_recovered")


def test_a_single_pulse_just_after_a_stop_is_not_taken_for_the_trains_last(tmp_path):
    """The probe train on the left RLN is stopped, and 60 ms later a single pulse lands 5 ms
    after a vagal pulse of the cut vagus: that vagal epoch is not measured (before, the
    train's last pulse passed for the single one, and the epoch read about 1,900 µV)."""
    s = _vagus_cut(tmp_path)
    s.must("stim.set", output="probe", rate_hz=30.0, current_mA=1.0)
    s.must("stim.output", output="probe", on=True)
    s.run_for(0.5)
    pulse = _to_phase(s, -0.055)
    s.must("stim.output", output="probe", on=False)
    s.run_for(0.06)
    s.must("stim.single")
    s.run_for(1.0)
    assert 5.0 in _offsets(s, pulse), _offsets(s, pulse)
    aps = [m for m in _stimuli(s, "APS") if abs(m["t_s"] - pulse) < 0.02]
    assert aps and all(m["invalid_reason"] == "other_stimulus" for m in aps), aps
    assert not rule_events(s.events, "signal_recovered")


def test_pulses_from_before_a_board_restart_are_forgotten(tmp_path):
    """The probe ran, then the board restarts (its clock starts again at 0). A probe train
    started 5 ms after a vagal pulse of the cut vagus is watched as any first train: the
    vagal epoch is not measured (before, the probe's pulses from before the restart, far
    ahead of the new clock, passed for the new train's, and it read about 1,860 µV)."""
    s = _vagus_cut(tmp_path)
    s.must("stim.set", output="probe", rate_hz=10.0, current_mA=1.0)
    s.must("stim.output", output="probe", on=True)
    s.run_for(2.0)
    s.must("stim.output", output="probe", on=False)
    s.run_for(0.5)
    s.board.control("reset")
    s.run_for(4.0)
    pulse = _to_phase(s, 0.005)
    s.must("stim.output", output="probe", on=True)
    s.run_for(0.4)
    s.must("stim.output", output="probe", on=False)
    s.run_for(1.2)
    assert _offsets(s, pulse) == [5.0]
    first = [m for m in _stimuli(s, "APS") if abs(m["t_s"] - pulse) < 0.02]
    assert first and all(m["invalid_reason"] == "other_stimulus" for m in first), first
    assert not rule_events(s.events, "signal_recovered")


def test_a_slow_probe_train_on_the_other_side_in_step_with_the_vagal_pulses_is_measured(tmp_path):
    """The probe at 2 Hz on the right RLN, every other pulse 5 ms after a vagal pulse on the
    left: those pulses reach each other's epochs both ways. The vagal electrode's pulses
    measured on the right channel before (every tenth, while the probe rests) vouch that it
    evokes nothing there, and the probe's pulses out of reach that they evoke nothing on
    the left: every epoch of both is measured (before, every vagal epoch and every other
    probe epoch were not)."""
    s = _aps_baseline(tmp_path)
    s.board.control("probe", contact="nerve", site="RLN", side="R")
    s.must("probe.site", site="RLN", side="R")
    s.must("stim.set", output="probe", rate_hz=2.0, current_mA=1.0)
    pulse = _to_phase(s, 0.005)
    s.must("stim.output", output="probe", on=True)
    s.run_for(6.0)
    assert 5.0 in _offsets(s, pulse + 3.0)
    probe = [m for m in _stimuli(s, "PROBE") if m["t_s"] > pulse]
    aps = [m for m in _stimuli(s, "APS") if m["t_s"] > pulse]
    assert len(probe) >= 10 and all(m["valid"] and m["response"] for m in probe), probe
    assert len(aps) >= 5 and all(m["valid"] and m["response"] for m in aps), aps


def test_a_brief_touch_of_the_nerve_between_slow_probe_pulses_is_not_vouched_away(tmp_path):
    """The probe at 4 Hz on tissue (tagged RLN left), one pulse 3 ms after each vagal pulse of
    the cut vagus; four times the surgeon touches the left RLN for 150 ms around that pulse.
    Its neighbours on tissue must not vouch for it: no vagal epoch reads the RLN's response
    and the loss of signal stays (before: 1,760-1,820 µV and "recovered")."""
    s = _vagus_cut(tmp_path)
    s.board.control("probe", contact="tissue")
    s.must("stim.set", output="probe", rate_hz=4.0, current_mA=1.0)
    start = _to_phase(s, 0.003)
    s.must("stim.output", output="probe", on=True)
    for _ in range(4):
        _to_phase(s, -0.075)
        s.board.control("probe", contact="nerve", site="RLN", side="L")
        s.run_for(0.15)
        s.board.control("probe", contact="tissue")
    s.run_for(2.0)
    assert not [m for m in _stimuli(s, "APS") if m["t_s"] >= start and m["response"]]
    assert ("loss_of_signal", "VAGUS-L") in _active(s) and not rule_events(s.events, "signal_recovered")


def test_a_vagal_electrode_changed_vouches_for_nothing_from_before(tmp_path):
    """The vagal electrode at 0.1 mA (no response), the probe at 30 Hz on tissue tagged RLN
    left; then the electrode's current goes up to 2 mA and the vagus answers. Its pulses from
    before the change must not vouch that it evokes nothing: no probe epoch reads the vagal
    response, no RLN baseline, no alarm (before: 1,281-1,394 µV, a false RLN baseline, then a
    false loss of signal)."""
    s = _aps_baseline(tmp_path, run_s=5.0, current_mA=0.1)
    _probe(s, "tissue", "L", 30.0, 0.0)
    s.run_for(2.0)
    s.must("stim.set", output="aps", current_mA=2.0)
    s.run_for(6.0)
    assert not [m for m in _stimuli(s, "PROBE") if m["response"]]
    assert not [e for e in rule_events(s.events, "baseline_set") if e.get("site") == "RLN"]
    assert _active(s) == []


def test_probe_epochs_lost_on_the_wire_count_as_reaching(tmp_path):
    """The probe at 4 Hz on the left RLN, a pulse 12 ms after each vagal pulse of the cut
    vagus, while a fifth of the epochs are lost on the wire: a vagal epoch whose reaching
    probe pulse never arrived is not measured, never read as answering (before: 1,935 µV)."""
    s, start = _train_on_cut_vagus(tmp_path, 4.0, 0.012)
    s.run_for(2.0)
    s.fault("drop StimEpoch p=0.2")
    s.run_for(20.0)
    assert not [m for m in _stimuli(s, "APS") if m["t_s"] >= start and m["response"]]
    assert not rule_events(s.events, "signal_recovered")


def test_the_next_case_starts_without_the_last_ones_run_of_stimuli_not_measured(tmp_path):
    """The vagal electrode is not measured while the probe answers on its channel (said);
    the case closes meanwhile and the next one opens with the probe off: the next case's
    events never say the vagus is "measured again" after stimuli of the last case."""
    s = _aps_baseline(tmp_path)
    _probe(s, "nerve", "L", 30.0, 0.37)
    s.run_for(5.0)
    assert [e for e in s.events if e.get("kind") == "other_stimulus_start"]
    s.must("case.close")  # (both outputs stop with it)
    n = len(s.events)
    s.must("case.start", patient_id="TWO-OUTPUTS-2", planned_sides=["L"])
    s.must("stim.output", output="aps", on=True)
    s.run_for(5.0)
    assert [m for m in _stimuli(s, "APS") if m["valid"] and m["response"]]
    assert not [e for e in s.events[n:] if e.get("kind", "").startswith("other_stimulus")]
