"""A stand-in for the engine link that shows the UI a busy, worst-case moment of a case:
the longest names the API allows, every list full, alarms with long messages, a loss of
signal under troubleshooting, mapping and staging, a failed tube check with a lead off,
a failed self-test item, a long event history, the whole settings schema.

Used to check the layout (nothing cut off, no program words) at every screen size without
waiting for a real engine to get there. It answers the commands the screens ask for on
their own (settings, trend, events, cases, report, self-test); every other command is
accepted and remembered in ``sent``.
"""

from __future__ import annotations

import math
import time
from typing import Any

from app import settings as settings_mod
from app.ui.link import Health, Reply

LONG_PROCEDURE = ("Total thyroidectomy with central neck dissection and bilateral parathyroid "
                  "autotransplantation, reoperation")[:120]
LONG_SURGEON = "Prof. Dr. Maximiliane Alexandra Grünwald-Schwarzenberg"[:64]
LONG_PATIENT = "P-2026-11-21-ABCDEFGHIJ-0123456"[:32]


def _measurement(side: str, site: str, source: str, amp: float | None, lat: float | None, t: float,
                 response: bool = True, step: str | None = None, valid: bool = True) -> dict[str, Any]:
    return {"index": int(t * 4), "t_s": t, "site": site, "side": side, "source": source, "set_mA": 1.0,
            "delivered_mA": 0.99, "pw_us": 100, "step": step, "channel": f"EMG {side}", "valid": valid,
            "invalid_reason": None if valid else "cautery", "response": response, "amplitude_uV": amp,
            "latency_ms": lat, "onset_latency_ms": None if lat is None else lat - 1.1}


def _alarm(kind: str, title: str, pr: str, side: str | None, site: str | None, t: float, tech: bool = False,
           acked: bool = False, latched: bool = False, active: bool = True) -> dict[str, Any]:
    key = f"{site}-{side}" if side else ""
    where = {"L": "left", "R": "right"}.get(str(side), "board")
    return {"id": f"{kind}:{key}", "kind": kind, "key": key, "title": title, "name": title,
            "message": f"{title}: a long explanation of what happened on the {where} side, "
                       "with the measured values and what they mean for the patient and the nerve.",
            "action": "Stop dissection and traction. Troubleshoot: current delivered? laryngeal twitch? stimulate "
                      "the contralateral vagus; check tube depth and rotation. If confirmed, map the nerve.",
            "category": "technical" if tech else "physiological", "technical": tech, "priority": pr,
            "original_priority": pr, "side": side, "site": site, "raised_t_s": t, "latch": "until_reset",
            "latched": latched, "condition_active": active, "acknowledged": acked,
            "acknowledged_by": "ui#3" if acked else None, "escalated": False, "audible": True, "detail": {}}


def busy_state(t: float = 5432.1) -> dict[str, Any]:
    """The state of a long bilateral case at a bad moment."""
    steps_l = {"L1": {"finding": "normal"},
               "V1": {"amplitude_uV": 1234.0, "latency_ms": 7.81, "set_mA": 1.0, "delivered_mA": 0.99, "t_s": 300.0,
                      "index": 1200},
               "R1": {"amplitude_uV": 2345.0, "latency_ms": 3.92, "t_s": 420.0, "index": 1680},
               "S1": {"amplitude_uV": 456.0, "latency_ms": 2.5, "t_s": 460.0, "index": 1840}}
    steps_r = {"L1": {"finding": "not_examined"},
               "V1": {"amplitude_uV": 987.0, "latency_ms": 5.61, "t_s": 3000.0, "index": 12000},
               "R1": {"amplitude_uV": 1500.0, "latency_ms": 3.5, "t_s": 3100.0, "index": 12400},
               "R2": {"amplitude_uV": 1450.0, "latency_ms": 3.6, "t_s": 4000.0, "index": 16000},
               "V2": {"amplitude_uV": 27.0, "latency_ms": None, "t_s": 5000.0, "index": 20000},
               "L2": {"finding": "palsy"}}
    ts = {"side": "L", "answers": {
        "current_delivered": {"answer": "yes", "by": "ui#3", "t_s": 5000.0},
        "leads_ok": {"answer": "yes", "by": "ui#3", "t_s": 5010.0},
        "field_dry": {"answer": "no", "by": "ui#3", "t_s": 5020.0},
        "laryngeal_twitch": {"answer": "no", "by": "ui#3", "t_s": 5030.0},
        "contralateral_vagus": {"answer": "yes", "by": "monitor", "t_s": 5040.0},
        "tube_position_ok": {"answer": "yes", "by": "ui#3", "t_s": 5050.0},
        "secretions_ok": {"answer": "yes", "by": "ui#3", "t_s": 5060.0}},
        "conclusion": "open", "confirmed": False, "next_check": "nmb_ok",
        "next_question": "Is the train-of-four normal (no neuromuscular blockade)?",
        "message": "Recording problem unlikely; stimulation works. Next: Is the train-of-four normal (no "
                   "neuromuscular blockade)?", "open": True, "recovered_t_s": None, "t_s": 4990.0,
        "sites": {"VAGUS": {}, "RLN": {}}}
    alarms = busy_alarms(t)
    return {
        "type": "state", "seq": int(t * 5), "t_s": t, "wall_time": "2026-11-21T10:43:12Z",
        "engine": {"version": "lnm 0.1.0", "simulated": True, "profile": "standard", "uptime_s": t, "clients": 2},
        "board": {"connected": True, "url": "sim://", "board_id": "SIM-1", "firmware": "sim-1.0",
                  "faults": ["lead_off"], "stimulating": ["probe", "aps"], "backup_beeper": False},
        "storage": {"ok": True, "message": ""}, "audio": {"ok": True, "backend": "capture", "message": ""},
        "case": {"case_id": "20261121-103000-" + LONG_PATIENT, "patient_id": LONG_PATIENT, "surgeon": LONG_SURGEON,
                 "procedure": LONG_PROCEDURE, "planned_sides": ["L", "R"],
                 "tube": {"type": "EMG tube with surface electrodes", "size_mm": 7.5, "depth_cm": 21.0},
                 "opened_at": "2026-11-21T09:00:00Z", "resumed": False},
        "last_case_id": "20261120-150000-P-0041",
        "stim": {"confirm_above_mA": 3.0,
                 "probe": {"on": True, "current_mA": 2.5, "rate_hz": 4.0, "pulse_width_us": 100, "delivered_mA": 1.12,
                           "site": "RLN", "side": "R", "step": "R2"},
                 "aps": {"on": True, "current_mA": 1.0, "rate_hz": 1.0, "pulse_width_us": 100, "delivered_mA": 1.0,
                         "side": "L"}},
        "threshold_uV": 100.0, "volume_pct": 70.0,
        "last": {"L": _measurement("L", "VAGUS", "APS", 27.0, 9.12, t - 0.4),
                 "R": _measurement("R", "RLN", "PROBE", 2222.0, 3.61, t - 0.2, step="R2")},
        "aps": {"L": {"side": "L", "baseline_uV": 650.0, "baseline_latency_ms": 7.9, "baseline_count": 20,
                      "baseline_needed": 20, "collecting": False, "amplitude_pct": 4.0, "latency_pct": 115.0},
                "R": {"side": "R", "baseline_uV": None, "baseline_latency_ms": None, "baseline_count": 7,
                      "baseline_needed": 20, "collecting": True, "amplitude_pct": None, "latency_pct": None}},
        "baselines": {"VAGUS-L": {"amplitude_uV": 1234.0, "latency_ms": 7.81},
                      "RLN-L": {"amplitude_uV": 2345.0, "latency_ms": 3.92},
                      "VAGUS-R": {"amplitude_uV": 987.0, "latency_ms": 5.61}},
        "steps": {"L": steps_l, "R": steps_r}, "pending_step": {"step": "V2", "side": "L"},
        "los": {"L": {"active": True, "since_s": 4990.0, "recovered_at_s": None, "type": 1},
                "R": {"active": False, "since_s": None, "recovered_at_s": None, "type": None}},
        "troubleshooting": {"L": ts, "R": None},
        "mapping": {"L": {"points": [{"position_mm": p, "response": p < 20} for p in (0.0, 5.0, 10.0, 15.0, 20.0,
                                                                                      25.0, 30.0, 35.0, 40.0)],
                          "type": 1, "classification": "segmental",
                          "lesion_between_mm": [15.0, 20.0],
                          "message": "Type 1 (segmental) injury between 15 and 20 mm from the laryngeal entry: "
                                     "the distal nerve still responds."},
                    "R": {"points": [], "type": None, "classification": "not_mapped", "message": "Not mapped."}},
        "staging": {"recommended": True, "active": {"side": "L", "message": "x"},
                    "reason": "Confirmed loss of signal on the first side (left) of a bilateral operation, not "
                              "recovered: consider staging (postpone the second side) to avoid a bilateral "
                              "vocal-fold palsy.", "decision": None},
        "tube": {"checked": True, "t_s": 120.0, "pass": False, "passed": False,
                 "impedances_kohm": {"L_POS": None, "L_NEG": 1.1, "R_POS": 12.34, "R_NEG": 1.2, "GROUND": 1.4,
                                     "STIM_RETURN": 1.1},
                 "imbalance_ohm": {"L": None, "R": 11140}, "lead_off": ["L_POS"],
                 "breathing_variation": {"L": {"status": "not_measurable", "present": None,
                                               "reason": "no signal (electrode off?)"},
                                         "R": {"status": "measured", "present": False, "wander_uV": 3.1,
                                               "modulation_pct": 2.2, "rate_per_min": 14.0}},
                 "limits": {"max_impedance_kohm": 5.0, "max_imbalance_kohm": 1.0},
                 "message": "lead off: L_POS; impedance above 5 kOhm: R_POS; imbalance above 1 kOhm: side R",
                 "override": {"reason": "Electrodes repositioned twice, surgeon accepts the risk and continues"}},
        "emg": {"cautery": True, "irritation_active": {"R": t - 2}, "irritation_last_s": {"L": t - 100}},
        "alarms": alarms,
        "counters": {"stimuli": 21834, "journal_entries": 42210},
    }


def busy_alarms(t: float = 5432.1) -> dict[str, Any]:
    """Five active alarms, audio paused."""
    return {"type": "alarms", "audio": "paused", "pause_remaining_s": 95.0, "audio_off_reminder_in_s": None,
            "sounding": None, "sounding_id": None, "top": "combined_event:VAGUS-L",
            "active": [_alarm("combined_event", "COMBINED EVENT", "high", "L", "VAGUS", 4980.0),
                       _alarm("loss_of_signal", "LOSS OF SIGNAL", "high", "L", "VAGUS", 4990.0),
                       _alarm("no_current", "No stimulus current", "medium", "R", "RLN", 5100.0, tech=True,
                              acked=True, latched=True, active=False),
                       _alarm("poor_baseline", "Poor baseline: check tube", "low", "R", "VAGUS", 3000.0),
                       _alarm("lead_off", "Lead off", "medium", None, None, 5200.0, tech=True)],
            "notices": []}


def busy_events(t: float = 5432.1) -> list[dict[str, Any]]:
    """A long history of every kind of event."""
    evs: list[dict[str, Any]] = []
    kinds = [
        ("alarm", "raised", "high", "L", "VAGUS", {"alarm": "loss_of_signal:VAGUS-L", "kind": "loss_of_signal",
                                                  "who": "rules", "message": "No EMG response at 1.0 mA"}),
        ("alarm", "acknowledged", "high", "L", "VAGUS", {"alarm": "loss_of_signal:VAGUS-L",
                                                        "kind": "loss_of_signal", "who": "ui#3"}),
        ("alarm", "removed", "medium", "R", "RLN", {"alarm": "no_current:RLN-R", "kind": "no_current", "who": "ui#3"}),
        ("alarm", "escalated", "high", "R", "VAGUS", {"alarm": "poor_baseline:VAGUS-R", "kind": "poor_baseline",
                                                     "who": "timer", "to_priority": "medium",
                                                     "unacknowledged_s": 60.2}),
        ("alarm", "audio_paused", None, None, None, {"who": "ui#3"}),
        ("alarm", "acknowledged", None, None, None, {"alarm": None, "who": "footswitch"}),
        ("rule", "loss_of_signal", "high", "L", "VAGUS", {"message": "Loss of signal after 2 stimuli at 1.0 mA"}),
        ("procedure", "step_recorded", None, "R", "VAGUS", {"step": "V2", "amplitude_uV": 27.0, "latency_ms": None}),
        ("procedure", "tube_check", "low", None, None, {}),
        ("operator", "stim.set", None, None, None, {"client": "ui#3", "output": "probe", "current_mA": 2.5}),
        ("operator", "settings.set", None, None, None, {"client": "ui#3",
                                                        "changes": {"analysis.event_threshold_uV": 150.0}}),
        ("technical", "link_lost", "high", None, None, {}),
        ("emg", "irritation", None, "R", None, {}),
    ]
    messages = {"tube_check": "Tube check FAILED: lead off: L_POS; impedance above 5 kOhm: R_POS",
                "link_lost": "board link lost: no frame for 0.6 s (USB cable?)",
                "irritation": "spontaneous EMG right: train of 12 potentials over 4.1 s, peak 312 uV"}
    for i in range(120):
        cat, kind, pr, side, site, det = kinds[i % len(kinds)]
        evs.append({"type": "event", "seq": i + 1, "t_s": 60.0 + i * 40.0, "category": cat, "kind": kind,
                    "priority": pr, "side": side, "site": site, "detail": dict(det),
                    "message": messages.get(kind, f"{kind.replace('_', ' ')}: {det.get('alarm') or ''}")})
    return evs


def busy_document() -> dict[str, Any]:
    """A report document with everything filled in."""
    return {"case": {"case_id": "20261121-103000-" + LONG_PATIENT, "patient_id": LONG_PATIENT, "date": "2026-11-21",
                     "procedure": LONG_PROCEDURE, "planned_sides": ["L", "R"], "surgeon": None, "duration_s": 5432.0,
                     "close_reason": "End of the operation, both nerves inspected and documented",
                     "board": {"simulated": True}},
            "generated": {"pseudonymised": True},
            "sides": {"L": {"steps": busy_state()["steps"]["L"], "v2_of_v1_pct": 2.2, "r2_reduction_pct": None},
                      "R": {"steps": busy_state()["steps"]["R"], "v2_of_v1_pct": 2.7, "r2_reduction_pct": 3.3}},
            "tube_check": [{"passed": False, "message": "lead off: L_POS", "override": "surgeon accepts",
                            "breathing_variation": busy_state()["tube"]["breathing_variation"]}],
            "adverse_events": [{"t_s": 4990.0, "priority": "high", "title": "Loss of signal", "kind": "loss_of_signal",
                                "site": "VAGUS", "side": "L", "los_type": {"type": 1},
                                "troubleshooting": [{"check": "leads_ok", "answer": "yes"}]}],
            "staging": [{"recommendation": "postpone the second side", "decision": "postpone_second_side",
                         "reason": "risk of bilateral palsy"}],
            "notes": [{"t_s": 100.0 * i, "text": f"note {i}: " + "words " * 20} for i in range(5)],
            "journal": {"entries": 42210, "verified": True}}


class FakeLink:
    """``EngineLink``'s interface with the busy moment above (see the module docstring)."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self._health = Health("connected", "test feed", self.t0)
        self.history: list = []
        self.hello = {"simulated": True}
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.state = busy_state()
        self.alarms = busy_alarms()
        self.events = busy_events()
        self._next_state = 0.0
        self.pending: list[dict[str, Any]] = [{"type": "connection", "connected": True, "hello": self.hello},
                                              self.alarms]
        self.pending += [dict(e) for e in self.events[-30:]]

    def start(self) -> None:
        """Nothing to start."""

    def stop(self) -> None:
        """Nothing to stop."""

    def health(self) -> Health:
        return self._health

    def waiting(self) -> int:
        return 0

    def send(self, cmd: str, on_done: Any = None, /, **args: Any) -> None:
        self.sent.append((cmd, args))
        result: dict[str, Any] = {}
        if cmd == "settings.get":
            result = {"values": settings_mod.load().as_dict(), "profile": "standard", "schema": [
                {"key": s.key, "unit": s.unit, "default": s.default, "minimum": s.minimum, "maximum": s.maximum,
                 "kind": s.kind.__name__, "choices": list(s.choices) if s.choices else None, "doc": s.doc,
                 "range": s.describe_range(), "live": s.live} for s in settings_mod.SCHEMA.values()]}
        elif cmd == "events.list":
            result = {"events": self.events, "last_seq": len(self.events)}
        elif cmd == "trend.get":
            n = 2000
            ts = [i * 2.7 for i in range(n)]
            amp = [100 - 96 * max(0.0, min(1.0, (x - 4500) / 500)) + 3 * math.sin(i) for i, x in enumerate(ts)]
            lat = [100 + 15 * max(0.0, min(1.0, (x - 4500) / 500)) for x in ts]
            result = {"series": [{"side": "L", "site": "VAGUS", "source": "APS", "t_s": ts, "amplitude_pct": amp,
                                  "latency_pct": lat, "amplitude_uV": [a * 6.5 for a in amp],
                                  "latency_ms": [x * 0.079 for x in lat]}]}
        elif cmd == "cases.list":
            result = {"cases": [{"case_id": f"2026112{i % 10}-1{i % 6}3000-P-{4000 + i:04d}-{LONG_PATIENT[:16]}",
                                 "patient_id": f"P-{4000 + i:04d}-{LONG_PATIENT[:16]}",
                                 "opened_at": f"2026-11-2{i % 10}T1{i % 6}:30:00Z",
                                 "closed_at": None if i == 0 else f"2026-11-2{i % 10}T1{i % 6 + 1}:45:00Z",
                                 "open": i == 0} for i in range(30)]}
        elif cmd == "report.get":
            result = {"case_id": "20261121-103000-" + LONG_PATIENT, "document": busy_document(), "pdf_path": ""}
        elif cmd == "selftest.run":
            result = {"ok": False, "items": [
                {"item": "board", "ok": True, "message": "virtual board SIM-1, firmware sim-1.0, all outputs answer"},
                {"item": "audio", "ok": False, "message": "The loudspeaker did not play the test tone: the sound "
                                                          "device 'default' is busy or missing (check the cable)."},
                {"item": "leds", "ok": True, "message": "red, yellow and green alarm lights lit in turn"},
                {"item": "buzzer", "ok": True, "message": "the backup buzzer sounded"},
                {"item": "storage", "ok": True, "message": "case storage writable, 12.3 GB free"}]}
        if on_done is not None:
            on_done(Reply(cmd, True, result=result))

    def pump(self, max_messages: int = 2000, on_error: Any = None) -> list[dict[str, Any]]:
        now = time.monotonic()
        out, self.pending = self.pending, []
        if now >= self._next_state:
            self._next_state = now + 0.2
            out.append(dict(self.state))
        return out
