"""Nothing cut off, no program words: every screen, page and dialog at 800x480 and at
1280x800, shown at a busy, worst-case moment of a case (``fakeengine``: the longest names
the API allows, five alarms, a loss of signal under troubleshooting, a failed tube check,
a long event history, every settings group), has every label's whole text inside its box
(``app.ui.fit``: wrapped at words, never shortened, never cut mid-word) and no setting key,
enum value, electrode id, regular expression or "REFUSED:" on it.

The session's app is lent to the fake engine for this module and given back as it was.
"""

from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.ui

SIZES = [(800, 480), (1280, 800)]
PROGRAM_WORDS = [
    (re.compile(r"\b(?:stim|acq|analysis|emg|rules|tube|alarms|audio|gpio|link|ui)\.[a-z][A-Za-z0-9_]*"),
     "a setting key"),
    (re.compile(r"\b[a-z]+_[a-z]+(?:_[a-z]+)*\b"), "a program name with underscores"),
    (re.compile(r"\b[LR]_(?:POS|NEG)\b|\bSTIM_RETURN\b"), "an electrode id"),
    (re.compile(r"\b(?:VAGUS|RLN|EBSLN|APS)-[LR]\b"), "a site key"),
    (re.compile(r"\bside [LR]\b"), "a side letter"),
    (re.compile(r"\[A-Z|\{0,\d+\}|\\d|\[0-9\]"), "a regular expression"),
    (re.compile(r"\buV\b|\bkOhm\b"), "a unit as the program writes it"),
    (re.compile(r"REFUSED:"), "REFUSED:"),
    (re.compile(r"\bui#\d+|\bNone\b|\bnull\b"), "a program value"),
]


@pytest.fixture(scope="module")
def fake_app(ui):
    """The app on the fake engine; afterwards back on the real one, its stores as they were."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from fakeengine import FakeLink

    app = ui.app
    ui.wait(lambda: app.screens["selftest"].done, 30, "the self-test with the real engine first")
    keep = {k: getattr(app, k) for k in ("link", "state", "alarms", "events", "trend", "history", "epochs", "refs",
                                         "emg", "settings_values", "settings_schema")}
    was = app.sm.current
    from app.ui.data import EmgRing, EpochStore, EventLog, References, SiteHistory, TrendStore

    app.events, app.trend, app.history = EventLog(), TrendStore(), SiteHistory()
    app.epochs, app.refs, app.emg = EpochStore(), References(), EmgRing(seconds=10.0)
    app.link = FakeLink()
    app._was_ok = False
    app.notify("", "info")  # (a message of an earlier test is not part of this moment)
    ui.wait(lambda: app.state.get("case", {}) and app.state["case"]["patient_id"].startswith("P-2026"), 10,
            "the fake engine's state")
    ui.wait(lambda: app.settings_schema and len(app.events.events) > 50, 10, "settings and events")
    yield app
    for k, v in keep.items():
        setattr(app, k, v)
    app._was_ok = False
    app.sm.current = was
    ui.window.size = (800, 480)
    ui.wait(lambda: tuple(ui.window.size) == (800, 480), 5, "the window back at 800x480")
    ui.frames(3)


def _views(ui, app):
    """(name, show, hide) for every screen, page and dialog."""
    from kivy.uix.modalview import ModalView

    from app.ui.widgets import ChoicePopup, ConfirmDialog, Keypad

    def close_modals():
        for w in list(ui.window.children):
            if isinstance(w, ModalView):
                w.dismiss(animation=False)

    for name in app.screens:
        yield name, (lambda n=name: setattr(app.sm, "current", n)), None
        pages = {"monitor": ("vagal", "levels", "probe"), "alarms": ("events", "active"),
                 "los": ("mapping", "staging", "checks")}.get(name, ())
        for page in pages:
            yield f"{name}-{page}", (lambda n=name, p=page: (setattr(app.sm, "current", n),
                                                              app.screens[n].show_page(p))), None
    mon = app.screens["monitor"]
    yield "trend-enlarged", (lambda: (setattr(app.sm, "current", "monitor"), mon.open_trend())), close_modals
    app.screens["report"].load("any")
    yield "report-loaded", (lambda: setattr(app.sm, "current", "report")), None
    st = app.screens["settings"]

    def unlocked(group, page):
        def show():
            app.sm.current = "settings"
            st.unlocked = True
            st._groups()
            st.pick_group(group)
            st.page = page
            st.render()
        return show

    from app.ui import words as W

    st.unlocked = True
    for group, _title in W.SETTING_GROUPS:
        st.pick_group(group)
        for page in range(st.pages):
            yield f"settings-{group}-{page}", unlocked(group, page), st.lock
    st.lock()
    for mode in ("id", "text", "numeric", "pin"):
        yield f"keypad-{mode}", (lambda m=mode: Keypad(title="Patient ID", mode=m, hint="letters, digits and - _ . "
                                                       "only, starting with a letter or digit, up to 32 characters "
                                                       "(a pseudonym, never the name)",
                                                       error="space, ! not allowed; must start with a letter or "
                                                             "digit", value="x" * 200).open(animation=False)), \
            close_modals
    yield "choice", (lambda: ChoicePopup(title="Procedure", choices=[(p, p) for p in (
        "Total thyroidectomy", "Hemithyroidectomy, left", "Hemithyroidectomy, right", "Completion thyroidectomy",
        "Parathyroidectomy", "Central neck dissection")], on_pick=lambda *_: None, allow_other=True).open(
        animation=False)), close_modals
    yield "confirm", (lambda: app.ask_confirmation("stim.set", {"output": "probe", "current_mA": 3.5},
                                                   _reply(limit_mA=3.0), None, None)), close_modals
    yield "confirm-close", (lambda: ConfirmDialog(
        title="Close the case?", message="Stimulation stops and the case record is closed. Enter the L2 findings "
        "first if they are known (they can be added to the report later only by a new case note).",
        confirm_text="Close the case", danger=True).open(animation=False)), close_modals


def _reply(**error):
    from app.ui.link import Reply

    return Reply("stim.set", False, code="needs_confirmation", message="stim.set: needs confirmation", error=error)


@pytest.mark.parametrize("size", SIZES)
def test_nothing_is_cut_off_and_no_program_words_show(ui, fake_app, size):
    from app.ui import fit

    app = fake_app
    ui.window.size = size
    ui.wait(lambda: tuple(ui.window.size) == size, 5, f"the window at {size}")
    ui.frames(3)
    problems = []
    seen = 0
    for name, show, hide in _views(ui, app):
        show()
        ui.frames(4)
        for p in fit.text_problems(ui.window, ui.window):
            problems.append(f"{name}: {p}")
        for lab in fit.labels(ui.window):
            seen += 1
            for rx, what in PROGRAM_WORDS:
                m = rx.search(lab.text)
                if m:
                    problems.append(f"{name}: {what} {m.group(0)!r} in {lab.text[:80]!r}")
        ui.screenshot(f"50-fit-{name}")
        if hide is not None:
            hide()
            ui.frames(2)
    assert seen > 500  # every view was walked, with its texts
    assert not problems, f"{len(problems)} problem(s) at {size[0]}x{size[1]}:\n" + "\n".join(sorted(set(problems)))
