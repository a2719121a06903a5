"""Case set-up: patient, surgeon profile, procedure, planned sides, tube, L1 findings.

Text is entered with the on-screen keyboard; choices are picked from lists. Nothing is
validated here beyond what the keyboard offers: the engine validates ``case.start`` and
its refusal (which names the field and what it accepts) is shown in the form as it
comes. After the case opens, the L1 findings go to the engine (``laryngoscopy``) and the
tube check follows. While a case is open the same screen edits its details
(``case.update``).
"""

from __future__ import annotations

from typing import Any

from kivy.properties import BooleanProperty, ListProperty, StringProperty

from app import settings as settings_mod
from app.ui import present as P
from app.ui.screens import LnmScreen, load_kv

PROCEDURES = ("Total thyroidectomy", "Hemithyroidectomy, left", "Hemithyroidectomy, right",
              "Completion thyroidectomy", "Parathyroidectomy", "Central neck dissection")
TUBES = ("EMG tube with surface electrodes", "Standard tube with adhesive electrodes")


class SetupScreen(LnmScreen):
    error = StringProperty("")
    editing = BooleanProperty(False)  # a case is open: the form edits it
    sides = ListProperty([])  # planned sides in the order touched

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        try:
            names = settings_mod.list_profiles(getattr(self.app, "options", None) and self.app.options.config_dir)
        except OSError:
            names = []
        self.ids.profile.choices = [("none (default settings)", None)] + [(n, n) for n in names]
        self.ids.procedure.choices = [(p, p) for p in PROCEDURES]
        self.ids.tube_type.choices = [(t, t) for t in TUBES]
        self.findings: dict[str, str | None] = {"L": None, "R": None}
        self._loaded_case: str | None = None

    # ------------------------------------------------------------------ state

    def update(self, state: dict[str, Any]) -> None:
        case = state.get("case")
        self.editing = case is not None
        if case is not None and case.get("case_id") != self._loaded_case:
            self._loaded_case = case.get("case_id")
            ids = self.ids
            ids.patient.value = str(case.get("patient_id") or "")
            ids.surgeon.value = str(case.get("surgeon") or "")
            ids.procedure.value = str(case.get("procedure") or "")
            ids.procedure.chosen = case.get("procedure")
            tube = case.get("tube") or {}
            ids.tube_type.value = str(tube.get("type") or "")
            ids.tube_type.chosen = tube.get("type")
            ids.tube_size.value = "" if tube.get("size_mm") is None else f"{tube['size_mm']:g}"
            ids.tube_depth.value = "" if tube.get("depth_cm") is None else f"{tube['depth_cm']:g}"
            self.sides = list(case.get("planned_sides") or [])
            steps = state.get("steps") or {}
            for side in ("L", "R"):
                f = ((steps.get(side) or {}).get("L1") or {}).get("finding")
                self.set_finding(side, f, send=False)
        elif case is None and self._loaded_case is not None:
            self._loaded_case = None
            self.clear()
        self._sync_side_toggles()

    def clear(self) -> None:
        for fid in ("patient", "surgeon", "procedure", "tube_type", "tube_size", "tube_depth", "profile"):
            self.ids[fid].value = ""
            if hasattr(self.ids[fid], "chosen"):
                self.ids[fid].chosen = None
        self.sides = []
        for side in ("L", "R"):
            self.set_finding(side, None, send=False)
        self.error = ""

    # ------------------------------------------------------------------ sides and findings

    def toggle_side(self, side: str) -> None:
        sides = list(self.sides)
        if side in sides:
            sides.remove(side)
        else:
            sides.append(side)
        self.sides = sides
        self._sync_side_toggles()
        if self.editing:
            self.app.cmd("case.update", planned_sides=list(self.sides),
                         ok_message="planned sides: " + (", ".join(P.side_name(s) for s in self.sides) or "none"))

    def _sync_side_toggles(self) -> None:
        for side in ("L", "R"):
            t = self.ids[f"side_{side}"]
            t.state = "down" if side in self.sides else "normal"
            order = ("1st " if self.sides.index(side) == 0 else "2nd ") if side in self.sides and len(self.sides) > 1 else ""
            t.text = f"{order}{'Left' if side == 'L' else 'Right'}"

    def set_finding(self, side: str, finding: str | None, send: bool = True) -> None:
        self.findings[side] = finding
        for key, _label in P.FINDINGS:
            self.ids[f"l1_{side}_{key}"].state = "down" if key == finding else "normal"
        if send and self.editing and finding:
            self.app.cmd("laryngoscopy", phase="L1", side=side, finding=finding,
                         ok_message=f"L1 {P.side_name(side).lower()}: {finding.replace('_', ' ')} recorded")

    # ------------------------------------------------------------------ submit

    def _args(self) -> dict[str, Any]:
        ids = self.ids
        args: dict[str, Any] = {}
        if ids.surgeon.value:
            args["surgeon"] = ids.surgeon.value
        proc = ids.procedure.chosen or ids.procedure.value
        if proc:
            args["procedure"] = proc
        args["planned_sides"] = list(self.sides)
        tube = ids.tube_type.chosen or ids.tube_type.value
        if tube:
            args["tube_type"] = tube
        for fid, key in (("tube_size", "tube_size_mm"), ("tube_depth", "tube_depth_cm")):
            text = ids[fid].value.strip()
            if text:
                try:
                    args[key] = float(text)
                except ValueError:
                    args[key] = text  # the engine refuses it with a message naming the field
        return args

    def submit(self) -> None:
        self.error = ""
        args = self._args()
        if self.editing:
            self.app.cmd("case.update", on_error=self._refused, ok_message="case details saved", **args)
            return
        patient = self.ids.patient.value.strip()
        if self.ids.profile.chosen:
            args["profile"] = self.ids.profile.chosen
        self.app.cmd("case.start", on_ok=self._opened, on_error=self._refused, patient_id=patient, **args)

    def _refused(self, reply: Any) -> bool:
        self.error = "NOT ACCEPTED: " + reply.message
        self.app.notify(reply.message, "refused")
        return True

    def _opened(self, result: dict[str, Any]) -> None:
        self.app.notify(f"case {result.get('case_id')} opened", "ok")
        self._loaded_case = result.get("case_id")
        self.editing = True
        for side in ("L", "R"):
            finding = self.findings.get(side)
            if finding:
                self.app.cmd("laryngoscopy", phase="L1", side=side, finding=finding)
        self.app.go("tube")


load_kv(__file__)
