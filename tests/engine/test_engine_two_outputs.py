"""Both outputs at once: the continuous vagal electrode (APS) at 1 Hz while the surgeon's probe
runs a fast train. A probe pulse can fall inside an APS epoch's response window; the engine
tells the analysis where the other output's pulses fall (``StimulusPipeline._other_onsets``),
so that the probe's stimulus artifact is not measured as the vagal response. Before, only the
same output's pulses were told: with the left vagus cut and the probe at 30 Hz on tissue,
every APS epoch read as a response of about 740 µV (the probe's artifact)."""

from __future__ import annotations

import statistics

from app.settings import Settings
from engine_testkit import stepped


def _aps_then_probe_train():
    """A case with the vagal electrode on the left at 1 Hz (25 s: its baseline taken), then
    the probe at 30 Hz on tissue, out of step with the vagal pulses; its own stimuli are
    tagged RLN right, so they count for another nerve."""
    s = stepped(settings=Settings(), seed=5)
    s.run_for(0.5)
    s.must("case.start", patient_id="TWO-OUTPUTS", planned_sides=["L"])
    s.board.control("aps_attach", side="L")
    s.must("aps.side", side="L")
    s.must("stim.output", output="aps", on=True)
    s.run_for(25.0)
    s.board.control("probe", contact="tissue")
    s.must("probe.site", site="RLN", side="R")
    s.must("stim.set", output="probe", rate_hz=30.0, current_mA=1.0)
    s.run_for(0.37)
    s.must("stim.output", output="probe", on=True)
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
