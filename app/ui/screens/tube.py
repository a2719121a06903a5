"""Tube check: electrode impedances with pass/fail, imbalance, lead-off and breathing
variation, then the start of monitoring.

The engine measures and judges (``tube.check``; limits ``tube.max_impedance_kohm`` and
``tube.max_imbalance_kohm``; then, over ``tube.breathing_window_s`` of free-running EMG,
the breathing variation per side, shown as it arrives: measuring with the seconds left,
then present or absent with its values) and refuses to start stimulation after a failed
check until an override with a reason has been recorded (``tube.override``). This screen
shows the verdicts in words, asks for that reason, and starts monitoring (``stim.output``).
"""

from __future__ import annotations

from typing import Any

from kivy.properties import BooleanProperty, StringProperty

from app.ui import present as P
from app.ui import words as W
from app.ui.screens import LnmScreen, load_kv
from app.ui.widgets import ask_text

ELECTRODES = (("L_POS", "Left +"), ("L_NEG", "Left -"), ("R_POS", "Right +"), ("R_NEG", "Right -"),
              ("GROUND", "Ground"), ("STIM_RETURN", "Stimulus return"))


def tube_summary(tube: dict[str, Any], passed: bool) -> str:
    """The tube check's verdict and its problems in words (from its values, not its message)."""
    if passed:
        return "TUBE CHECK PASSED: all electrodes within limits."
    limits = tube.get("limits") or {}
    max_z, max_imb = limits.get("max_impedance_kohm"), limits.get("max_imbalance_kohm")
    problems = [f"{W.electrode_name(k)} not connected (lead off)" for k in sorted(tube.get("lead_off") or [])]
    for key, z in (tube.get("impedances_kohm") or {}).items():
        if z is not None and max_z is not None and z >= max_z and key[:2] in ("L_", "R_"):
            problems.append(f"{W.electrode_name(key)} {z:.1f} kΩ, above {max_z:g} kΩ")
    for side, v in (tube.get("imbalance_ohm") or {}).items():
        if v is not None and max_imb is not None and v / 1000.0 > max_imb:
            problems.append(f"{P.side_name(side).lower()} pair differs by {v / 1000.0:.1f} kΩ, above {max_imb:g} kΩ")
    return "TUBE CHECK FAILED: " + ("; ".join(problems) if problems else W.plain(tube.get("message"))) + "."


class TubeScreen(LnmScreen):
    """The tube check (see the module docstring)."""

    summary = StringProperty("Not checked yet: touch 'Check electrodes'.")
    verdict = StringProperty("")  # PASS | FAIL | ""
    details = StringProperty("")
    override_text = StringProperty("")
    checked = BooleanProperty(False)
    passed = BooleanProperty(False)
    overridden = BooleanProperty(False)
    case_open = BooleanProperty(False)
    monitoring = BooleanProperty(False)

    def update(self, state: dict[str, Any]) -> None:
        self.case_open = state.get("case") is not None
        self.monitoring = bool(((state.get("stim") or {}).get("probe") or {}).get("on"))
        tube = state.get("tube")
        if not tube or not tube.get("checked"):
            self.checked = False
            self.verdict = ""
            for key, _ in ELECTRODES:
                row = self.ids[f"el_{key}"]
                row.value, row.verdict = "-", ""
            return
        self.checked = True
        self.passed = bool(tube.get("pass", tube.get("passed")))
        self.verdict = "PASS" if self.passed else "FAIL"
        limits = tube.get("limits") or {}
        max_z = limits.get("max_impedance_kohm")
        max_imb = limits.get("max_imbalance_kohm")
        imp = tube.get("impedances_kohm") or {}
        off = set(tube.get("lead_off") or [])
        for key, _ in ELECTRODES:
            row = self.ids[f"el_{key}"]
            z = imp.get(key)
            if key in off:
                row.value, row.verdict = "no contact", "LEAD OFF"
            elif z is None:
                row.value, row.verdict = "-", ""
            else:
                row.value = f"{z:.1f} kΩ"
                row.verdict = "PASS" if max_z is None or z < max_z else "FAIL"
        imb = tube.get("imbalance_ohm") or {}
        parts = []
        for side, name in (("L", "left"), ("R", "right")):
            v = imb.get(side)
            if v is not None:
                k = v / 1000.0
                ok = max_imb is None or k < max_imb
                parts.append(f"Imbalance of the {name} pair: {k:.2f} kΩ {'PASS' if ok else 'FAIL'}")
        parts += P.breathing_words(tube.get("breathing_variation"))
        if max_z is not None:
            parts.append(f"Limits: each electrode below {max_z:g} kΩ, pair imbalance below {max_imb:g} kΩ")
        self.details = "\n".join(parts)
        self.summary = tube_summary(tube, self.passed)
        ov = tube.get("override")
        self.overridden = bool(ov)
        self.override_text = (f"Override recorded: {ov.get('reason') if isinstance(ov, dict) else ov}" if ov else "")

    def check(self) -> None:
        self.summary = "Measuring the electrode impedances ..."
        self.app.cmd("tube.check", ok_message="impedance measurement requested")

    def override(self) -> None:
        ask_text("Reason for starting despite the failed check",
                 lambda text: self.app.cmd("tube.override", reason=text, ok_message="override recorded")
                 if text else self.app.notify("no reason given: override not recorded", "refused"),
                 hint="e.g. electrodes repositioned, surgeon accepts")

    def start(self) -> None:
        def started(_r: dict[str, Any]) -> None:
            self.app.notify("monitoring started: probe stimulator on", "ok")
            self.app.go("monitor")

        self.app.cmd("stim.output", on_ok=started, output="probe", on=True)


load_kv(__file__)
