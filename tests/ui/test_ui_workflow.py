"""A whole case at the touchscreen, driven by simulated touches against a real engine on
the virtual board: self-test, case set-up (nonsense refused by the engine), tube check
(failed, refused, overridden), V1-R1-R2-V2 on both sides by moving the virtual probe
from the simulator panel, the continuous vagal electrode and its trend, an injected loss
of signal through the alarm banner, troubleshooting, mapping and staging, the end of the
case, the report and the USB export; then settings behind the PIN, the layout at both
screen sizes, and a stalled and a killed engine.

The tests run in file order against one engine and one app (a case has an order); every
assertion that matters is made on the ENGINE's state, not only on widgets. A screenshot
of every screen is saved (see conftest).
"""

from __future__ import annotations

import time

import pytest

pytestmark = pytest.mark.ui


def steps_of(st, side):
    return (st.get("steps") or {}).get(side) or {}


def test_selftest_screen_shows_the_engines_results(ui, engine):
    app = ui.app
    assert app.sm.current == "selftest"
    scr = app.screens["selftest"]
    ui.wait(lambda: scr.done, 20, "the self-test result")
    assert scr.passed
    for key in ("board", "audio", "leds", "buzzer", "storage"):
        row = scr.ids[f"item_{key}"]
        assert row.verdict == "PASS", (key, row.verdict, row.message)
        assert row.message  # the engine's own words
    ui.screenshot("01-selftest")
    events = engine.call("events.list", limit=100)["events"]
    assert any(e["kind"] == "self_test" for e in events), "the engine ran the self-test the UI asked for"
    ui.tap("selftest.continue")
    ui.wait(lambda: app.sm.current == "setup", 5, "the case set-up screen")


def test_case_setup_refuses_nonsense_with_the_engines_message(ui, engine):
    app = ui.app
    ui.tap("setup.patient")
    ui.screenshot("02-keyboard")
    ui.type_text("P 12")  # a space: not a pseudonymous id
    ui.tap("setup.tube_size")
    ui.type_text("99")  # 99 mm
    ui.tap("setup.submit")
    scr = app.screens["setup"]
    ui.wait(lambda: scr.error, 10, "the refusal")
    assert "patient_id" in scr.error and "matching" in scr.error, scr.error
    assert "NOT ACCEPTED" in scr.error
    ui.screenshot("03-setup-refused")
    assert engine.state()["case"] is None  # nothing was opened
    # fix the id; now the tube size is the problem, named with its unit and range
    ui.tap("setup.patient")
    ui.tap("key.clear")
    ui.type_text("P-0042")
    ui.tap("setup.submit")
    ui.wait(lambda: "tube_size_mm" in scr.error, 10, "the tube size refusal")
    assert "mm" in scr.error and "5" in scr.error and "10" in scr.error, scr.error
    assert engine.state()["case"] is None


def test_case_setup_opens_the_case_with_everything_entered(ui, engine):
    app = ui.app
    scr = app.screens["setup"]
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
    ui.tap("choice.0")  # total thyroidectomy
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
    assert mon.ids[f"panel_{side}"].amplitude not in ("---", "")
    ui.tap(f"monitor.side.{side}")
    ui.tap(f"monitor.step.{step}")
    st = engine.wait(lambda s: steps_of(s, side).get(step, {}).get("amplitude_uV"), 10, f"{step} {side} recorded")
    ui.wait(lambda: "done" in mon.ids[f"step_{step}"].text, 5, f"{step} marked done")
    return st


def test_v1_r1_r2_v2_on_both_sides_through_the_simulator_panel(ui, engine):
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
    ui.go("monitor")
    engine.call("stim.set", output="probe", current_mA=2.8)
    ui.wait(lambda: abs(app.screens["monitor"].probe_mA - 2.8) < 1e-6, 5, "2.8 mA on the screen")
    ui.tap("monitor.probe.plus")  # 3.3 mA: above 3 mA
    ui.wait(lambda: ui.has("dialog.confirm"), 5, "the confirmation dialog")
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
