"""Case set-up: patient, surgeon profile, procedure, planned sides, tube, L1 findings;
and the way to the past cases.

Text is entered with an on-screen keyboard that offers only what the field accepts;
choices are picked from lists. Picking a one-sided procedure ("Hemithyroidectomy, left")
selects its side. Before anything is sent, every field is checked (``app.ui.forms``, with
the API's own limits): a field with problems is highlighted and ALL its problems are said
in words, and a case cannot open without a side. The engine checks everything again; its
refusal is shown at the field it names, in words. After the case opens, the L1 findings
go to the engine (``laryngoscopy``) and the tube check follows. While a case is open the
same screen edits its details (``case.update``).
"""

from __future__ import annotations

from typing import Any

from kivy.properties import BooleanProperty, ListProperty, StringProperty

from app import settings as settings_mod
from app.ui import forms as F
from app.ui import present as P
from app.ui import words as W
from app.ui.screens import LnmScreen, load_kv

PROCEDURES = ("Total thyroidectomy", "Hemithyroidectomy, left", "Hemithyroidectomy, right",
              "Completion thyroidectomy", "Parathyroidectomy", "Central neck dissection")
TUBES = ("EMG tube with surface electrodes", "Standard tube with adhesive electrodes")


class SetupScreen(LnmScreen):
    """The case form (see the module docstring)."""

    error = StringProperty("")
    editing = BooleanProperty(False)  # a case is open: the form edits it
    sides = ListProperty([])  # planned sides in the order touched
    sides_error = StringProperty("")

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        try:
            names = settings_mod.list_profiles(getattr(self.app, "options", None) and self.app.options.config_dir)
        except OSError:
            names = []
        self.ids.profile.choices = [("none (default settings)", None)] + [(n, n) for n in names]
        self.ids.procedure.choices = [(p, p) for p in PROCEDURES]
        self.ids.tube_type.choices = [(t, t) for t in TUBES]
        for name, rule in F.CASE_FIELDS.items():
            fld = self.ids[name]
            fld.caption = rule.caption
            fld.mode = rule.keyboard
            fld.hint = f"{rule.caption}: {rule.allowed}"
            fld.unit = rule.unit
            fld.max_len = rule.max_len
            fld.bind(value=lambda _w, _v, n=name: self._edited(n))
        self.ids.procedure.bind(chosen=lambda _w, v: self._procedure_chosen(v))
        self.findings: dict[str, str | None] = {"L": None, "R": None}
        self._loaded_case: str | None = None

    # ------------------------------------------------------------------ state

    def update(self, state: dict[str, Any]) -> None:
        case = state.get("case")
        self.editing = case is not None
        if case is not None and case.get("case_id") != self._loaded_case:
            self._loaded_case = case.get("case_id")
            self._load(case, state)
        elif case is None and self._loaded_case is not None:
            self._loaded_case = None
            self.clear()
        self._sync_side_toggles()

    def _load(self, case: dict[str, Any], state: dict[str, Any]) -> None:
        ids = self.ids
        ids.patient.value = str(case.get("patient_id") or "")
        ids.surgeon.value = str(case.get("surgeon") or "")
        ids.procedure.value = str(case.get("procedure") or "")
        ids.procedure.chosen = case.get("procedure")
        tube = case.get("tube") or {}
        ids.tube_type.value = str(tube.get("type") or case.get("tube_type") or "")
        ids.tube_type.chosen = tube.get("type") or case.get("tube_type")
        size = tube.get("size_mm", case.get("tube_size_mm"))
        depth = tube.get("depth_cm", case.get("tube_depth_cm"))
        ids.tube_size.value = "" if size is None else f"{size:g}"
        ids.tube_depth.value = "" if depth is None else f"{depth:g}"
        self.sides = list(case.get("planned_sides") or [])
        steps = state.get("steps") or {}
        for side in ("L", "R"):
            f = ((steps.get(side) or {}).get("L1") or {}).get("finding")
            self.set_finding(side, f, send=False)
        self._show_errors({})

    def clear(self) -> None:
        """An empty form for the next case."""
        for fid in ("patient", "surgeon", "procedure", "tube_type", "tube_size", "tube_depth", "profile"):
            self.ids[fid].value = ""
            if hasattr(self.ids[fid], "chosen"):
                self.ids[fid].chosen = None
        self.sides = []
        for side in ("L", "R"):
            self.set_finding(side, None, send=False)
        self._show_errors({})

    # ------------------------------------------------------------------ sides and findings

    def toggle_side(self, side: str) -> None:
        """Add or remove a planned side (the order touched is the order operated)."""
        sides = list(self.sides)
        if side in sides:
            sides.remove(side)
        else:
            sides.append(side)
        self._set_sides(sides)

    def _set_sides(self, sides: list[str]) -> None:
        self.sides = sides
        self.sides_error = ""
        self._sync_side_toggles()
        if self.editing and sides:
            self.app.cmd("case.update", planned_sides=list(self.sides),
                         ok_message="planned sides: " + " then ".join(P.side_name(s).lower() for s in self.sides))

    def _procedure_chosen(self, procedure: Any) -> None:
        sides = F.sides_for_procedure(procedure)
        if sides is not None and sides != list(self.sides):
            self._set_sides(sides)
            self.app.notify(f"{procedure}: the {P.side_name(sides[0]).lower()} side is selected", "info")

    def _sync_side_toggles(self) -> None:
        for side in ("L", "R"):
            t = self.ids[f"side_{side}"]
            t.state = "down" if side in self.sides else "normal"
            order = ""
            if side in self.sides and len(self.sides) > 1:
                order = "1st " if self.sides.index(side) == 0 else "2nd "
            t.text = f"{order}{'Left' if side == 'L' else 'Right'}"

    def set_finding(self, side: str, finding: str | None, send: bool = True) -> None:
        """The L1 finding of a side (sent at once while a case is open)."""
        self.findings[side] = finding
        for key, _label in P.FINDINGS:
            self.ids[f"l1_{side}_{key}"].state = "down" if key == finding else "normal"
        if send and self.editing and finding:
            self.app.cmd("laryngoscopy", phase="L1", side=side, finding=finding,
                         ok_message=f"L1 {P.side_name(side).lower()}: {P.FINDING_WORDS.get(finding, finding)} "
                                    "recorded")

    # ------------------------------------------------------------------ checking

    def _values(self) -> dict[str, str]:
        ids = self.ids
        return {name: (str(ids[name].chosen) if getattr(ids[name], "chosen", None) else ids[name].value)
                for name in F.CASE_FIELDS}

    def _edited(self, name: str) -> None:
        fld = self.ids[name]
        if fld.errors:  # an entry being corrected is checked again at once
            errs = F.field_errors(F.CASE_FIELDS[name], self._values()[name])
            fld.errors = "; ".join(errs)
            self._summarise()

    def _show_errors(self, errors: dict[str, list[str]]) -> None:
        for name in F.CASE_FIELDS:
            self.ids[name].errors = "; ".join(errors.get(name) or [])
        self.sides_error = "; ".join(errors.get("sides") or [])
        self._summarise()

    def _summarise(self) -> None:
        errors = {n: [self.ids[n].errors] for n in F.CASE_FIELDS if self.ids[n].errors}
        if self.sides_error:
            errors["sides"] = [self.sides_error]
        self.error = ("NOT " + ("SAVED" if self.editing else "OPENED") + ". " + F.summary(errors)) if errors else ""

    # ------------------------------------------------------------------ submit

    def _args(self) -> dict[str, Any]:
        values = self._values()
        args: dict[str, Any] = {}
        for name, rule in F.CASE_FIELDS.items():
            text = values[name].strip()
            if name == "patient" or not text:
                continue
            args[rule.arg] = float(text) if rule.keyboard == "numeric" else text
        args["planned_sides"] = list(self.sides)
        return args

    def submit(self) -> None:
        """Check every field; open the case (or save its details) when all are right."""
        errors = F.case_errors(self._values(), list(self.sides), editing=self.editing)
        self._show_errors(errors)
        if errors:
            self.app.notify("Not " + ("saved" if self.editing else "opened") + ": correct the highlighted fields.",
                            "refused")
            return
        args = self._args()
        if self.editing:
            self.app.cmd("case.update", on_error=self._refused, ok_message="case details saved", **args)
            return
        if self.ids.profile.chosen:
            args["profile"] = self.ids.profile.chosen
        self.app.cmd("case.start", on_ok=self._opened, on_error=self._refused,
                     patient_id=self.ids.patient.value.strip(), **args)

    def _refused(self, reply: Any) -> bool:
        words = W.refusal_words(reply.code, reply.message, reply.error)
        field = F.FIELD_OF_ARG.get(str(reply.error.get("argument") or ""))
        if field == "sides":
            self.sides_error = words
        elif field in F.CASE_FIELDS:
            self.ids[field].errors = words.partition(": ")[2] or words
        self._summarise()
        if not self.error:
            self.error = "NOT " + ("SAVED" if self.editing else "OPENED") + ". " + words
        self.app.notify(words, "refused")
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

    def past_cases(self) -> None:
        """The list of past cases (reports, verification, export)."""
        self.app.go("cases")


load_kv(__file__)
