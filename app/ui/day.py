"""A day of cases at the touchscreen, on the virtual board, as an OR nurse works it.

Owns: ``CASES`` (the day's plan: patient, procedure, sides, what goes wrong) and
``play_day(driver, cases)``: for each case, from the case set-up to the next case, only by
touches (``app.ui.drive.Driver``): the self-test answered, the case opened with a
procedure, a tube type and the L1 findings picked from lists, the tube check, V1-R1-R2
moved to on the simulator panel and recorded with the step buttons, an alarm (a traction
loss of signal on the vagus) acknowledged on the banner, the troubleshooting answered,
the V2 the monitor documented after the loss recorded, the event list and the trend,
then the end of the case: L2, the close-out with a reason for every missing step, the
report, the USB export, and "New case". Every screen and state is photographed
(``driver.screenshot``) on the way; ``lnm screens`` (``app.ui.gallery``) writes those
photographs, a UI test plays the same day and fails on any error the app caught.

"A day, not a case": before each case the drive checks that nothing of the last one is
left: an empty form, no steps, no responses on the monitor, no loss of signal, no event
and no alarm of the last case. A leftover raises ``DriveError`` naming it.

May import: ``app.ui.drive`` (and through it Kivy); the app is the running ``LnmApp``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from app.ui.drive import DriveError, Driver

# the INMSG troubleshooting answers of a true loss of signal (the nerve was stretched)
TRUE_LOSS = {"leads_ok": True, "field_dry": True, "current_delivered": True, "laryngeal_twitch": False,
             "contralateral_vagus": True, "tube_position_ok": True, "secretions_ok": True, "nmb_ok": True,
             "nonrecurrent": False}


@dataclass(frozen=True)
class CasePlan:
    """One case of the day."""

    patient: str
    procedure: str  # as the set-up screen lists it
    sides: tuple[str, ...]  # the planned sides in the order operated ("L", "R")
    loss_side: str = "L"  # where the traction injury happens
    reasons: dict[str, str] = field(default_factory=dict)  # "L.V2" -> the reason picked at the close-out


CASES: tuple[CasePlan, ...] = (
    CasePlan("DAY-101", "Total thyroidectomy", ("L", "R"), "L",
             {"R.V1": "Surgeon decided not to test", "R.R1": "Nerve not exposed"}),
    # the other side next: the left nerve of the virtual patient recovers meanwhile
    CasePlan("DAY-102", "Hemithyroidectomy, right", ("R",), "R", {}),
    CasePlan("DAY-103", "Hemithyroidectomy, left", ("L",), "L", {"L.R2": "Operation stopped"}),
)

SIDE_WORD = {"L": "left", "R": "right"}

# what of a side in the state would be left over from the last case
LEFTOVERS: dict[str, Callable[[dict[str, Any]], bool]] = {
    "steps": lambda v: any(v.values()),
    "los": lambda v: bool(v.get("active") or v.get("since_s") is not None),
    "troubleshooting": lambda v: bool(v),
    "mapping": lambda v: bool(v.get("points")),
    "last": lambda v: v.get("amplitude_uV") is not None or bool(v.get("site")),
}


def _steps(state: dict[str, Any], side: str) -> dict[str, Any]:
    return ((state.get("steps") or {}).get(side) or {})


class Day:
    """Plays ``CASES`` (or fewer) through ``driver`` (see the module docstring)."""

    def __init__(self, driver: Driver, say: Callable[[str], None] | None = None) -> None:
        self.d = driver
        self.app = driver.app
        self.say = say or (lambda _text: None)
        self.closed: list[str] = []  # the case ids closed, in order
        self.missing: list[dict[str, Any]] = []  # the steps missing when the last case was closed

    # -- helpers
    def state(self) -> dict[str, Any]:
        """What the UI knows of the engine now."""
        return dict(self.app.state or {})

    def shot(self, name: str) -> None:
        """A photograph of the screen as it is now."""
        self.d.screenshot(name)

    def probe_to(self, target: str) -> None:
        """Move the virtual probe (simulator panel); the monitor follows the site and side."""
        self.d.go("sim")
        self.d.tap(f"sim.probe.{target}")

    def inject(self, event: str) -> None:
        """Something happens to the virtual patient (simulator panel)."""
        self.d.go("sim")
        self.d.tap(f"sim.event.{event}")

    # -- the day
    def play(self, n: int = len(CASES)) -> list[str]:
        """The first ``n`` cases of the day; the ids of the cases closed."""
        if not 1 <= n <= len(CASES):
            raise ValueError(f"a day has 1 to {len(CASES)} cases (got {n})")
        self.start_of_day()
        for i, plan in enumerate(CASES[:n], start=1):
            self.say(f"case {i} of {n}: {plan.patient}, {plan.procedure}")
            self.case(i, plan)
        self.tour()
        return self.closed

    def tour(self) -> None:
        """After the day: the settings behind the PIN, group by group, the past cases and
        the simulator panel."""
        from app.ui import words as W

        d, app = self.d, self.app
        d.go("settings")
        scr = app.screens["settings"]
        self.shot("90-settings-locked")
        pin = str((app.settings_values or {}).get("ui.settings_pin") or "")
        if pin:
            for k in pin:
                d.tap(f"pin.{k}")
            d.tap("pin.ok")
            d.wait(lambda: scr.unlocked, 5, "the settings unlocked")
            for group, _title in W.SETTING_GROUPS:
                if d.has(f"settings.group.{group}"):
                    d.tap(f"settings.group.{group}")
                    self.shot(f"91-settings-{group}")
            d.tap("settings.lock")
        d.go("case")
        d.tap("setup.cases")
        d.wait(lambda: app.sm.current == "cases" and app.screens["cases"].ids.rows.children, 15, "the past cases")
        self.shot("92-past-cases")
        d.tap("cases.back")
        d.go("sim")
        self.shot("93-simulator")
        d.go("case")

    def start_of_day(self) -> None:
        """The self-test, its questions answered, and on to the case set-up."""
        d = self.d
        if self.app.sm.current == "selftest":
            scr = self.app.screens["selftest"]
            d.wait(lambda: d.has("dialog.confirm") or scr.done, 30, "the self-test")
            if d.has("dialog.confirm"):
                self.shot("01-selftest-question")
            d.answer_selftest()
            self.shot("02-selftest-passed")
            d.tap("selftest.continue")
        d.wait(lambda: self.app.sm.current in ("setup", "monitor"), 10, "the case set-up")

    def case(self, i: int, plan: CasePlan) -> None:
        """One case, set-up to next case."""
        tag = f"c{i}"
        self.nothing_left(plan)
        case_id = self.open_case(tag, plan)
        self.tube_check(tag, first=i == 1)
        side = plan.sides[0]
        self.steps(tag, side, with_r2=f"{side}.R2" not in plan.reasons)
        self.loss_of_signal(tag, plan.loss_side)
        self.troubleshoot(tag, plan.loss_side)
        self.events_and_trend(tag)
        self.close_case(tag, plan)
        self.report_and_export(tag, case_id)

    # -- a case, step by step
    def nothing_left(self, plan: CasePlan) -> None:
        """Nothing of the last case shows at the start of this one."""
        d, app = self.d, self.app
        d.wait(lambda: app.sm.current == "setup" and not app.case_open, 15, "the empty case set-up")
        scr = app.screens["setup"]
        left = [name for name in ("patient", "surgeon", "procedure", "tube_type", "tube_size", "tube_depth")
                if scr.ids[name].value]
        if left or scr.sides:
            raise DriveError(f"the case set-up still shows the last case: {left or scr.sides}")
        st = self.state()
        for key, filled in LEFTOVERS.items():
            value = st.get(key) or {}
            if any(filled(value.get(s) or {}) for s in ("L", "R")):
                raise DriveError(f"a new case would start with the last one's {key}: {value}")
        active = [a for a in (st.get("alarms") or {}).get("active") or [] if a.get("category") == "physiological"]
        if active:
            raise DriveError(f"alarms of the last case still active: {[a.get('id') for a in active]}")

    def open_case(self, tag: str, plan: CasePlan) -> str:
        """The case form filled from lists and the keyboard, then "Open case"."""
        d, app = self.d, self.app
        scr = app.screens["setup"]
        d.tap("setup.patient")
        d.type_text(plan.patient)
        d.tap("setup.procedure")
        d.tap_text(plan.procedure)  # a one-sided procedure selects its side
        d.tap("setup.tube_type")
        d.tap("choice.0")
        d.tap("setup.tube_size")
        d.type_text("7.0")
        for side in plan.sides:
            if side not in scr.sides:
                d.tap(f"setup.side.{side}")
            d.tap(f"setup.l1.{side}.normal")
        if list(scr.sides) != list(plan.sides):
            raise DriveError(f"planned sides {list(scr.sides)}, not {list(plan.sides)}")
        self.shot(f"{tag}-03-setup")
        d.tap("setup.submit")
        d.wait(lambda: app.sm.current == "tube" and (self.state().get("case") or {}).get("patient_id")
               == plan.patient, 15, "the tube check after opening the case")
        st = d.wait(lambda: all(_steps(self.state(), s).get("L1") for s in plan.sides) and self.state(), 10,
                    "L1 recorded")
        # the event list starts with this case: nothing of the last one (its loss of signal)
        d.go("alarms")
        d.tap("alarms.page.events")
        lines = [str(row.get("text")) for row in app.screens["alarms"].ids.events.data]
        if any("LOSS OF SIGNAL" in line.upper() for line in lines):
            raise DriveError(f"the event list of a new case shows the last case's events: {lines[:5]}")
        self.shot(f"{tag}-03b-event-list-new-case")
        d.tap("alarms.page.active")
        return str(st["case"]["case_id"])

    def tube_check(self, tag: str, first: bool) -> None:
        """The impedance check; on the first case of the day a dry electrode fails it first."""
        d, app = self.d, self.app
        scr = app.screens["tube"]
        if first:
            self.inject("dry_L")
            d.go("tube")
            d.tap("tube.check")
            d.wait(lambda: scr.verdict == "FAIL", 15, "FAIL on the tube screen")
            self.shot(f"{tag}-04-tube-failed")
            self.inject("wet_L")
        d.go("tube")
        d.tap("tube.check")
        d.wait(lambda: scr.verdict == "PASS", 15, "PASS on the tube screen")
        self.shot(f"{tag}-05-tube-passed")
        d.tap("tube.start")
        d.wait(lambda: app.sm.current == "monitor" and (self.state().get("stim") or {}).get("probe", {}).get("on"),
               15, "the probe on, the monitor shown")

    def capture(self, side: str, step: str, site: str) -> None:
        """A fresh response of the site, then the step's button."""
        d, app = self.d, self.app
        mon = app.screens["monitor"]
        d.wait(lambda: ((self.state().get("stim") or {}).get("probe") or {}).get("site") == site, 10,
               f"the probe at the {SIDE_WORD[side]} {site}")
        d.go("monitor")
        d.wait(lambda: ((self.state().get("last") or {}).get(side) or {}).get("site") == site
               and self.state()["last"][side].get("response") and mon.ids[f"panel_{side}"].fresh, 20,
               f"a {SIDE_WORD[side]} {site} response")
        if mon.side != side:
            d.tap(f"monitor.side.{side}")
        d.tap(f"monitor.step.{step}")
        d.wait(lambda: (_steps(self.state(), side).get(step) or {}).get("amplitude_uV"), 15,
               f"{step} {SIDE_WORD[side]} recorded")

    def steps(self, tag: str, side: str, with_r2: bool) -> None:
        """V1 at the vagus, R1 (and R2) at the RLN of ``side``."""
        self.probe_to(f"vagus_{side}")
        self.capture(side, "V1", "VAGUS")
        self.shot(f"{tag}-06-monitor-V1")
        self.probe_to(f"rln_{side}")
        self.capture(side, "R1", "RLN")
        if with_r2:
            self.capture(side, "R2", "RLN")
        self.shot(f"{tag}-07-monitor-steps")

    def loss_of_signal(self, tag: str, side: str) -> None:
        """Traction on the vagus: the high-priority alarm, acknowledged on the banner."""
        d, app = self.d, self.app
        self.probe_to(f"vagus_{side}")
        d.wait(lambda: ((self.state().get("last") or {}).get(side) or {}).get("site") == "VAGUS", 15,
               "vagal stimuli")
        self.inject(f"traction_{side}")
        d.go("monitor")
        d.wait(lambda: app.banner.priority == "high", 40, "the loss-of-signal alarm on the banner")
        self.shot(f"{tag}-08-monitor-loss-of-signal")
        shown = app.banner.ack_id
        d.tap("banner.ack")
        d.wait(lambda: any(a.get("id") == shown and a.get("acknowledged")
                           for a in (self.state().get("alarms") or {}).get("active") or []), 15,
               "the alarm acknowledged")
        self.shot(f"{tag}-09-monitor-acknowledged")

    def troubleshoot(self, tag: str, side: str) -> None:
        """The INMSG checks answered one by one; the V2 given after the loss recorded."""
        d, app = self.d, self.app
        d.go("los")
        scr = app.screens["los"]
        d.wait(lambda: scr.side == side and scr.has_ts, 15, "the troubleshooting of the side")
        self.shot(f"{tag}-10-los-checks")
        for _ in range(len(TRUE_LOSS) + 1):
            ts = (self.state().get("troubleshooting") or {}).get(side) or {}
            check = ts.get("next_check")
            if ts.get("conclusion") not in (None, "open") or not check:
                break
            asked = str(check)

            def shown(c: str = asked) -> bool:
                return bool(scr.check == c)

            def answered(c: str = asked) -> bool:
                return c in self._answers(side)

            d.wait(shown, 10, f"the question {check}")
            d.tap("los.yes" if TRUE_LOSS.get(asked, True) else "los.no")
            d.wait(answered, 15, f"the answer to {check}")
        self.shot(f"{tag}-11-los-concluded")
        # the vagal stimuli after the loss are the side's V2: record the one offered
        d.wait(lambda: scr.offer_V2 == "Record V2", 30, "the V2 offered after the loss")
        d.tap("los.offer.V2")
        d.wait(lambda: scr.offer_V2 == "V2 recorded", 15, "V2 recorded from the stimulus after the loss")
        self.shot(f"{tag}-12-los-offer-recorded")
        d.tap("los.page.mapping")
        self.shot(f"{tag}-13-los-mapping")
        d.tap("los.page.checks")
        self.inject(f"release_{side}")
        self.probe_to("air")

    def _answers(self, side: str) -> dict[str, Any]:
        return dict((((self.state().get("troubleshooting") or {}).get(side) or {}).get("answers")) or {})

    def events_and_trend(self, tag: str) -> None:
        """The alarm list, the event list of the case, the trend enlarged."""
        d, app = self.d, self.app
        d.go("alarms")
        self.shot(f"{tag}-14-alarms")
        d.tap("alarms.page.events")
        scr = app.screens["alarms"]
        d.wait(lambda: scr.ids.events.data, 10, "the event list")
        self.shot(f"{tag}-15-event-list")
        d.tap("alarms.page.active")
        d.go("monitor")
        if d.has("monitor.trend"):
            d.tap("monitor.trend")
            d.frames(5)
            self.shot(f"{tag}-16-trend")
            d.dismiss_dialogs()

    def close_case(self, tag: str, plan: CasePlan) -> None:
        """L2, then the close-out: a reason for each step still missing."""
        d, app = self.d, self.app
        d.go("case")
        if app.sm.current != "endcase":
            d.go("case")
        for side in plan.sides:
            d.tap(f"end.l2.{side}.normal")
        d.wait(lambda: all((_steps(self.state(), s).get("L2") or {}).get("finding") == "normal" for s in plan.sides),
               15, "the L2 findings")
        missing = [m for m in self.state().get("missing_steps") or []]
        self.missing = missing
        self.shot(f"{tag}-17-end-of-case")
        d.tap("end.close")
        d.wait(lambda: d.has("dialog.confirm"), 5, "the close confirmation")
        d.tap("dialog.confirm")
        if missing:
            d.wait(lambda: d.has("closeout.close"), 5, "the steps not done")
            for m in missing:
                key = f"{m.get('side')}.{m.get('step')}"
                reason = plan.reasons.get(key)
                if reason:
                    d.tap(f"closeout.reason.{key}")
                    d.tap_text(reason)
            self.shot(f"{tag}-18-closeout-reasons")
            d.tap("closeout.close")
        d.wait(lambda: d.has("key.ok"), 5, "the closing remark")
        d.type_text("END OF CASE")
        d.wait(lambda: not app.case_open and app.sm.current == "report", 30, "the case closed, the report")

    def report_and_export(self, tag: str, case_id: str) -> None:
        """The report preview, the USB export, and "New case"."""
        d, app = self.d, self.app
        rep = app.screens["report"]
        d.wait(lambda: case_id in rep.summary, 60, "the report of the case")
        for m in self.missing:  # the close-out's reasons in the preview too
            reason = f"{m.get('step')} ("
            if reason not in rep.summary or "not done:" not in rep.summary:
                raise DriveError(f"the report preview does not list {m.get('side')} {m.get('step')} as not done")
        d.wait(lambda: rep.pages or "poppler" in rep.page_text, 60, "the report's pages")
        self.shot(f"{tag}-19-report")
        d.tap("report.export")
        d.wait(lambda: rep.export_text.startswith(("EXPORTED", "NOT EXPORTED")), 60, "the export result")
        if not rep.export_text.startswith("EXPORTED"):
            raise DriveError(f"the export failed: {rep.export_text}")
        self.shot(f"{tag}-20-exported")
        self.closed.append(case_id)
        d.tap("report.new_case")
        d.wait(lambda: app.sm.current == "setup", 10, "the set-up of the next case")
