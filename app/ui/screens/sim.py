"""The virtual-board panel: move the virtual probe and inject events, so the product can
be demonstrated end to end without hardware.

Each touch sends ``sim.control`` (refused by the engine with ``not_simulated`` on a real
board). Moving the probe to a nerve can also select that site and side on the monitor
(``probe.site``), as the nurse would; that choice is a toggle.
"""

from __future__ import annotations

from typing import Any

from kivy.properties import BooleanProperty, StringProperty

from app.ui import present as P
from app.ui.screens import LnmScreen, load_kv

PROBE_TARGETS = {
    "vagus_L": ("Left vagus", {"contact": "nerve", "site": "VAGUS", "side": "L"}),
    "rln_L": ("Left RLN", {"contact": "nerve", "site": "RLN", "side": "L"}),
    "ebsln_L": ("Left EBSLN", {"contact": "nerve", "site": "EBSLN", "side": "L"}),
    "vagus_R": ("Right vagus", {"contact": "nerve", "site": "VAGUS", "side": "R"}),
    "rln_R": ("Right RLN", {"contact": "nerve", "site": "RLN", "side": "R"}),
    "ebsln_R": ("Right EBSLN", {"contact": "nerve", "site": "EBSLN", "side": "R"}),
    "tissue": ("Tissue", {"contact": "tissue"}),
    "air": ("Air", {"contact": "air"}),
    "fluid": ("Fluid (wet field)", {"contact": "fluid"}),
}

EVENTS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "traction_L": ("Traction, left", "traction", {"side": "L", "severity": 0.95, "onset_s": 3.0}),
    "traction_R": ("Traction, right", "traction", {"side": "R", "severity": 0.95, "onset_s": 3.0}),
    "release_L": ("Release, left", "release", {"side": "L", "recovery_s": 60.0}),
    "release_R": ("Release, right", "release", {"side": "R", "recovery_s": 60.0}),
    "cautery": ("Cautery 3 s", "cautery", {"duration_s": 3.0}),
    "tube_out": ("Tube displaced", "tube", {"left": 0.35, "right": 0.35, "over_s": 2.0}),
    "tube_in": ("Tube back", "tube", {"left": 1.0, "right": 1.0, "over_s": 2.0}),
    "lead_off": ("Lead off (left +)", "lead_off", {"electrode": "L_POS"}),
    "lead_on": ("Lead back (left +)", "lead_on", {"electrode": "L_POS"}),
    "dry_L": ("Dry electrode left + (9 kΩ)", "impedance", {"electrode": "L_POS", "ohm": 9000.0}),
    "wet_L": ("Electrode left + good", "impedance", {"electrode": "L_POS", "ohm": 2000.0}),
    "open": ("Probe open circuit", "output", {"output": "probe", "state": "open"}),
    "probe_ok": ("Probe circuit OK", "output", {"output": "probe", "state": "ok"}),
    "nmb": ("Relaxant given", "nmb", {"level": 0.9, "onset_s": 20.0}),
    "nmb_off": ("Relaxant reversed", "nmb", {"level": 0.0, "onset_s": 20.0}),
    "aps_L": ("Vagal electrode on the left", "aps_attach", {"side": "L"}),
    "aps_R": ("Vagal electrode on the right", "aps_attach", {"side": "R"}),
    "aps_off": ("Vagal electrode removed", "aps_detach", {}),
}


class SimScreen(LnmScreen):
    """The virtual-board panel (see the module docstring)."""

    follow = BooleanProperty(True)
    last = StringProperty("Touch where the virtual probe is, or an event to inject.")
    simulated = BooleanProperty(False)

    def update(self, state: dict[str, Any]) -> None:
        self.simulated = bool((state.get("engine") or {}).get("simulated"))
        probe = (state.get("stim") or {}).get("probe") or {}
        self.ids.follow.state = "down" if self.follow else "normal"
        self.ids.status.text = (f"Monitor: probe {'ON' if probe.get('on') else 'off'} at "
                                f"{P.site_side_name(probe.get('site'), probe.get('side')) or '-'}, "
                                f"{P.fmt_ma(probe.get('current_mA'), 1)} mA set")

    def move_probe(self, key: str) -> None:
        label, args = PROBE_TARGETS[key]
        self.app.cmd("sim.control", command="probe", args=dict(args),
                     on_ok=lambda _r: setattr(self, "last", f"virtual probe: {label}"))
        if self.follow and args.get("contact") == "nerve":
            self.app.cmd("probe.site", site=args["site"], side=args["side"])

    def inject(self, key: str) -> None:
        label, command, args = EVENTS[key]
        self.app.cmd("sim.control", command=command, args=dict(args),
                     on_ok=lambda _r: setattr(self, "last", f"injected: {label}"))

    def toggle_follow(self) -> None:
        self.follow = not self.follow
        self.ids.follow.state = "down" if self.follow else "normal"


load_kv(__file__)
