"""``lnm analyze`` end to end: generated recordings with known responses and a loss of signal."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyedflib
import pytest

from app import cli
from app.analysis.edf import Annotation, Recording, read_edf, write_edf
from app.commands.analyze import FORMAT, analyze_recording
from app.model import Side, Site, Source, Step, Stimulus
from app.settings import Settings
from emg_synth import ResponseSpec, StimEvent, SyntheticSignal

FS = 10000.0
LOSS_FROM = 30  # APS stimulus index from which the left vagus gives no response


def _scenario():
    """Left APS at 1 Hz (good, then lost); right RLN probe; a few special stimuli."""
    stims: list[Stimulus] = []
    events: list[StimEvent] = []
    truth: dict[int, float | None] = {}

    def add(t, site, side, source, set_mA, delivered, resp, step=None):
        stims.append(Stimulus(len(stims), t, site, side, source, set_mA, delivered, 100, step))
        events.append(StimEvent(t, 0 if side is Side.L else 1, resp))

    for i in range(40):
        t = 1.0 + i
        resp = ResponseSpec(650.0 + 10 * np.sin(i), 8.0, width_ms=0.6) if i < LOSS_FROM else None
        add(t, Site.VAGUS, Side.L, Source.APS, 1.0, 0.99, resp)
    for j, t in enumerate((2.3, 2.55, 2.8, 3.05)):
        add(t, Site.RLN, Side.R, Source.PROBE, 1.0, None, ResponseSpec(820.0, 3.7, polarity=-1, width_ms=0.45),
            Step.R1 if j == 0 else None)
    add(5.4, Site.UNTAGGED, Side.R, Source.PROBE, 1.0, 1.0, None)
    add(6.6, Site.RLN, Side.R, Source.PROBE, 1.0, 0.2, ResponseSpec(820.0, 3.7))  # no current
    add(12.5, Site.RLN, Side.R, Source.PROBE, 1.0, 1.0, ResponseSpec(820.0, 3.7))  # during cautery
    stims.sort(key=lambda s: s.t_s)
    stims = [Stimulus(i, s.t_s, s.site, s.side, s.source, s.set_mA, s.delivered_mA, s.pw_us, s.step)
             for i, s in enumerate(stims)]
    for s in stims:
        ev = next(e for e in events if e.t_s == s.t_s)
        truth[s.index] = ev.response.amplitude_uV if ev.response else None
    return stims, events, truth


def _write_scenario(path: Path, labels=("EMG L", "EMG R")) -> tuple[list[Stimulus], dict]:
    stims, events, truth = _scenario()
    n = int(45 * FS)
    signals = {
        label: SyntheticSignal(FS, n, 0 if label == "EMG L" else 1, events, noise_uV=8.0, cautery=((12.2, 0.8),),
                               seed=3)
        for label in labels
    }
    write_edf(path, Recording(FS, signals, stims, annotations=[Annotation(20.0, None, "tube checked")]))
    return stims, truth


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    d = tmp_path_factory.mktemp("analyze")
    path = d / "case.edf"
    stims, truth = _write_scenario(path)
    out = d / "result.json"
    assert cli.main(["analyze", str(path), "--out", str(out)]) == 0
    return path, stims, truth, json.loads(out.read_text())


def test_result_document(scenario):
    path, stims, truth, doc = scenario
    assert doc["format"] == FORMAT
    rec = doc["recording"]
    assert rec == {"path": str(path), "duration_s": 45.0, "sample_rate_hz": 10000, "channels": ["EMG L", "EMG R"],
                   "conventions": 1, "case_t0_s": None}  # a version-1 file: no context, no case time
    assert doc["settings"]["event_threshold_uV"] == 100.0
    assert doc["settings"]["los_consecutive"] == 2
    assert doc["settings"]["aps_baseline_count"] == 20
    assert [s["index"] for s in doc["stimuli"]] == list(range(len(stims)))
    assert [s["t_s"] for s in doc["stimuli"]] == sorted(s["t_s"] for s in doc["stimuli"])
    for key in ("index", "t_s", "site", "side", "source", "set_mA", "delivered_mA", "channel", "valid",
                "invalid_reason", "response", "amplitude_uV", "latency_ms", "onset_latency_ms", "pw_us", "step"):
        assert all(key in s for s in doc["stimuli"]), key
    for ev in doc["events"]:
        assert {"t_s", "kind", "side", "site", "priority", "stimulus_index"} <= set(ev)


def test_stimuli_measured(scenario):
    _path, stims, truth, doc = scenario
    by_index = {s["index"]: s for s in doc["stimuli"]}
    for stim in stims:
        s = by_index[stim.index]
        assert (s["site"], s["side"], s["source"], s["set_mA"], s["delivered_mA"]) == (
            stim.site.value, stim.side.value, stim.source.value, stim.set_mA, stim.delivered_mA)
        assert s["t_s"] == pytest.approx(stim.t_s, abs=1e-6)
        assert s["channel"] == stim.side.channel
        if stim.delivered_mA is not None and stim.delivered_mA < 0.95 * stim.set_mA:
            assert (s["valid"], s["invalid_reason"], s["response"], s["amplitude_uV"]) == (
                False, "no_current", False, None)
        elif 12.2 <= stim.t_s <= 13.0:
            assert (s["valid"], s["invalid_reason"], s["response"]) == (False, "cautery", False)
        elif truth[stim.index] is None:
            assert s["valid"] and not s["response"] and s["amplitude_uV"] < 100.0 and s["latency_ms"] is None
        else:
            assert s["valid"] and s["response"], s
            assert s["amplitude_uV"] == pytest.approx(truth[stim.index], rel=0.10)
            expected = 8.0 if stim.site is Site.VAGUS else 3.7
            assert s["latency_ms"] == pytest.approx(expected, abs=0.2)
            assert s["onset_latency_ms"] < s["latency_ms"]


def test_loss_of_signal_at_the_right_stimulus(scenario):
    _path, stims, _truth, doc = scenario
    aps = [s for s in stims if s.source is Source.APS]
    los = [e for e in doc["events"] if e["kind"] == "loss_of_signal"]
    assert len(los) == 1
    expected = aps[LOSS_FROM + 1]  # the second qualifying stimulus without a response
    assert (los[0]["side"], los[0]["site"], los[0]["priority"], los[0]["stimulus_index"]) == (
        "L", "VAGUS", "high", expected.index)
    assert los[0]["t_s"] == pytest.approx(expected.t_s + 0.050, abs=1e-6)
    # the APS baseline: the 20th valid APS response (one APS epoch fell into the cautery)
    good_aps = [s["index"] for s in doc["stimuli"] if s["source"] == "APS" and s["valid"] and s["response"]]
    assert len(good_aps) == LOSS_FROM - 1
    baseline = [e for e in doc["events"] if e["kind"] == "baseline_set" and e["site"] == "VAGUS"]
    assert [(e["side"], e["stimulus_index"]) for e in baseline] == [("L", good_aps[19])]
    no_current = [e for e in doc["events"] if e["kind"] == "no_current"]
    assert len(no_current) == 1
    assert no_current[0]["stimulus_index"] == next(s.index for s in stims if s.delivered_mA == 0.2)
    assert not [e for e in doc["events"] if e["side"] == "R" and e["kind"] == "loss_of_signal"]


def test_same_result_as_the_api(scenario, tmp_path):
    path, _stims, _truth, doc = scenario
    again = analyze_recording(read_edf(path, lazy=True), Settings())
    assert again == doc


def test_missing_channel_is_no_channel(tmp_path):
    path = tmp_path / "left_only.edf"
    stims, _truth = _write_scenario(path, labels=("EMG L",))
    out = tmp_path / "r.json"
    assert cli.main(["analyze", str(path), "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["recording"]["channels"] == ["EMG L"]
    for s in doc["stimuli"]:
        if s["side"] == "R":
            assert (s["channel"], s["valid"], s["invalid_reason"], s["amplitude_uV"]) == (
                None, False, "no_channel", None)
        else:
            assert s["channel"] == "EMG L"


def test_settings_change_the_result(tmp_path, scenario):
    path, _stims, _truth, _doc = scenario
    cfg = tmp_path / "cfg"
    (cfg / "profiles").mkdir(parents=True)
    (cfg / "default.toml").write_text("[analysis]\nevent_threshold_uV = 900.0\n")
    out = tmp_path / "r.json"
    assert cli.main(["analyze", str(path), "--out", str(out), "--config", str(cfg)]) == 0
    doc = json.loads(out.read_text())
    assert doc["settings"]["event_threshold_uV"] == 900.0
    assert not any(s["response"] for s in doc["stimuli"])
    (cfg / "profiles" / "strict.toml").write_text("[rules]\nlos_consecutive = 5\n")
    assert cli.main(["analyze", str(path), "--out", str(out), "--config", str(cfg), "--profile", "strict"]) == 0
    assert json.loads(out.read_text())["settings"]["los_consecutive"] == 5


def test_stimuli_at_the_edges_of_the_recording(tmp_path):
    fs = 10000.0
    n = int(3 * fs)
    events = [StimEvent(0.004, 0, ResponseSpec(500.0, 6.0)), StimEvent(1.0, 0, ResponseSpec(500.0, 6.0)),
              StimEvent(2.97, 0, ResponseSpec(500.0, 6.0)), StimEvent(2.9999, 0, None)]
    stims = [Stimulus(i, e.t_s, Site.VAGUS, Side.L, Source.PROBE, 1.0) for i, e in enumerate(events)]
    sig = SyntheticSignal(fs, n, 0, events, noise_uV=5.0)
    rec = Recording(fs, {"EMG L": sig}, stims)
    doc = analyze_recording(rec, Settings())
    first, middle, late, last = doc["stimuli"]
    assert first["valid"] and first["response"]  # only 4 ms of baseline: still measured
    assert middle["valid"] and middle["response"]
    assert late["valid"] and late["response"]  # 30 ms left: the 25 ms vagal window is complete
    assert not last["valid"] and last["invalid_reason"] == "artifact"  # 0.1 ms left: cannot tell


# ----------------------------------------------------------------------------- bad input


def _pyedflib_file(path, labels=("EMG L", "EMG R"), fs=20000, texts=("STIM site=VAGUS side=L source=APS set_mA=1",)):
    w = pyedflib.EdfWriter(str(path), len(labels), file_type=pyedflib.FILETYPE_EDFPLUS)
    w.setSignalHeaders([
        {"label": lab, "dimension": "uV", "sample_frequency": fs, "physical_max": 1000.0, "physical_min": -1000.0,
         "digital_max": 32767, "digital_min": -32768, "transducer": "", "prefilter": ""} for lab in labels])
    w.writeSamples([np.zeros(fs) for _ in labels])
    for i, t in enumerate(texts):
        w.writeAnnotation(0.2 + 0.1 * i, -1, t)
    w.close()


def _stim_file(text):
    return lambda p: _pyedflib_file(p, texts=(text,))


BAD_INPUTS = {
    "missing": (None, "no such file"),
    "garbage": (lambda p: p.write_bytes(b"\x00\x01garbage" * 100), "not an EDF file"),
    "no_emg": (lambda p: _pyedflib_file(p, labels=("ECG",)), "no 'EMG L' or 'EMG R'"),
    "slow": (lambda p: _pyedflib_file(p, fs=2000), "below the minimum of 5000 Hz"),
    "missing_key": (_stim_file("STIM site=VAGUS side=L source=APS"), "missing required key 'set_mA'"),
    "unknown_site": (_stim_file("STIM site=NECK side=L source=APS set_mA=1"), "unknown site 'NECK'"),
    "unknown_side": (_stim_file("STIM site=RLN side=B source=APS set_mA=1"), "unknown side 'B'"),
    "unknown_source": (_stim_file("STIM site=RLN side=L source=FOOT set_mA=1"), "unknown source 'FOOT'"),
    "no_equals": (_stim_file("STIM site=RLN side=L source=APS set_mA"), "has no '='"),
    "bad_number": (_stim_file("STIM site=RLN side=L source=APS set_mA=x"), "is not a number"),
}


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, name):
    make, problem = BAD_INPUTS[name]
    path = tmp_path / f"{name}.edf"
    if make:
        make(path)
    out = tmp_path / "out.json"
    assert cli.main(["analyze", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(path) in err and problem in err, err
    assert not out.exists()


def test_bad_configuration_exits_2(tmp_path, capsys, scenario):
    path = scenario[0]
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    (cfg / "default.toml").write_text("[analysis]\nevent_threshold_uV = 5.0\n")
    assert cli.main(["analyze", str(path), "--out", str(tmp_path / "o.json"), "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "analysis.event_threshold_uV" in err


def test_unwritable_output_exits_1(tmp_path, capsys, scenario):
    assert cli.main(["analyze", str(scenario[0]), "--out", str(tmp_path / "no" / "such" / "r.json")]) == 1
    assert "cannot be written" in capsys.readouterr().err


def test_console_script(tmp_path, scenario):
    """The installed ``lnm`` entry point, as a user runs it."""
    out = tmp_path / "r.json"
    lnm = Path(sys.executable).with_name("lnm")
    p = subprocess.run([str(lnm), "analyze", str(scenario[0]), "--out", str(out)], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    assert json.loads(out.read_text())["format"] == FORMAT
    p = subprocess.run([str(lnm), "analyze", str(tmp_path / "nope.edf"), "--out", str(out)], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 2 and p.stderr.strip().endswith("no such file") and p.stderr.count("\n") == 1


# ----------------------------------------------------------------------------- operator context (version 2)

from app.analysis.edf import CONVENTIONS_MARK, parse_context, read_edf as _read  # noqa: E402


def _context_recording(path, context, recorded_steps=None):
    """Left RLN by probe at 4 Hz: responses (0.5-2 s), silent (3.5-5 s: a loss of signal), then
    responses again at 8-10 s (a distal point of a cut nerve, or a real recovery)."""
    fs = 20000.0
    stims, events = [], []

    def add(t, resp, step=None):
        stims.append(Stimulus(len(stims), t, Site.RLN, Side.L, Source.PROBE, 1.0, 1.0, 100, step))
        events.append(StimEvent(t, 0, ResponseSpec(800.0, 3.7, width_ms=0.45) if resp else None))

    for t in np.arange(0.5, 2.01, 0.25):
        add(float(t), True)
    for t in np.arange(3.5, 5.01, 0.25):
        add(float(t), False)
    for t in np.arange(8.0, 10.01, 0.25):
        add(float(t), True)
    n = int(11 * fs)
    sig = SyntheticSignal(fs, n, 0, events, noise_uV=5.0, seed=4)
    rec = Recording(fs, {"EMG L": sig, "EMG R": SyntheticSignal(fs, n, 1, [], noise_uV=5.0, seed=5)}, stims,
                    annotations=[Annotation(0.0, None, CONVENTIONS_MARK)],
                    context=[parse_context(text, t) for t, text in context],
                    recorded_steps=recorded_steps or {})
    write_edf(path, rec)
    return stims


TRUE_LOS = [(5.5, "TS L current_delivered=yes s=14"), (6.0, "TS L laryngeal_twitch=no s=14"),
            (6.5, "TS L contralateral_vagus=yes s=14")]


def _kinds(doc):
    return [(e["kind"], e["side"], e["site"]) for e in doc["events"]]


def test_a_confirmed_loss_makes_later_probe_responses_mapping(tmp_path):
    path = tmp_path / "c.edf"
    _context_recording(path, TRUE_LOS + [(8.6, "MAP L pos_mm=2 resp=yes s=17")])
    doc = analyze_recording(_read(path, lazy=True), Settings())
    assert ("loss_of_signal", "L", "RLN") in _kinds(doc)
    assert ("signal_recovered", "L", "RLN") not in _kinds(doc)  # mapping a cut nerve is no recovery
    assert doc["context"] == {"applied": 4, "used": True, "problems": [], "cautery_stimuli": 0}
    assert doc["troubleshooting"][0]["conclusion"] == "true_los" and doc["mapping"]["L"]["type"] == 1
    ignored = analyze_recording(_read(path, lazy=True), Settings(), context=False)
    assert ("signal_recovered", "L", "RLN") in _kinds(ignored) and ignored["context"]["applied"] == 0


def test_without_s_an_item_follows_the_stimuli_whose_window_ended(tmp_path):
    """A file from another tool: no s=; the answers at 5.5-6.5 s come after the silent stimuli."""
    path = tmp_path / "c.edf"
    _context_recording(path, [(t, text.rsplit(" s=", 1)[0]) for t, text in TRUE_LOS])
    doc = analyze_recording(_read(path, lazy=True), Settings())
    assert ("signal_recovered", "L", "RLN") not in _kinds(doc) and doc["context"]["applied"] == 3


def test_a_step_recorded_with_the_button_and_a_setting_change(tmp_path):
    path = tmp_path / "c.edf"
    # stimulus 2 (1.0 s) recorded as R1 with the button after stimulus 4; the threshold raised
    # above the responses before the last stimuli
    stims = _context_recording(path, [(1.0, "STEP R1 L by=button s=4"), (9.6, "SET event_threshold_uV=1000 s=21")],
                               recorded_steps={2: Step.R1})
    back = _read(path, lazy=True)
    assert back.stimuli[2].step is None and back.recorded_steps == {2: Step.R1}
    doc = analyze_recording(back, Settings())
    r1 = doc["steps"]["L"]["R1"]
    assert r1["how"] == "operator" and r1["t_s"] == pytest.approx(stims[2].t_s) and r1["response"]
    assert doc["stimuli"][20]["response"] and not doc["stimuli"][21]["response"]  # measured with the new threshold
    assert doc["stimuli"][21]["amplitude_uV"] > 500


def test_cautery_stretch_and_an_item_that_cannot_be_applied(tmp_path):
    path = tmp_path / "c.edf"
    _context_recording(path, [(0.4, "TS L nmb_ok=yes s=0"), (1.2, "CAUTERY s=3 e=5")])
    doc = analyze_recording(_read(path, lazy=True), Settings())
    assert [s["invalid_reason"] for s in doc["stimuli"][2:6]] == [None, "cautery", "cautery", None]
    assert doc["context"]["cautery_stimuli"] == 2
    assert len(doc["context"]["problems"]) == 1 and "no loss of signal on side L" in doc["context"]["problems"][0]


def test_a_truncated_recording_exits_2_naming_the_file(tmp_path, capsys, scenario):
    cut = tmp_path / "cut.edf"
    data = scenario[0].read_bytes()
    cut.write_bytes(data[: int(len(data) * 0.4)])
    out = tmp_path / "r.json"
    assert cli.main(["analyze", str(cut), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(cut) in err and "truncated" in err and "40 %" in err
    assert not out.exists()


def test_a_zero_record_duration_exits_2(tmp_path, capsys, scenario):
    bad = tmp_path / "zero.edf"
    data = bytearray(scenario[0].read_bytes())
    data[244:252] = b"0       "
    bad.write_bytes(bytes(data))
    assert cli.main(["analyze", str(bad), "--out", str(tmp_path / "r.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(bad) in err and "data record duration is 0 s" in err


def test_the_result_never_replaces_what_is_not_a_result(tmp_path, capsys, scenario):
    rec = scenario[0]
    journal = tmp_path / "journal.db"
    journal.write_bytes(b"SQLite format 3\x00" + b"\x00" * 100)
    assert cli.main(["analyze", str(rec), "--out", str(journal)]) == 2
    assert "not an lnm analysis result" in capsys.readouterr().err
    assert journal.read_bytes().startswith(b"SQLite format 3")
    before = rec.read_bytes()
    assert cli.main(["analyze", str(rec), "--out", str(rec)]) == 2
    assert "is the recording itself" in capsys.readouterr().err and rec.read_bytes() == before
    assert cli.main(["analyze", str(rec), "--out", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err
    out = tmp_path / "r.json"
    assert cli.main(["analyze", str(rec), "--out", str(out)]) == 0
    assert cli.main(["analyze", str(rec), "--out", str(out), "--context", "ignore"]) == 0  # a result: replaced
