"""The virtual patient against clinical-rules.md: statistics over seeded patients and
trials, and what each confounder does to the evoked response."""

from __future__ import annotations

import math

import numpy as np
import pytest

from firmware_bridge.messages import Electrode, Output
from firmware_bridge.sim.physiology import Patient, PatientParams, PhysiologyError

FS = 20000
N_PATIENTS = 600


@pytest.fixture(scope="module")
def population() -> list[PatientParams]:
    return [PatientParams.draw(seed) for seed in range(N_PATIENTS)]


def measure(overlay: np.ndarray, side: str, fs: int = FS, blank_ms: float = 1.5) -> tuple[float, float | None]:
    """Reference measurement (recording-exchange.md): peak-to-peak after the artifact
    blank, latency to the first extremum reaching 50 % of the largest deflection."""
    x = overlay[0 if side == "L" else 1].astype(np.float64)
    b = int(blank_ms * fs / 1000)
    w = x[b:]
    p2p = float(w.max() - w.min())
    big = np.max(np.abs(w))
    if big < 1e-9:
        return 0.0, None
    for i in range(1, len(w) - 1):
        if abs(w[i]) >= 0.5 * big and abs(w[i]) >= abs(w[i - 1]) and abs(w[i]) >= abs(w[i + 1]):
            return p2p, (i + b) * 1000.0 / fs
    return p2p, None


def stim(p: Patient, t: float = 0.0, output: Output = Output.PROBE, uA: int = 1000, pw: int = 100):
    return p.stimulate(t, output, uA, pw, FS)


# ----------------------------------------------------------------------------- population


def test_latency_per_site_matches_the_normal_values(population):
    rln = np.array([p.side(s).rln_latency_ms for p in population for s in "LR"])
    right = np.array([p.right.vagus_latency_ms for p in population if not p.nonrecurrent_right])
    left = np.array([p.left.vagus_latency_ms for p in population])
    # clinical-rules: RLN 3.4-4.0 ms, right vagus 5.5-6.7 ms, left vagus 7.5-8.1 ms
    assert 3.55 <= np.median(rln) <= 3.85
    assert np.percentile(rln, 5) >= 3.3 and np.percentile(rln, 95) <= 4.1
    assert 5.9 <= np.median(right) <= 6.3
    assert np.percentile(right, 5) >= 5.3 and np.percentile(right, 95) <= 6.9
    assert 7.65 <= np.median(left) <= 7.95
    assert np.percentile(left, 5) >= 7.3 and np.percentile(left, 95) <= 8.3


def test_left_vagus_is_always_longer_than_right(population):
    for p in population:
        if not p.nonrecurrent_right:
            assert p.left.vagus_latency_ms > p.right.vagus_latency_ms + 0.4, p.seed
        assert p.left.vagus_latency_ms > p.left.rln_latency_ms + 3.0


def test_amplitudes_match_the_normal_values(population):
    rln = np.array([p.side(s).rln_amp_uV for p in population for s in "LR"])
    vagus = np.array([p.side(s).vagus_amp_uV for p in population for s in "LR"])
    # RLN 700-900 uV (SD ~500); vagus 520-740 uV (SD ~400)
    assert 680 <= rln.mean() <= 920 and 300 <= rln.std() <= 650
    assert 520 <= vagus.mean() <= 760 and 250 <= vagus.std() <= 550
    assert np.all(vagus <= rln + 1e-9)  # the vagus recruits no more than its RLN
    # some patients have a poor baseline (< 200 uV), most an adequate one (>= 500 uV)
    assert 0.01 <= np.mean(vagus < 200) <= 0.15
    assert np.mean(rln >= 500) >= 0.5


def test_ebsln_glottic_response_in_about_70_percent(population):
    glottic = np.array([p.ebsln_glottic for p in population])
    assert 0.63 <= glottic.mean() <= 0.77
    ratios = np.array([p.side(s).ebsln_amp_uV / p.side(s).rln_amp_uV
                       for p in population if p.ebsln_glottic for s in "LR"])
    assert 0.36 <= ratios.mean() <= 0.44
    assert all(p.left.ebsln_amp_uV == 0 and p.right.ebsln_amp_uV == 0 for p in population if not p.ebsln_glottic)
    lat = np.array([p.side(s).ebsln_latency_ms for p in population for s in "LR"])
    assert 3.45 <= lat.mean() <= 3.75


def test_tube_electrodes_pass_the_tube_check(population):
    """Impedance < 5 kOhm and pair imbalance < 1 kOhm (clinical-rules.md) for a well-placed tube."""
    for p in population:
        for s in "LR":
            z1, z2 = p.side(s).electrode_ohm
            assert max(z1, z2) < 5000 and abs(z1 - z2) < 1000, p.seed
        assert p.ground_ohm < 5000


def test_nonrecurrent_right_nerve_is_rare_and_fast(population):
    nr = [p for p in population if p.nonrecurrent_right]
    assert len(nr) <= 0.02 * N_PATIENTS  # about 0.5 % of patients
    forced = [PatientParams.draw(seed, {"nonrecurrent_right": True}) for seed in range(100)]
    assert all(p.right.vagus_latency_ms < 3.5 for p in forced)
    assert all(p.left.vagus_latency_ms > 7.0 for p in forced)  # the left side is normal


def test_recruitment_thresholds_and_plateau():
    currents = np.arange(0.05, 3.0, 0.01)
    thresholds = {"VAGUS": [], "RLN": []}
    for seed in range(150):
        p = Patient(seed)
        for site in thresholds:
            r = np.array([p.recruitment(site, "L", c) for c in currents])
            assert np.all(np.diff(r) >= -1e-12), "recruitment must never fall with current"
            thresholds[site].append(currents[np.argmax(r >= 0.1)])
            assert p.recruitment(site, "L", 0.1) < 0.02
            assert p.recruitment(site, "L", 1.0) >= 0.85  # plateau reached around 1 mA
            assert abs(p.recruitment(site, "L", 2.0) - p.recruitment(site, "L", 1.3)) < 0.02
    # minimal stimulation threshold: vagus ~0.4 mA, RLN ~0.5 mA
    assert 0.35 <= np.mean(thresholds["VAGUS"]) <= 0.45
    assert 0.45 <= np.mean(thresholds["RLN"]) <= 0.55


def test_shorter_pulses_need_more_current():
    p = Patient(3)
    at = [p.recruitment("RLN", "L", 0.6, pw) for pw in (50, 100, 250)]
    assert at[0] < at[1] < at[2]


# ----------------------------------------------------------------------------- waveforms


@pytest.mark.parametrize("site", ["VAGUS", "RLN", "EBSLN"])
def test_waveform_matches_its_truth(site):
    """The overlay really has the amplitude and first-peak latency the patient reports."""
    for seed in range(40):
        p = Patient(seed, {"ebsln_glottic": True})
        for side in "LR":
            p.set_probe("nerve", site, side)
            out = stim(p, uA=1500)
            assert out.target == f"{site}-{side}"
            p2p, lat = measure(out.overlay, side)
            assert p2p == pytest.approx(out.amplitude_uV, rel=0.03)
            assert lat == pytest.approx(out.latency_ms, abs=0.06)
            assert out.onset_ms < out.latency_ms - 0.3
            # biphasic: both polarities, the second phase within a few ms
            x = out.overlay[0 if side == "L" else 1, int(0.0015 * FS):]
            assert x.max() > 0.25 * p2p and x.min() < -0.25 * p2p


def test_trial_to_trial_jitter():
    p = Patient(11)
    p.set_probe("nerve", "VAGUS", "R")
    outs = [stim(p, t=i * 0.25) for i in range(300)]
    amps = np.array([o.amplitude_uV for o in outs])
    lats = np.array([o.latency_ms for o in outs])
    assert 0.03 <= amps.std() / amps.mean() <= 0.08
    assert 0.02 <= lats.std() <= 0.07
    assert abs(lats.mean() - p.params.right.vagus_latency_ms) < 0.05


def test_same_seed_same_patient_and_trials():
    a, b = Patient(5), Patient(5)
    assert a.params == b.params
    for p in (a, b):
        p.set_probe("nerve", "RLN", "L")
    oa, ob = stim(a), stim(b)
    assert oa.amplitude_uV == ob.amplitude_uV and np.array_equal(oa.overlay, ob.overlay)
    assert Patient(6).params != a.params


def test_stimulus_artifact_proportional_to_current_and_short():
    p = Patient(2)
    p.set_probe("tissue")
    o1, o2 = stim(p, uA=1000), stim(p, uA=2000)
    assert o1.amplitude_uV == 0 and o1.target is None
    a1, a2 = np.abs(o1.overlay[0, 0]), np.abs(o2.overlay[0, 0])
    assert a2 / a1 == pytest.approx(o2.delivered_uA / o1.delivered_uA, rel=0.02)
    after = np.abs(o2.overlay[:, int(0.002 * FS):]).max()
    assert after < 0.01 * a2  # decayed within 2 ms


# ----------------------------------------------------------------------------- contact, current


def test_delivered_current_by_contact():
    p = Patient(4)
    p.set_probe("nerve", "RLN", "L")
    nerve = [stim(p, uA=1000).delivered_uA for _ in range(50)]
    assert all(abs(d - 1000) <= 20 for d in nerve)  # within 2 %
    p.set_probe("tissue")
    out = stim(p)
    assert abs(out.delivered_uA - 1000) <= 20 and out.amplitude_uV == 0
    p.set_probe("air")
    out = stim(p, uA=2000)
    assert out.delivered_uA < 10 and out.compliance_limited and out.amplitude_uV == 0
    for seed in range(10):
        q = Patient(seed)
        q.set_probe("fluid", "RLN", "L")
        out = stim(q, uA=1000)
        assert out.delivered_uA < 0.7 * 1000  # shunted: well below set
        assert out.amplitude_uV < 0.2 * q.params.left.rln_amp_uV  # weak or absent


def test_compliance_limit_and_open_output():
    p = Patient(4)
    p.set_probe("nerve", "VAGUS", "L")
    p.set_impedance(Electrode.STIM_RETURN, 30000)
    out = stim(p, uA=3000)
    assert out.compliance_limited and out.delivered_uA < 0.5 * 3000
    p.set_impedance(Electrode.STIM_RETURN, 1000)
    assert not stim(p, uA=3000).compliance_limited
    p.set_output(Output.PROBE, "open")
    assert stim(p).delivered_uA < 10
    p.set_output(Output.PROBE, "shunt", 0.5)
    assert stim(p).delivered_uA == pytest.approx(500, abs=15)
    p.set_output(Output.PROBE, "ok")
    p.set_lead(Electrode.STIM_RETURN, True)
    assert stim(p).delivered_uA < 10


def test_aps_electrode_stimulates_its_vagus():
    p = Patient(8)
    assert stim(p, output=Output.APS).delivered_uA < 10  # not attached: open circuit
    p.attach_aps("R")
    out = stim(p, output=Output.APS)
    assert out.target == "VAGUS-R" and out.amplitude_uV > 0.8 * p.params.right.vagus_amp_uV
    p.set_aps_contact(0.3)  # slipping electrode: less effective current
    assert stim(p, output=Output.APS).amplitude_uV < out.amplitude_uV
    p.detach_aps()
    assert stim(p, output=Output.APS).target is None


def test_probe_beside_the_nerve_needs_more_current():
    p = Patient(9)
    p.set_probe("nerve", "RLN", "L", distance_mm=2.0)
    weak = stim(p, uA=1000).amplitude_uV
    strong = stim(p, uA=5000).amplitude_uV
    assert weak < 0.2 * strong


# ----------------------------------------------------------------------------- confounders


def _aps_series(p: Patient, times) -> tuple[np.ndarray, np.ndarray]:
    outs = [stim(p, t=t, output=Output.APS) for t in times]
    return np.array([o.amplitude_uV for o in outs]), np.array([o.latency_ms or math.nan for o in outs])


def test_traction_amplitude_falls_latency_rises_then_recovers():
    p = Patient(21)
    p.attach_aps("L")
    base_a, base_l = _aps_series(p, np.arange(0, 20, 1.0))
    a0, l0 = base_a.mean(), base_l.mean()
    p.traction(20.0, "L", severity=0.9, onset_s=60.0)
    t = np.arange(20.0, 200.0, 1.0)
    a, lat = _aps_series(p, t)
    frac = a / a0
    assert frac[-1] < 0.2 and np.nanmean(lat[-10:]) > 1.1 * l0  # combined-event pattern
    t50 = t[np.argmax(frac < 0.5)]
    t30 = t[np.argmax(frac < 0.3)]
    assert t30 - t50 < 60.0  # the 50 % -> 70 % drop takes under a minute
    p.release(200.0, "L", recovery_s=60.0)
    a, lat = _aps_series(p, np.arange(500.0, 520.0, 1.0))
    assert a.mean() > 0.9 * a0 and abs(np.nanmean(lat) - l0) < 0.1
    # partial recovery
    q = Patient(21)
    q.attach_aps("L")
    q.traction(0.0, "L", severity=1.0, onset_s=10.0)
    q.release(100.0, "L", recovery_s=30.0, residual=0.5)
    a, _ = _aps_series(q, [400.0])
    assert 0.35 * a0 < a[0] < 0.65 * a0


def test_traction_is_segmental_distal_points_still_respond():
    p = Patient(22)
    p.traction(0.0, "R", severity=1.0, onset_s=1.0, position=0.3)
    p.set_probe("nerve", "RLN", "R", position=0.1)
    assert stim(p, t=100.0).amplitude_uV > 0.8 * p.params.right.rln_amp_uV  # distal to the injury
    p.set_probe("nerve", "RLN", "R", position=0.6)
    assert stim(p, t=100.0).amplitude_uV < 5
    p.set_probe("nerve", "VAGUS", "R")
    assert stim(p, t=100.0).amplitude_uV < 5
    p.set_probe("nerve", "VAGUS", "L")
    assert stim(p, t=100.0).amplitude_uV > 0.5 * p.params.left.vagus_amp_uV  # other side untouched


def test_transection_type1_and_type2():
    p = Patient(23)
    p.transect("L", "RLN", position=0.4)  # segmental: type 1
    for pos, responds in ((0.1, True), (0.39, True), (0.5, False), (0.9, False)):
        p.set_probe("nerve", "RLN", "L", position=pos)
        assert (stim(p).amplitude_uV > 100) is responds, pos
    p.set_probe("nerve", "VAGUS", "L")
    assert stim(p).amplitude_uV == 0
    q = Patient(23)
    q.transect("R", "RLN", position=0.0)  # global: type 2
    for pos in (0.0, 0.2, 0.8):
        q.set_probe("nerve", "RLN", "R", position=pos)
        assert stim(q).amplitude_uV == 0
    q.set_probe("nerve", "VAGUS", "L")  # contralateral vagus fine
    assert stim(q).amplitude_uV > 100


def test_tube_displacement_changes_amplitude_only():
    p = Patient(24)
    p.attach_aps("R")
    a0, l0 = _aps_series(p, np.arange(0, 40, 1.0))
    p.set_tube(40.0, right=0.35, over_s=2.0)
    a1, l1 = _aps_series(p, np.arange(45, 85, 1.0))
    assert a1.mean() / a0.mean() == pytest.approx(0.35, rel=0.05)
    assert abs(l1.mean() - l0.mean()) < 0.03  # latency stable
    assert p.tube_factor(50.0, "L") == 1.0  # per side


def test_neuromuscular_blockade_depresses_both_sides():
    p = Patient(25)
    before = {}
    for side in "LR":
        p.set_probe("nerve", "VAGUS", side)
        before[side] = np.mean([stim(p, t=0.0).amplitude_uV for _ in range(10)])
    p.set_nmb(0.0, 0.9, onset_s=30.0)
    for side in "LR":
        p.set_probe("nerve", "VAGUS", side)
        after = np.mean([stim(p, t=300.0).amplitude_uV for _ in range(10)])
        assert after < 0.15 * before[side]


def test_nonrecurrent_nerve_depends_on_where_the_vagus_is_stimulated():
    p = Patient(26, {"nonrecurrent_right": True})
    p.set_probe("nerve", "VAGUS", "R", position=0.8)  # above the branch
    out = stim(p)
    assert out.amplitude_uV > 100 and out.latency_ms < 3.5
    p.set_probe("nerve", "VAGUS", "R", position=0.2)  # below it: no laryngeal response
    assert stim(p).amplitude_uV == 0
    p.set_probe("nerve", "VAGUS", "L")
    assert stim(p).latency_ms > 7.0


def test_overrides_and_their_errors():
    p = PatientParams.draw(1, {"rln_amp_uV": {"L": 250.0}, "heart_rate_bpm": 60, "ebsln_glottic": False})
    assert p.left.rln_amp_uV == 250.0 and p.right.rln_amp_uV != 250.0 and p.heart_rate_bpm == 60.0
    with pytest.raises(PhysiologyError, match="unknown patient parameter 'bogus'"):
        PatientParams.draw(1, {"bogus": 1})
    with pytest.raises(PhysiologyError, match="heart_rate_bpm must be a number"):
        PatientParams.draw(1, {"heart_rate_bpm": "fast"})
    with pytest.raises(PhysiologyError, match="sides must be L and/or R"):
        PatientParams.draw(1, {"rln_amp_uV": {"X": 1.0}})
    p = Patient(1)
    with pytest.raises(PhysiologyError, match="severity=2 out of range 0-1"):
        p.traction(0.0, "L", severity=2)
    with pytest.raises(PhysiologyError, match="needs site"):
        p.set_probe("nerve")
    with pytest.raises(PhysiologyError, match="side must be one of L, R"):
        p.attach_aps("X")
