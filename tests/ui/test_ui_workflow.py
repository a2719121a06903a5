"""A whole case at the touchscreen, driven by simulated touches against a real engine on
the virtual board: self-test, case set-up (nonsense refused by the engine), tube check
(failed, refused, overridden), V1-R1-R2-V2 on both sides by moving the virtual probe
from the simulator panel, the continuous vagal electrode and its trend, an injected loss
of signal through the alarm banner, troubleshooting, mapping and staging, the end of the
case, the report and the USB export; then settings behind the PIN, the layout at both
screen sizes, and a stalled and a killed engine.

The tests run against one engine and one app, in any order (``pytest -p randomly``): each
starts from the case set-up screen with no case open (``ui.home``, the autouse fixture
below) and makes what it needs through the engine's API first (a case open, the tube
checked, a V1, a loss of signal), then does at the touchscreen what it tests. Every
assertion that matters is made on the ENGINE's state, not only on widgets. A screenshot
of every screen is saved (see conftest).
"""

from __future__ import annotations

import time

import pytest

from app.format import amp_text, pct_text

pytestmark = pytest.mark.ui


def shown_amp(uV):
    """An amplitude as the screens write it: whole µV, halves away from zero (``app.format``;
    Python's own ``:.0f`` rounds 1048.5 to 1048, the screen to 1049)."""
    return amp_text(uV, unit=False)


def steps_of(st, side):
    return (st.get("steps") or {}).get(side) or {}


@pytest.fixture(autouse=True)
def _from_home(ui, engine):
    """Every test starts at the case set-up, no case open, the virtual patient healthy."""
    ui.home(engine)
    yield


def _open_case(ui, engine, sides=("L", "R"), patient="P-0042", surgeon="Dr Demo"):
    """A case opened through the engine (the set-up screen has its own tests), L1 normal."""
    engine.call("case.start", patient_id=patient, surgeon=surgeon, procedure="Total thyroidectomy",
                planned_sides=list(sides), tube_type="EMG tube with surface electrodes", tube_size_mm=7.0)
    for side in sides:
        engine.call("laryngoscopy", phase="L1", side=side, finding="normal")
    ui.wait(lambda: ui.app.case_open and (ui.app.state.get("case") or {}).get("patient_id") == patient, 10,
            "the case open on the screen")
    return engine.state()["case"]["case_id"]


def _monitoring(ui, engine, **kw):
    """An open case, the tube checked, the probe on."""
    case_id = _open_case(ui, engine, **kw)
    before = (engine.state().get("tube") or {}).get("t_s") or -1
    engine.call("tube.check")
    engine.wait(lambda s: (s.get("tube") or {}).get("checked") and s["tube"]["pass"]
                and (s["tube"].get("t_s") or 0) > before, 15, "a passed tube check")
    engine.call("stim.output", output="probe", on=True)
    engine.wait(lambda s: s["stim"]["probe"]["on"], 10, "the probe on")
    return case_id


def _v1(engine, side):
    """The side's V1 from the virtual probe on its vagus."""
    engine.call("sim.control", command="probe", args={"contact": "nerve", "site": "VAGUS", "side": side})
    engine.call("probe.site", site="VAGUS", side=side)
    engine.wait(lambda s: ((s.get("last") or {}).get(side) or {}).get("site") == "VAGUS"
                and s["last"][side].get("response"), 20, f"{side} vagal responses")
    engine.call("step.tag", step="V1", side=side, which="last")
    engine.wait(lambda s: steps_of(s, side).get("V1"), 10, f"V1 {side}")


def _loss(ui, engine, side="L"):
    """A loss of signal on the side's vagus after its V1 (traction on the virtual patient)."""
    case_id = _monitoring(ui, engine)
    _v1(engine, side)
    engine.call("sim.control", command="traction", args={"side": side, "severity": 0.95, "onset_s": 3.0})
    engine.wait(lambda s: any(a["kind"] == "loss_of_signal" for a in s["alarms"]["active"]), 40, "a loss of signal")
    return case_id


def test_selftest_screen_shows_the_engines_results(ui, engine):
    app = ui.app
    # the virtual board reports whether its last pulse was current-limited (a probe in the air
    # at the end of an earlier test): a pulse on tissue first, then back to the start
    _monitoring(ui, engine)
    engine.call("sim.control", command="probe", args={"contact": "tissue"})
    engine.wait(lambda s: not (s.get("board") or {}).get("faults"), 20, "a board without faults")
    ui.home(engine)
    app.go("selftest")  # as at start-up
    scr = app.screens["selftest"]
    ui.wait(lambda: not scr.running, 30, "the self-test of the start")
    ui.tap("selftest.again")
    # the loudspeaker, the lights and the buzzer cannot be read back: the nurse is asked for each
    for _ in range(3):
        ui.wait(lambda: ui.has("dialog.confirm"), 20, "the question for a played output")
        assert any(scr.ids[f"item_{k}"].verdict == "CONFIRM?" for k in ("audio", "leds", "buzzer"))
        ui.tap("dialog.confirm")
    ui.wait(lambda: scr.done, 20, "the self-test result")
    assert scr.passed, [(k, scr.ids[f"item_{k}"].verdict, scr.ids[f"item_{k}"].message)
                        for k in ("board", "audio", "leds", "buzzer", "storage")]
    for key in ("board", "audio", "leds", "buzzer", "storage"):
        row = scr.ids[f"item_{key}"]
        assert row.verdict == "PASS", (key, row.verdict, row.message)
        assert row.message  # the engine's own words, for a nurse: no program names
        assert "Capture" not in row.message and "Gpio" not in row.message, row.message
    assert "simulated loudspeaker" in scr.ids["item_audio"].message
    assert "seen / heard by the nurse" in scr.ids["item_leds"].message
    ui.screenshot("01-selftest")
    events = engine.call("events.list", limit=100)["events"]
    assert any(e["kind"] == "self_test" for e in events), "the engine ran the self-test the UI asked for"
    ui.tap("selftest.continue")
    ui.wait(lambda: app.sm.current == "setup", 5, "the case set-up screen")


def test_case_setup_checks_every_field_and_says_all_its_problems(ui, engine):
    app = ui.app
    scr = app.screens["setup"]
    ui.tap("setup.patient")
    assert ui.keypad().layout == "id"
    assert not ui.has("key.space") and not ui.has("key./")  # only what a patient ID may contain
    ui.screenshot("02-keyboard")
    ui.type_text("-P12")  # not a letter or digit first
    ui.tap("setup.tube_size")
    assert ui.keypad().layout == "numeric" and not ui.has("key.Q") and not ui.has("key.-")
    ui.type_text("99")  # 99 mm
    # a one-sided procedure selects its side; touching the side again takes it away
    ui.tap("setup.procedure")
    ui.tap(next(w for w in ui.all_widgets() if getattr(w, "text", "") == "Hemithyroidectomy, left"))
    assert scr.sides == ["L"] and scr.ids.side_L.state == "down"
    ui.tap("setup.side.L")
    assert scr.sides == []
    ui.tap("setup.submit")
    ui.wait(lambda: scr.error, 10, "the problems")
    assert "must start with a letter or digit" in scr.ids.patient.errors
    assert "99 mm is outside 5-10 mm" in scr.ids.tube_size.errors
    assert "choose at least one side" in scr.sides_error  # a case never opens without a side
    assert scr.error.startswith("NOT OPENED")
    for word in ("patient_id", "tube_size_mm", "matching", "[A-Z", "REFUSED"):
        assert word not in scr.error and word not in app.message_bar.message, word
    ui.screenshot("03-setup-refused")
    assert engine.state()["case"] is None  # nothing was opened
    # every problem of the field is said, and shown with its keyboard
    ui.tap("setup.patient")
    assert "must start with a letter or digit" in ui.keypad().error
    assert "letters, digits and - _ ." in ui.keypad().hint
    ui.tap("key.clear")
    ui.type_text("P-0042")
    assert not scr.ids.patient.errors and scr.ids.tube_size.errors  # corrected: no longer highlighted
    assert engine.state()["case"] is None


def test_case_setup_opens_the_case_with_everything_entered(ui, engine):
    app = ui.app
    scr = app.screens["setup"]
    ui.tap("setup.patient")
    ui.type_text("P-0042")
    ui.tap("setup.tube_size")
    ui.tap("key.clear")
    ui.type_text("7.0")
    ui.tap("setup.tube_depth")
    ui.type_text("21")
    ui.tap("setup.surgeon")
    ui.type_text("Dr Demo")
    ui.tap("setup.profile")
    ui.screenshot("04-choice")
    standard = [w for w in ui.all_widgets() if getattr(w, "text", "") == "standard" and getattr(w, "tid", "")]
    ui.tap(standard[0])
    ui.tap("setup.procedure")
    ui.tap("choice.0")  # total thyroidectomy: the sides are the nurse's to choose
    ui.tap("setup.tube_type")
    ui.tap("choice.0")
    ui.tap("setup.side.L")
    ui.tap("setup.side.R")
    ui.tap("setup.l1.L.normal")
    ui.tap("setup.l1.R.normal")
    assert scr.ids.side_L.text.startswith("1st") and scr.ids.side_R.text.startswith("2nd")
    ui.screenshot("05-setup-filled")
    ui.tap("setup.submit")
    ui.wait(lambda: app.sm.current == "tube", 10, "the tube check after opening the case")
    st = engine.wait(lambda s: (s.get("case") or {}).get("patient_id") == "P-0042"
                     and steps_of(s, "R").get("L1"), 10, "the open case with L1")
    case = st["case"]
    assert case["planned_sides"] == ["L", "R"]
    assert case["surgeon"] == "Dr Demo"
    assert case["procedure"] == "Total thyroidectomy"
    assert case["tube"]["size_mm"] == 7.0 and case["tube"]["depth_cm"] == 21.0
    assert st["engine"]["profile"] == "standard"
    assert steps_of(st, "L")["L1"]["finding"] == "normal" and steps_of(st, "R")["L1"]["finding"] == "normal"


def test_tube_check_fails_refuses_monitoring_until_override(ui, engine):
    app = ui.app
    _open_case(ui, engine)
    # a dry left electrode, made from the simulator panel
    ui.go("sim")
    ui.screenshot("06-simulator")
    ui.tap("sim.event.dry_L")
    ui.go("tube")
    ui.tap("tube.check")
    st = engine.wait(lambda s: (s.get("tube") or {}).get("checked") and not s["tube"]["pass"], 10, "a failed check")
    assert st["tube"]["impedances_kohm"]["L_POS"] > st["tube"]["limits"]["max_impedance_kohm"]
    scr = app.screens["tube"]
    ui.wait(lambda: scr.verdict == "FAIL", 5, "FAIL on the tube screen")
    assert scr.ids.el_L_POS.verdict == "FAIL" and scr.ids.el_L_NEG.verdict == "PASS"
    ui.screenshot("07-tube-failed")
    # the engine refuses to stimulate after a failed check, and the UI says why
    ui.tap("tube.start")
    ui.wait(lambda: app.message_bar.level == "refused", 5, "the refusal")
    assert "tube" in app.message_bar.message.lower()
    assert not engine.state()["stim"]["probe"]["on"]
    # explicit, recorded override
    ui.tap("tube.override")
    ui.type_text("SURGEON ACCEPTS")
    st = engine.wait(lambda s: (s.get("tube") or {}).get("override"), 10, "the override")
    assert "SURGEON ACCEPTS" in str(st["tube"]["override"])
    ui.tap("tube.start")
    engine.wait(lambda s: s["stim"]["probe"]["on"], 10, "the probe on")
    ui.wait(lambda: app.sm.current == "monitor", 5, "the monitoring screen")
    # the electrode is fine again: a new check passes
    ui.go("sim")
    ui.tap("sim.event.wet_L")
    ui.go("tube")
    ui.tap("tube.check")
    engine.wait(lambda s: s["tube"]["pass"] and s["tube"]["impedances_kohm"]["L_POS"] < 5, 10, "a passed check")
    ui.wait(lambda: scr.verdict == "PASS", 5, "PASS on the tube screen")
    ui.screenshot("08-tube-passed")


def _breathing(s, side="L"):
    return (((s.get("tube") or {}).get("breathing_variation") or {}).get(side) or {})


def test_tube_screen_shows_the_breathing_variation_as_it_arrives(ui, engine):
    app = ui.app
    _monitoring(ui, engine)
    scr = app.screens["tube"]
    ui.go("tube")  # (the probe stimulates meanwhile: its stimulus windows are left out of the measurement)
    before = engine.state()["tube"]["t_s"]
    ui.tap("tube.check")
    engine.wait(lambda s: s["tube"]["t_s"] > before and _breathing(s).get("status") == "measuring", 10,
                "the breathing window of the new check")
    ui.wait(lambda: (app.state.get("tube") or {}).get("t_s", 0) > before and "Right: measuring" in scr.details
            and "s left" in scr.details, 5, "measuring on the tube screen")
    assert scr.verdict == "PASS" and not scr.override_text  # a passing check needs no override
    ui.screenshot("08b-tube-breathing-measuring")
    st = engine.wait(lambda s: _breathing(s).get("status") not in (None, "measuring")
                     and _breathing(s, "R").get("status") not in (None, "measuring"), 30, "the breathing variation")
    bv = st["tube"]["breathing_variation"]
    assert bv["L"]["present"] is True and bv["R"]["present"] is True, bv  # the tube is in place
    ui.wait(lambda: "Left: PRESENT" in scr.details and "Right: PRESENT" in scr.details, 5, "PRESENT on the screen")
    assert f"wander {amp_text(bv['L']['wander_uV'])}" in scr.details
    assert f"modulation {pct_text(bv['R']['modulation_pct'])}" in scr.details
    ui.screenshot("08c-tube-breathing")


def _probe_to(ui, target):
    ui.go("sim")
    ui.tap(f"sim.probe.{target}")


def _capture(ui, engine, side, step, site):
    app = ui.app
    mon = app.screens["monitor"]
    engine.wait(lambda s: s["stim"]["probe"]["site"] == site and s["stim"]["probe"]["side"] == side, 10,
                f"the probe at {site} {side}")
    ui.go("monitor")
    # a fresh valid response of that site on that side, shown LARGE on the screen
    ui.wait(lambda: (app.state.get("last") or {}).get(side, {}).get("site") == site
            and app.state["last"][side].get("response") and mon.ids[f"panel_{side}"].fresh, 15,
            f"a {site} {side} response")
    panel = mon.ids[f"panel_{side}"]
    assert panel.amplitude not in ("---", "")
    # the response tone made visible: a bell of the side's pitch, lit for a moment per stimulus
    ui.wait(lambda: panel.ids.tone.kind == "response", 10, "the visible tone")
    assert panel.ids.tone.word == ("low" if side == "L" else "high") and panel.ids.tone.level > 0.25
    ui.tap(f"monitor.side.{side}")
    ui.tap(f"monitor.step.{step}")
    st = engine.wait(lambda s: steps_of(s, side).get(step, {}).get("amplitude_uV"), 10, f"{step} {side} recorded")
    ui.wait(lambda: "done" in mon.ids[f"step_{step}"].text, 5, f"{step} marked done")
    ui.wait(lambda: f"[b]{step}[/b] {shown_amp(st['steps'][side][step]['amplitude_uV'])}" in panel.checklist, 5,
            f"{step} on the side's checklist")
    if step in ("V1", "R1"):  # from now on the step's waveform is the faint reference under the live one
        ui.wait(lambda: len(panel.ids.epoch._ref_line.points) > 20
                and ("V2/V1 live" if step == "V1" else f"of {step}") in panel.ratio, 10, f"the {step} reference")
    if step == "V2":  # the live V2/V1 ratio beside the numbers
        ui.wait(lambda: "V2/V1 live" in panel.ratio, 5, "the live V2/V1 ratio")
        pct = float(panel.ratio.split("[b]")[1].split(" %")[0])
        v1 = st["steps"][side]["V1"]["amplitude_uV"]
        assert 30 < pct < 300, (pct, v1)
    return st


def test_v1_r1_r2_v2_on_both_sides_through_the_simulator_panel(ui, engine):
    _monitoring(ui, engine)
    for side in ("L", "R"):
        _probe_to(ui, f"vagus_{side}")
        _capture(ui, engine, side, "V1", "VAGUS")
        if side == "L":
            ui.screenshot("09-monitor-V1")
        _probe_to(ui, f"rln_{side}")
        _capture(ui, engine, side, "R1", "RLN")
        _capture(ui, engine, side, "R2", "RLN")
        _probe_to(ui, f"vagus_{side}")
        st = _capture(ui, engine, side, "V2", "VAGUS")
    mon = ui.app.screens["monitor"]
    for side in ("L", "R"):  # both sides' checklists at once, on the monitor
        for step in ("L1", "V1", "R1", "R2", "V2"):
            assert f"[b]{step}[/b]" in mon.ids[f"panel_{side}"].checklist
        assert "[b]L2[/b] -" in mon.ids[f"panel_{side}"].checklist.replace("[color=8d99a6]", "")
    # the scale is the nurse's: responses of about 1000 µV never rescale it
    assert mon.ids.panel_L.ids.epoch.scale == 1000.0 and mon.scale_uV == 1000.0
    for side in ("L", "R"):
        s = steps_of(st, side)
        for step in ("V1", "R1", "R2", "V2"):
            assert s[step]["amplitude_uV"] > 100, (side, step, s[step])
        # vagal latency is longer than the RLN's, on the left longest (physiology, as measured)
        assert s["V1"]["latency_ms"] > s["R1"]["latency_ms"]
    assert steps_of(st, "L")["V1"]["latency_ms"] > steps_of(st, "R")["V1"]["latency_ms"]
    ui.screenshot("10-monitor-steps")


def test_current_above_the_limit_needs_confirmation(ui, engine):
    app = ui.app
    _monitoring(ui, engine)
    engine.call("sim.control", command="probe", args={"contact": "nerve", "site": "RLN", "side": "L"})
    ui.go("monitor")
    engine.call("stim.set", output="probe", current_mA=2.8)
    ui.wait(lambda: abs(app.screens["monitor"].probe_mA - 2.8) < 1e-6, 5, "2.8 mA on the screen")
    ui.tap("monitor.probe.plus")  # 3.3 mA: above 3 mA
    ui.wait(lambda: ui.has("dialog.confirm"), 5, "the confirmation dialog")
    from app.ui.widgets import ConfirmDialog

    dlg = next(w for w in ui.window.children if isinstance(w, ConfirmDialog))
    assert dlg.title == "3.3 mA is above 3 mA: confirm?", dlg.title
    assert app.message_bar.level != "refused"  # a question, not a refusal
    ui.screenshot("11-confirm-current")
    assert engine.state()["stim"]["probe"]["current_mA"] == 2.8  # nothing changed yet
    ui.tap("dialog.confirm")
    engine.wait(lambda s: abs(s["stim"]["probe"]["current_mA"] - 3.3) < 1e-6, 10, "3.3 mA confirmed")
    ui.wait(lambda: app.screens["monitor"].probe_set == "3.3", 5, "3.3 mA set on the screen")
    ui.tap("monitor.probe.minus")  # below the limit: no question
    engine.wait(lambda s: abs(s["stim"]["probe"]["current_mA"] - 2.8) < 1e-6, 10, "2.8 mA")
    assert not ui.has("dialog.confirm")
    for _ in range(18):
        cur = engine.state()["stim"]["probe"]["current_mA"]
        if cur <= 1.0 + 1e-9:
            break
        ui.tap("monitor.probe.minus")
        engine.wait(lambda s, c=cur: s["stim"]["probe"]["current_mA"] < c - 1e-9, 10, "one step down")
    assert abs(engine.state()["stim"]["probe"]["current_mA"] - 1.0) < 1e-6
    # set and delivered side by side
    mon = app.screens["monitor"]
    ui.wait(lambda: mon.probe_set == "1.0" and mon.probe_delivered not in ("---", "")
            and abs(float(mon.probe_delivered) - 1.0) < 0.06, 10, "1.0 mA set and delivered (within 5 %)")
    assert mon.probe_warn == ""


def test_continuous_vagal_electrode_baseline_and_trend(ui, engine):
    app = ui.app
    _monitoring(ui, engine)
    ui.go("sim")
    ui.tap("sim.event.aps_L")
    ui.go("monitor")
    ui.tap("monitor.page.vagal")
    ui.tap("monitor.aps.side.L")
    engine.wait(lambda s: s["stim"]["aps"]["side"] == "L", 5, "APS on the left")
    engine.call("stim.set", output="aps", rate_hz=5.0)  # a faster baseline than 1 Hz, for the test's time
    ui.tap("monitor.aps.onoff")
    engine.wait(lambda s: s["stim"]["aps"]["on"], 5, "APS on")
    st = engine.wait(lambda s: (s["aps"]["L"] or {}).get("baseline_uV") and not s["aps"]["L"].get("collecting"),
                     30, "the APS baseline")
    mon = app.screens["monitor"]
    ui.wait(lambda: mon.aps_amp_pct != "---" and "Baseline" in mon.aps_baseline, 10, "% of baseline on the screen")
    assert f"Baseline {shown_amp(st['aps']['L']['baseline_uV'])} µV" in mon.aps_baseline
    ui.wait(lambda: mon.show_trend and len(mon.ids.trend._series["amp"]["line"].points) >= 4, 10, "the trend plot")
    assert app.trend.has_data("L")
    engine.call("stim.set", output="aps", rate_hz=1.0)
    ui.screenshot("12-monitor-vagal")
    # the trend enlarged with a touch, the baseline marked on it
    ui.tap("monitor.trend")
    ui.wait(lambda: mon._trend_view is not None and any(t == "baseline" for _x, t, _c in
                                                          mon._trend_view.ids.plot._markers), 5, "the trend enlarged")
    ui.screenshot("12b-trend-enlarged")
    ui.tap("trend.close")
    ui.wait(lambda: mon._trend_view is None, 5, "the trend closed")
    # the scales: chosen by the nurse, fitted only when asked
    ui.tap("monitor.page.levels")
    ui.tap("monitor.scale.plus")
    assert mon.scale_uV == 2000.0 and mon.ids.panel_L.ids.epoch.scale == 2000.0
    assert "±2000 µV" in mon.ids.panel_L.caption or not mon.ids.panel_L.caption
    from app.ui.data import choose_scale

    before = max(app.epochs.peak.values())
    ui.tap("monitor.scale.fit")
    # fitted to the last responses when touched (a vagal epoch may arrive while the touch is handled)
    assert mon.scale_uV in (choose_scale(before), choose_scale(max(app.epochs.peak.values())))
    for _ in range(6):  # back to 1000 µV, touch by touch
        if mon.scale_uV == 1000.0:
            break
        ui.tap("monitor.scale.minus" if mon.scale_uV > 1000.0 else "monitor.scale.plus")
    assert mon.scale_uV == 1000.0
    ui.screenshot("13-monitor-levels")
    ui.tap("monitor.page.probe")


def _tap_until_sent(ui, tid, tries=3):
    """Touch ``tid``; touch again when the UI said the command was NOT sent because the
    engine seemed silent (on a heavily loaded machine the UI may lag the engine's stream
    by more than the link's 2 s silence limit, and then refuses rather than sends late)."""
    bar = ui.app.message_bar
    for _ in range(tries):
        bar.message, bar.level = "", "info"
        ui.tap(tid)
        ui.run_for(1.0)
        if not (bar.level == "refused" and "NOT sent" in bar.message):
            return
    raise AssertionError(f"{tid}: never sent: {bar.message}")


def test_lowering_the_threshold_from_the_monitor_asks_pin_and_confirmation_and_stays_shown(ui, engine):
    app = ui.app
    ui.go("monitor")
    ui.tap("monitor.page.levels")
    assert engine.state()["threshold_uV"] == 100.0
    ui.tap("monitor.threshold.minus")  # 90 µV: below the default, a protected limit
    ui.wait(lambda: ui.has("key.ok"), 5, "the PIN keypad")
    ui.type_text("1234")
    ui.wait(lambda: ui.has("dialog.confirm"), 5, "the confirmation")
    assert engine.state()["threshold_uV"] == 100.0  # nothing changed yet
    ui.screenshot("13b-threshold-confirm")
    ui.tap("dialog.confirm")
    engine.wait(lambda s: s["threshold_uV"] == 90.0 and s["limits"], 10, "the lowered threshold")
    ui.wait(lambda: "LIMIT: threshold 90 µV, lowered" in app.message_bar.status, 5, "the lowered threshold in sight")
    ui.tap("monitor.threshold.plus")  # back to the default: no question
    engine.wait(lambda s: s["threshold_uV"] == 100.0 and not s["limits"], 10, "the default threshold")
    ui.wait(lambda: "lowered" not in app.message_bar.status, 5, "the indication gone")
    ui.tap("monitor.page.probe")


def _flash_measure(ui, seconds=2.5):
    banner = ui.app.banner
    samples = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        ui.frames(1)
        samples.append((time.monotonic(), banner.flash_is_on))
    rises = sum(1 for a, b in zip(samples, samples[1:], strict=False) if b[1] and not a[1])
    duty = sum(1 for _t, on in samples if on) / len(samples)
    return rises / (samples[-1][0] - samples[0][0]), duty, len(samples)


def test_loss_of_signal_alarm_banner_acknowledge_and_pause(ui, engine):
    app = ui.app
    _monitoring(ui, engine)
    _v1(engine, "L")
    _probe_to(ui, "vagus_L")
    engine.wait(lambda s: s["stim"]["probe"]["site"] == "VAGUS" and s["stim"]["probe"]["side"] == "L"
                and (s["last"].get("L") or {}).get("response"), 15, "left vagal responses")
    ui.tap("sim.event.traction_L")
    st = engine.wait(lambda s: any(a["kind"] == "loss_of_signal" for a in s["alarms"]["active"]), 30,
                     "a loss of signal")
    ui.go("monitor")
    banner = app.banner
    ui.wait(lambda: banner.priority == "high" and "LOSS OF SIGNAL" in banner.headline or
            "COMBINED" in banner.headline, 10, "the high-priority banner")
    # IEC 60601-1-8 visual indicator: red, flashing 1.4-2.8 Hz with a 20-60 % duty cycle, and the
    # priority in words and symbols (never colour alone)
    assert banner.word == "HIGH" and banner.symbol == "!!!"
    hz, duty, n = _flash_measure(ui)
    assert n > 20, "the UI kept drawing frames"
    assert 1.4 <= hz <= 2.8, hz
    assert 0.2 <= duty <= 0.6, duty
    ui.screenshot("14-monitor-loss-of-signal")
    shown = app.banner.ack_id  # ACK acknowledges the alarm the banner shows, not another one
    assert shown.startswith(("loss_of_signal:", "combined_event:")), shown
    _tap_until_sent(ui, "banner.ack")
    engine.wait(lambda s: any(a["id"] == shown and a.get("acknowledged") for a in s["alarms"]["active"]), 10,
                "the shown alarm acknowledged")
    acked = [a for a in engine.state()["alarms"]["active"] if a.get("acknowledged")]
    assert all(str(a.get("acknowledged_by") or "").startswith("ui") for a in acked)
    _tap_until_sent(ui, "banner.pause")
    st = engine.wait(lambda s: s["alarms"]["audio"] == "paused", 10, "audio paused")
    assert st["alarms"]["pause_remaining_s"] > 60
    ui.wait(lambda: banner.audio.startswith("AUDIO PAUSED"), 5, "the pause countdown on the banner")
    ui.go("alarms")
    scr = app.screens["alarms"]
    ui.wait(lambda: scr.ids.rows.children and "PAUSED" in scr.audio_text, 5, "the alarm list")
    assert any(r.headline.startswith("LOSS OF SIGNAL, left vagus") for r in scr.ids.rows.children)
    ui.screenshot("15-alarms")
    ui.tap("alarms.page.events")
    ui.wait(lambda: any("LOSS OF SIGNAL" in d["text"] for d in scr.ids.events.data), 5, "the event list")
    texts = [d["text"] for d in scr.ids.events.data]
    assert any("acknowledged at the touchscreen" in t for t in texts), texts[:10]
    assert not any(t.rstrip().endswith(":") or "VAGUS-L" in t or "loss_of_signal" in t for t in texts), texts[:10]
    ui.screenshot("15b-event-list")
    ui.tap("alarms.page.active")


ANSWERS = {"leads_ok": True, "field_dry": True, "current_delivered": True, "laryngeal_twitch": False,
           "contralateral_vagus": True, "tube_position_ok": True, "secretions_ok": True, "nmb_ok": True,
           "nonrecurrent": False}


def test_troubleshooting_mapping_and_staging_are_recorded(ui, engine):
    app = ui.app
    _loss(ui, engine, "L")
    ui.go("los")
    scr = app.screens["los"]
    ui.wait(lambda: "LOSS OF SIGNAL" in scr.headline and scr.side == "L", 5, "the left loss on the screen")
    ui.screenshot("16-los-checks-start")
    asked = []
    for _ in range(9):
        ts = engine.state()["troubleshooting"]["L"]
        if ts["conclusion"] != "open" or not ts["next_check"]:
            break
        check = ts["next_check"]
        ui.wait(lambda c=check: scr.check == c, 5, f"the question {check}")
        ui.tap("los.yes" if ANSWERS[check] else "los.no")
        engine.wait(lambda s, c=check: c in s["troubleshooting"]["L"]["answers"], 10, f"the answer to {check}")
        asked.append(check)
    ts = engine.state()["troubleshooting"]["L"]
    assert ts["conclusion"] == "true_los" and ts["confirmed"], ts
    for check in asked:
        a = ts["answers"][check]
        assert a["answer"] == ("yes" if ANSWERS[check] else "no") and str(a["by"]).startswith("ui")
    ui.wait(lambda: "TRUE LOSS" in scr.conclusion, 5, "the conclusion")
    ui.screenshot("17-los-confirmed")
    # mapping from distal to proximal
    ui.tap("los.page.mapping")
    ui.tap("los.map.minus")
    ui.tap("los.map.minus")
    assert scr.position_mm == 0
    ui.tap("los.map.response")
    engine.wait(lambda s: len(s["mapping"]["L"]["points"]) == 1, 10, "the first mapping point")
    for _ in range(4):
        ui.tap("los.map.plus")
    ui.tap("los.map.none")
    st = engine.wait(lambda s: len(s["mapping"]["L"]["points"]) == 2, 10, "the second mapping point")
    mp = st["mapping"]["L"]
    assert [p["position_mm"] for p in mp["points"]] == [0.0, 20.0]
    assert mp["type"] == 1 and mp["lesion_between_mm"] == [0.0, 20.0]
    ui.wait(lambda: "Type 1" in scr.mapping_text, 5, "type 1 on the screen")
    ui.screenshot("18-los-mapping")
    # staging: bilateral plan, confirmed unrecovered loss on the first side
    ui.tap("los.page.staging")
    ui.wait(lambda: scr.staging_active, 10, "the staging recommendation")
    ui.screenshot("19-los-staging")
    ui.tap("los.staging.postpone")
    ui.type_text("RISK OF BILATERAL PALSY")
    st = engine.wait(lambda s: (s["staging"].get("decision") or (s["staging"].get("active") or {}).get("decision")),
                     10, "the staging decision")
    dec = st["staging"].get("decision") or st["staging"]["active"]["decision"]
    assert "postpone" in str(dec) and "RISK OF BILATERAL PALSY" in str(dec)
    ui.wait(lambda: "Decision recorded" in scr.staging_decided, 5, "the decision on the screen")
    ui.go("sim")
    ui.tap("sim.event.release_L")


SCREENS = ("monitor", "alarms", "los", "tube", "setup", "endcase", "report", "settings", "sim", "selftest", "cases")


def _touch_targets(ui):
    from app.ui.widgets import TButton, TToggle

    from kivy.uix.modalview import ModalView

    modals = [w for w in ui.window.children if isinstance(w, ModalView)]
    roots = modals[:1] if modals else list(ui.window.children)  # an open dialog is all that can be touched
    from kivy.uix.scrollview import ScrollView

    def scrolled(w):
        node = w.parent
        while node is not None and node.parent is not node:
            if isinstance(node, ScrollView):
                return True
            node = node.parent
        return False

    out = []
    for w in (w for top in roots for w in top.walk(restrict=True)):
        if isinstance(w, (TButton, TToggle)) and ui._shown(w) and w.width > 0 and not getattr(w, "hidden", False):
            x, y = w.to_window(w.x, w.y)
            out.append((getattr(w, "tid", "") or w.text, x, y, w.width, w.height, scrolled(w)))
    return out


def _views(ui):
    """Every screen, the unlocked settings, and the dialogs: (name, open, close)."""
    from app.ui.widgets import ChoicePopup, ConfirmDialog, Keypad

    app = ui.app
    for name in SCREENS:
        yield name, (lambda n=name: setattr(app.sm, "current", n)), None
    st = app.screens["settings"]

    def unlock():
        app.sm.current = "settings"
        st.unlocked = True
        st._groups()
        st.pick_group("response")

    yield "settings-unlocked", unlock, st.lock
    for mode in ("alpha", "numeric", "pin"):
        pad = Keypad(title="Field", mode=mode)
        yield f"keypad-{mode}", (lambda p=pad: p.open(animation=False)), (lambda p=pad: p.dismiss(animation=False))
    pop = ChoicePopup(title="Choose", choices=[(f"choice {i}", i) for i in range(6)], on_pick=lambda *_: None,
                      allow_other=True)
    yield "choice", (lambda: pop.open(animation=False)), (lambda: pop.dismiss(animation=False))
    dlg = ConfirmDialog(title="Confirm", message="A question?")
    yield "confirm", (lambda: dlg.open(animation=False)), (lambda: dlg.dismiss(animation=False))


def _check_layout(ui, size):
    from app.ui import fit
    from app.ui import present as P

    app = ui.app
    min_px = P.touch_target_px(app.dpi)  # 9 mm at this display's dpi
    assert app.tp >= min_px
    problems = []
    for name, show, hide in _views(ui):
        show()
        ui.frames(4)
        targets = _touch_targets(ui)
        if hide is not None:
            ui.screenshot(f"20-layout-{name}")
            hide()
            ui.frames(2)
        assert targets, name
        for tid, x, y, w, h, in_scroll in targets:
            if w < min_px - 0.5 or h < min_px - 0.5:
                problems.append(f"{name}: {tid!r} is {w:.0f}x{h:.0f} px, under 9 mm ({min_px} px)")
            if not in_scroll and (x < -0.5 or y < -0.5 or x + w > size[0] + 0.5 or y + h > size[1] + 0.5):
                problems.append(f"{name}: {tid!r} is outside the {size[0]}x{size[1]} window")
        fixed = [t for t in targets if not t[5]]  # (a list that scrolls is touched where it shows)
        for i, a in enumerate(fixed):
            for b in fixed[i + 1:]:
                ox = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
                oy = min(a[2] + a[4], b[2] + b[4]) - max(a[2], b[2])
                if ox > 1 and oy > 1:
                    problems.append(f"{name}: {a[0]!r} and {b[0]!r} overlap")
        problems += [f"{name}: {p}" for p in fit.text_problems(ui.window, ui.window)]  # nothing cut off
        if hide is None:
            ui.screenshot(f"20-layout-{name}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("size", [(800, 480), (1280, 800)])
def test_every_screen_fits_with_9mm_targets(ui, size):
    app = ui.app
    was = app.sm.current
    ui.window.size = size
    ui.wait(lambda: tuple(ui.window.size) == size, 5, f"the window at {size}")
    ui.frames(3)
    try:
        _check_layout(ui, size)
    finally:
        ui.window.size = (800, 480)
        ui.wait(lambda: tuple(ui.window.size) == (800, 480), 5, "the window back at 800x480")
        app.sm.current = was
        ui.frames(3)


def _troubleshot_loss(ui, engine):
    """A left loss of signal, troubleshot to a true loss, mapped (type 1) and the second side
    postponed, all through the engine (the LOS screen's own test does it by touch)."""
    case_id = _loss(ui, engine, "L")
    for _ in range(len(ANSWERS) + 1):
        ts = engine.state()["troubleshooting"]["L"]
        if ts["conclusion"] != "open" or not ts["next_check"]:
            break
        check = ts["next_check"]
        engine.call("ts.answer", side="L", check=check, answer="yes" if ANSWERS[check] else "no")
    engine.call("mapping.result", side="L", position_mm=0.0, response=True, amplitude_uV=300.0)
    engine.call("mapping.result", side="L", position_mm=20.0, response=False)
    engine.wait(lambda s: s["staging"].get("recommended"), 15, "the staging recommendation")
    engine.call("staging.decision", decision="postpone_second_side", reason="RISK OF BILATERAL PALSY")
    engine.call("sim.control", command="release", args={"side": "L", "recovery_s": 60.0})
    return case_id


def test_end_of_case_report_preview_and_usb_export(ui, engine, usb_dir):
    app = ui.app
    case_id = _troubleshot_loss(ui, engine)
    ui.go("case")
    assert app.sm.current == "endcase"
    ui.tap("end.l2.L.palsy")
    ui.tap("end.l2.R.normal")
    engine.wait(lambda s: steps_of(s, "L").get("L2", {}).get("finding") == "palsy"
                and steps_of(s, "R").get("L2", {}).get("finding") == "normal", 10, "the L2 findings")
    ui.tap("end.note")
    ui.type_text("LEFT NERVE INTACT ON INSPECTION")
    ui.wait(lambda: "LEFT NERVE INTACT" in app.screens["endcase"].notes_text, 10, "the note")
    ui.screenshot("21-end-of-case")
    missing = {(m["side"], m["step"]) for m in engine.state()["missing_steps"]}
    assert ("R", "V1") in missing and ("R", "L2") not in missing  # the second side was postponed
    ui.tap("end.close")
    ui.wait(lambda: ui.has("dialog.confirm"), 5, "the close confirmation")
    ui.screenshot("22-close-confirm")
    ui.tap("dialog.confirm")
    # the steps still missing, each with a reason to pick (or none: "no reason given")
    ui.wait(lambda: ui.has("closeout.close"), 5, "the steps not done")
    for side, step in missing:
        assert ui.has(f"closeout.reason.{side}.{step}"), (side, step)
    ui.tap("closeout.reason.R.V1")
    ui.tap_text("Side not operated")
    ui.tap("closeout.reason.R.R1")
    ui.tap("choice.6")  # "Other (type it) ..."
    ui.type_text("SECOND SIDE POSTPONED")
    assert ui.find("closeout.reason.R.R1").text == "SECOND SIDE POSTPONED"
    ui.screenshot("22b-closeout-reasons")
    ui.tap("closeout.close")
    ui.type_text("END")
    engine.wait(lambda s: s["case"] is None, 20, "the case closed")
    assert engine.state()["stim"]["probe"]["on"] is False  # closing stops stimulation
    rep = app.screens["report"]
    ui.wait(lambda: app.sm.current == "report" and case_id in rep.summary, 60, "the report content")
    assert "Loss of signal" in rep.summary and "LOS type 1" in rep.summary
    assert "L2 palsy" in rep.summary
    ui.wait(lambda: rep.pages or "install poppler" in rep.page_text, 60, "the PDF pages")
    ui.screenshot("23-report")
    assert "surgeon: not shown (the report is pseudonymised)" in rep.summary  # a name was entered
    if rep.pages:  # the preview pages and zooms
        ui.tap("report.zoom_in")
        assert rep.zoom == 1.5
        ui.tap("report.page_only")
        assert rep.page_only
        ui.screenshot("23b-report-zoomed")
        ui.tap("report.page_only")
        ui.tap("report.zoom_out")
        assert rep.zoom == 1.0 and not rep.page_only
    if len(rep.pages) > 1:
        ui.tap("report.next")
        ui.wait(lambda: rep.page == 1, 5, "page 2")
        ui.screenshot("24-report-page2")
    ui.tap("report.export")
    ui.wait(lambda: rep.export_text.startswith(("EXPORTED", "NOT EXPORTED")), 60, "the export result")
    assert rep.export_text.startswith("EXPORTED") and "verified: yes" in rep.export_text, rep.export_text
    files = [p for p in usb_dir.rglob("*") if p.is_file()]
    assert any(p.suffix == ".pdf" for p in files) and any(p.suffix == ".json" for p in files), files
    ui.screenshot("25-exported")
    # the record says what was done at the touchscreen
    doc = engine.call("report.get", case_id=case_id, pdf=False)["document"]
    assert doc["sides"]["L"]["steps"]["L2"]["finding"] in ("palsy", "immobile")  # the record's word
    assert any("LEFT NERVE INTACT" in str(n) for n in doc["notes"])
    assert any(st.get("decision") for st in doc["staging"])
    los = [e for e in doc["adverse_events"] if e["kind"] == "loss_of_signal" and e["side"] == "L"]
    answered = {a["check"] for e in los for a in e.get("troubleshooting") or []}
    assert answered >= {"leads_ok", "field_dry", "laryngeal_twitch"}, answered
    assert doc["case"]["close_reason"] == "END"
    reasons = {(m["side"], m["step"]): m["reason"] for m in doc["sides"]["R"]["missing_steps"]}
    assert reasons[("R", "V1")] == "Side not operated" and reasons[("R", "R1")] == "SECOND SIDE POSTPONED"
    assert reasons[("R", "V2")] is None  # none picked: the record says no reason was given


def test_past_cases_reopen_the_report_check_the_record_and_export_again(ui, engine, usb_dir):
    app = ui.app
    case_id = _open_case(ui, engine, patient="P-0077")
    engine.call("case.close", note="a case for the list")
    ui.wait(lambda: not app.case_open, 10, "the case closed on the screen")
    ui.go("case")
    ui.tap("setup.cases")
    scr = app.screens["cases"]
    ui.wait(lambda: app.sm.current == "cases" and any(r.case_id == case_id for r in scr.ids.rows.children), 10,
            "the list of past cases")
    ui.screenshot("25b-past-cases")
    ui.tap(f"cases.check.{case_id}")
    row = next(r for r in scr.ids.rows.children if r.case_id == case_id)
    ui.wait(lambda: row.result.startswith(("Record intact", "RECORD ALTERED", "Not checked")), 60, "the check")
    assert row.result.startswith("Record intact") and "hash chain verified" in row.result, row.result
    before = {p for p in usb_dir.rglob("*") if p.is_file()}
    ui.tap(f"cases.export.{case_id}")
    ui.wait(lambda: row.result.startswith(("EXPORTED", "NOT EXPORTED")), 60, "the export")
    assert row.result.startswith("EXPORTED") and "verified: yes" in row.result, row.result
    assert {p for p in usb_dir.rglob("*") if p.is_file()} >= before
    ui.tap(f"cases.report.{case_id}")
    rep = app.screens["report"]
    ui.wait(lambda: app.sm.current == "report" and case_id in rep.summary, 60, "the reopened report")
    ui.tap("report.new_case")
    ui.wait(lambda: app.sm.current == "setup", 5, "back to a new case")


def _show_setting(ui, key):
    """Open the setting's group and turn the pages until its row is on screen."""
    from app.ui import words as W

    ui.tap(f"settings.group.{W.setting_info(key).group}")
    for _ in range(10):
        if ui.has(f"settings.edit.{key}"):
            return
        ui.tap("settings.next")
    raise AssertionError(f"{key} is not on any page of its group")


def test_settings_behind_the_pin_and_refused_values(ui, engine):
    app = ui.app
    ui.go("settings")
    scr = app.screens["settings"]
    assert not scr.unlocked and not ui.has("settings.lock")
    for k in "1235":
        ui.tap(f"pin.{k}")
    ui.tap("pin.ok")
    assert not scr.unlocked and "Wrong PIN" in scr.pin_message
    ui.screenshot("26-settings-locked")
    for k in "1234":
        ui.tap(f"pin.{k}")
    ui.tap("pin.ok")
    ui.wait(lambda: scr.unlocked, 5, "unlocked")
    key = "analysis.event_threshold_uV"
    _show_setting(ui, key)
    ui.screenshot("27-settings")
    ui.tap(f"settings.edit.{key}")
    ui.tap("key.clear")
    ui.type_text("5000")
    ui.wait(lambda: scr.error, 10, "the refusal")
    assert "Event threshold" in scr.error and "µV" in scr.error and "20-1000" in scr.error, scr.error
    assert key not in scr.error and "uV" not in scr.error
    assert engine.call("settings.get")["values"][key] == 100.0
    ui.screenshot("28-settings-refused")
    ui.tap(f"settings.edit.{key}")
    ui.tap("key.clear")
    ui.type_text("150")
    engine.wait(lambda s: s["threshold_uV"] == 150.0, 10, "the new threshold")
    # the wiring is read at start-up: the screen says so and the engine refuses a change
    pin = "gpio.buzzer_pin"
    _show_setting(ui, pin)
    row = next(r for r in scr._rows if r.key == pin)
    assert "start-up only" in row.text and pin not in row.text and "Backup buzzer" in row.text
    ui.tap(f"settings.edit.{pin}")
    ui.tap("key.clear")
    ui.type_text("5")
    ui.wait(lambda: "start-up only" in scr.error, 10, "the refusal of a wiring change")
    assert engine.call("settings.get")["values"][pin] == 23
    ui.tap("settings.lock")
    assert not scr.unlocked
    engine.call("settings.set", changes={key: 100.0})


def _frame_gaps(ui, seconds, during=None):
    times = []
    end = time.monotonic() + seconds
    did = False
    while time.monotonic() < end:
        ui.idle()
        times.append(time.monotonic())
        if during is not None and not did and time.monotonic() > end - seconds / 2:
            did = True
            during()
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    return max(gaps), len(times)


def test_ui_stays_responsive_when_the_engine_stalls_or_dies(ui, engine):
    app = ui.app
    ui.go("monitor")
    ui.wait(lambda: app.link.health().ok and not app.banner.engine_problem, 10, "a healthy link")
    before = engine.state()["stim"]["probe"]["current_mA"]
    frames_before = app.frames
    engine.pause()  # SIGSTOP: connected but silent
    try:
        worst, n = _frame_gaps(ui, 4.0)
        assert app.banner.engine_problem and "NOT RESPONDING" in app.banner.headline, app.banner.headline
        assert worst < 0.5, f"a frame took {worst:.2f} s while the engine was stalled"
        assert app.frames - frames_before >= n - 1  # the app's own frame callback kept running
        ui.screenshot("29-engine-not-responding")
        # a touch during the stall is refused at once, never sent to be executed later
        worst, _ = _frame_gaps(ui, 1.0, during=lambda: ui.tap("monitor.probe.plus"))
        assert worst < 0.5
        ui.wait(lambda: app.message_bar.level == "refused" and "not" in app.message_bar.message.lower(), 5,
                "the refusal of the touch")
    finally:
        engine.resume()
    ui.wait(lambda: app.link.health().ok and not app.banner.engine_problem, 10, "the engine answering again")
    ui.run_for(1.0)
    assert engine.state()["stim"]["probe"]["current_mA"] == before
    # killed: the UI says so, keeps drawing, and reconnects by itself to a new engine
    engine.proc.kill()
    engine.proc.wait()
    worst, _ = _frame_gaps(ui, 2.0)
    ui.wait(lambda: app.banner.engine_problem and "LOST" in app.banner.headline, 10, "connection lost")
    assert worst < 0.5
    ui.screenshot("30-engine-lost")
    engine.restart()
    ui.wait(lambda: app.link.health().ok and not app.banner.engine_problem, 20, "reconnected")
    seq = app.state.get("seq")
    ui.wait(lambda: app.state.get("seq") != seq, 5, "fresh state after reconnecting")
