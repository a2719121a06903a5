"""No crash reaches the nurse: the two crashes found in use are gone, and an unexpected
error in a screen is caught, shown, journaled by the engine, and the UI runs on.

Driven by touches against a real engine on the virtual board (see conftest). Each test
starts from the case set-up with no case open (``ui.home``), in any order.
"""

from __future__ import annotations

import os
import stat

import pytest

from app.ui import faults as F

pytestmark = pytest.mark.ui


@pytest.fixture(autouse=True)
def _from_home(ui, engine):
    """Every test starts at the case set-up, no case open (any order)."""
    ui.home(engine)
    yield


def _to_setup(ui):
    app = ui.app
    if app.sm.current == "selftest":
        ui.answer_selftest()
        ui.tap("selftest.continue")
    else:
        ui.go("case")
    ui.wait(lambda: app.sm.current == "setup", 5, "the case set-up")


def _pick(ui, field, text):
    ui.tap(field)
    ui.tap(next(w for w in ui.all_widgets() if getattr(w, "text", "") == text and getattr(w, "tid", "")))


def test_closing_a_case_with_choices_picked_from_lists_then_case_or_new_case(ui, engine, tmp_path, monkeypatch):
    """The form reset after a closed case once raised ``None is not allowed for
    ChoiceField.chosen``; the report preview once raised NameError when pdftoppm failed."""
    app = ui.app
    _to_setup(ui)
    ui.tap("setup.patient")
    ui.type_text("P-7001")
    _pick(ui, "setup.profile", "standard")
    ui.tap("setup.procedure")
    ui.tap("choice.0")
    ui.tap("setup.tube_type")
    ui.tap("choice.0")
    ui.tap("setup.side.L")
    ui.tap("setup.submit")
    st = engine.wait(lambda s: (s.get("case") or {}).get("patient_id") == "P-7001", 10, "the case open")
    case_id = st["case"]["case_id"]
    ui.wait(lambda: app.sm.current == "tube" and app.case_open, 10, "the tube check of the open case")
    # a page renderer that fails, as a broken poppler install does
    fake = tmp_path / "bin"
    fake.mkdir()
    tool = fake / "pdftoppm"
    tool.write_text("#!/bin/sh\necho 'Syntax Error: broken PDF' >&2\nexit 99\n")
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ.get('PATH', '')}")
    ui.go("case")
    assert app.sm.current == "endcase"
    ui.tap("end.close")
    ui.tap("dialog.confirm")
    ui.tap("closeout.close")  # no step was done: closed without reasons ("no reason given")
    ui.type_text("")
    engine.wait(lambda s: s["case"] is None, 20, "the case closed")
    rep = app.screens["report"]
    ui.wait(lambda: app.sm.current == "report" and case_id in rep.summary, 60, "the report")
    ui.wait(lambda: "cannot be shown" in rep.page_text, 60, "the preview's failure in words")
    assert "status 99" in rep.page_text and "broken PDF" in rep.page_text, rep.page_text
    assert not rep.pages
    monkeypatch.undo()
    ui.wait(lambda: not app.case_open, 10, "the closed case gone from the screen's state")
    # New case on the report screen, then Case in the navigation bar: a clean form, no error
    ui.tap("report.new_case")
    setup = app.screens["setup"]
    ui.wait(lambda: app.sm.current == "setup" and not setup.editing, 5, "a new, empty case form")
    for fid in ("patient", "surgeon", "procedure", "tube_type", "profile"):
        assert setup.ids[fid].value == "", fid
    for fid in ("procedure", "tube_type", "profile"):
        assert setup.ids[fid].chosen is None, fid
    ui.go("monitor")
    ui.go("case")
    assert app.sm.current == "setup" and setup.ids.patient.value == ""
    ui.screenshot("40-setup-after-close")


def _notes(engine):
    return [e for e in engine.call("events.list", limit=200)["events"] if e.get("kind") == "note"]


def test_an_error_in_a_touch_handler_is_shown_journaled_and_the_ui_runs_on(ui, engine, monkeypatch):
    app = ui.app
    ui.expect_faults()
    engine.call("case.start", patient_id="P-7002", planned_sides=["L"])
    ui.wait(lambda: app.case_open, 10, "the case on the screen")
    ui.go("alarms")
    scr = app.screens["alarms"]

    def broken() -> None:
        raise RuntimeError("deliberate test failure in a touch handler")

    monkeypatch.setattr(scr, "pause", broken)
    before = app.fault_log.total
    ui.tap("alarms.pause")
    ui.wait(lambda: app.fault_log.total > before, 5, "the error caught")
    fault = app.faults[-1]
    assert fault.kind == "RuntimeError" and "deliberate test failure" in fault.message
    assert "test_ui_faults.py" in fault.location and "broken" in fault.location
    bar = app.message_bar
    assert bar.level == "fault" and "Touchscreen program error" in bar.message
    assert "monitoring and alarms are not affected" in bar.message
    ui.screenshot("41-ui-fault")
    # the engine journaled it with the case
    notes = engine.wait(lambda s: any(F.JOURNAL_PREFIX in str(e.get("message")) for e in _notes(engine)), 10,
                        "the fault in the engine's journal")
    assert notes
    note = next(e for e in _notes(engine) if F.JOURNAL_PREFIX in str(e.get("message")))
    assert "RuntimeError" in note["message"] and "deliberate test failure" in note["message"]
    # the UI runs on: frames, state, touches
    frames, seq = app.frames, app.state.get("seq")
    ui.wait(lambda: app.frames > frames + 10 and app.state.get("seq") != seq, 10, "the UI still running")
    ui.go("monitor")
    assert app.sm.current == "monitor"
    # the same error again is counted, not journaled again
    ui.go("alarms")
    n_notes = len([e for e in _notes(engine) if F.JOURNAL_PREFIX in str(e.get("message"))])
    ui.tap("alarms.pause")
    ui.wait(lambda: fault.count == 2, 5, "the repeat counted")
    ui.run_for(1.0)
    assert len([e for e in _notes(engine) if F.JOURNAL_PREFIX in str(e.get("message"))]) == n_notes


def test_a_screen_that_fails_on_every_state_does_not_stop_the_banner(ui, engine, monkeypatch):
    app = ui.app
    engine.call("case.start", patient_id="P-7003", planned_sides=["L"])
    ui.wait(lambda: app.case_open, 10, "the case open")
    ui.expect_faults()
    ui.go("monitor")
    scr = app.screens["monitor"]

    def broken_update(_state) -> None:
        raise ValueError("deliberate test failure in update")

    monkeypatch.setattr(scr, "update", broken_update)
    before = app.fault_log.total
    ui.wait(lambda: app.fault_log.total >= before + 3, 10, "the failing update caught, state after state")
    # the alarm banner still follows the engine: switch alarm audio off and see it
    engine.call("alarm.audio_off", off=True)
    try:
        ui.wait(lambda: "AUDIO OFF" in app.banner.audio, 10, "the banner updated despite the failing screen")
    finally:
        engine.call("alarm.audio_off", off=False)
    ui.wait(lambda: "AUDIO OFF" not in app.banner.audio, 10, "audio on again")
    monkeypatch.undo()
    engine.call("case.close", note="end of the fault test")
    ui.wait(lambda: not app.case_open, 10, "no case open")
