"""Protected limits: the event threshold and the alarm limits, relaxed only with a confirmation.

Owns: ``PROTECTED`` (every setting whose change in one direction makes alarms rarer, later,
shorter or quieter: the direction, the alarms it concerns, its words), ``relaxed`` (is a
value on the relaxing side of its default), ``needs_confirmation`` (the changes of a
``settings.set`` that need ``confirm``, and why), ``Relaxations`` (since when each
protected setting in force has been relaxed: the monitor shows it until it is restored)
and ``below_default_threshold`` (a response that only the lowered threshold makes one).
May import: ``app.settings``, ``app.format``. Pure: no clock of its own (times are given).

clinical-rules.md: the event threshold and the alarm limits may be lowered below their
defaults only with an explicit confirmation, journaled, and shown on the monitor for as
long as they stay lowered; under an active loss of signal a waveform below the default
threshold is never labelled a response without the word "lowered". The decisions where
the rule is silent (which settings are alarm limits, what "changing while a related alarm
is active" covers) are in ``app/rules/RULES.md``, "Protected limits".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from app import format as F
from app.settings import SCHEMA

LOWER = "lower"  # a lower value makes alarms rarer
HIGHER = "higher"  # a higher value makes alarms rarer

LOS = "loss_of_signal"
COMBINED = "combined_event"
DECREASE = "amplitude_decrease"
NMB = "neuromuscular_blockade_suspected"
ANY = "*"  # every alarm (the alarm signals themselves)


@dataclass(frozen=True)
class Protected:
    """One protected setting: which way relaxes it, the alarms it concerns, its words."""

    key: str
    relaxes: str  # LOWER or HIGHER
    alarms: tuple[str, ...]
    short: str  # for the monitor: "threshold", "LOS stimuli", ...

    @property
    def default(self) -> Any:
        return SCHEMA[self.key].default

    @property
    def unit(self) -> str:
        return SCHEMA[self.key].unit

    def relaxed(self, value: Any) -> bool:
        """``value`` lies on the relaxing side of the default."""
        return bool(value < self.default) if self.relaxes == LOWER else bool(value > self.default)

    def more_relaxed(self, new: Any, old: Any) -> bool:
        """``new`` relaxes further than ``old`` (and beyond the default)."""
        if not self.relaxed(new):
            return False
        return bool(new < old) if self.relaxes == LOWER else bool(new > old)

    @property
    def word(self) -> str:
        return "lowered" if self.relaxes == LOWER else "raised"


def _p(key: str, relaxes: str, alarms: tuple[str, ...], short: str) -> Protected:
    if key not in SCHEMA:
        raise ValueError(f"protected limit {key!r}: not a setting of app.settings")
    return Protected(key, relaxes, alarms, short)


# The event threshold and every alarm limit (the rule thresholds), then the alarm signals.
PROTECTED: dict[str, Protected] = {p.key: p for p in (
    _p("analysis.event_threshold_uV", LOWER, (LOS,), "threshold"),
    _p("rules.los_min_current_mA", HIGHER, (LOS,), "LOS minimum current"),
    _p("rules.los_consecutive", HIGHER, (LOS,), "LOS stimuli"),
    _p("rules.los_end_consecutive", LOWER, (LOS,), "LOS end stimuli"),
    _p("rules.combined_amplitude_pct", LOWER, (COMBINED,), "combined amplitude limit"),
    _p("rules.combined_latency_pct", HIGHER, (COMBINED,), "combined latency limit"),
    _p("rules.combined_consecutive", HIGHER, (COMBINED,), "combined stimuli"),
    _p("rules.amplitude_decrease_pct", LOWER, (DECREASE, NMB), "amplitude decrease limit"),
    _p("rules.amplitude_decrease_consecutive", HIGHER, (DECREASE, NMB), "amplitude decrease stimuli"),
    _p("rules.recovery_pct", LOWER, (LOS, COMBINED, DECREASE, NMB), "recovery limit"),
    _p("rules.recovery_consecutive", LOWER, (LOS, COMBINED, DECREASE, NMB), "recovery stimuli"),
    _p("rules.poor_baseline_uV", LOWER, ("poor_baseline",), "poor baseline limit"),
    _p("stim.delivered_tolerance_pct", HIGHER, ("no_current", LOS), "current tolerance"),
    _p("alarms.escalation_s", HIGHER, (ANY,), "alarm escalation"),
    _p("alarms.audio_pause_s", HIGHER, (ANY,), "alarm audio pause"),
    _p("alarms.high_repeat_s", HIGHER, (ANY,), "high alarm repeat"),
    _p("alarms.medium_repeat_s", HIGHER, (ANY,), "medium alarm repeat"),
    _p("alarms.low_repeat_s", HIGHER, (ANY,), "low alarm repeat"),
    _p("alarms.audio_off_reminder_s", HIGHER, (ANY,), "audio-off reminder"),
    _p("audio.alarm_volume_floor_pct", LOWER, (ANY,), "alarm volume floor"),
)}


def relaxed(key: str, value: Any) -> bool:
    """Whether ``value`` of setting ``key`` is a protected limit relaxed beyond its default."""
    p = PROTECTED.get(key)
    return p is not None and p.relaxed(value)


def _related(p: Protected, active_kinds: Iterable[str]) -> list[str]:
    kinds = sorted(set(active_kinds))
    return kinds if ANY in p.alarms else [k for k in kinds if k in p.alarms]


def needs_confirmation(changes: Mapping[str, Any], current: Mapping[str, Any],
                       active_kinds: Iterable[str]) -> list[dict[str, Any]]:
    """The changes (``{key: new}``, validated) that need ``confirm``, each with why:

    - ``relaxes``: the new value relaxes the limit beyond its default, further than the
      value in force (going back towards the default never needs one);
    - ``alarm_active``: a related alarm is active (its condition or its latch), and the
      change is not the way back to the default.

    ``active_kinds``: the kinds of the active alarms. Returns ``[]`` when nothing needs one."""
    kinds = list(active_kinds)
    out = []
    for key, new in changes.items():
        p = PROTECTED.get(key)
        old = current[key]
        if p is None or new == old:
            continue
        why = []
        if p.more_relaxed(new, old):
            why.append("relaxes")
        related = _related(p, kinds)
        if related and new != p.default:
            why.append("alarm_active")
        if why:
            out.append({"setting": key, "old": old, "new": new, "default": p.default, "unit": p.unit,
                        "why": why, "alarms": related, "text": _why_text(p, old, new, why, related)})
    return out


def _why_text(p: Protected, old: Any, new: Any, why: list[str], related: list[str]) -> str:
    name = F.setting_name(p.key)
    unit = p.unit
    text = f"{name} from {F.setting_value(old, unit)} to {F.setting_value(new, unit)}"
    parts = []
    if "relaxes" in why:
        rarer = "makes alarms rarer" if p.key != "analysis.event_threshold_uV" else \
            "calls smaller waveforms responses (a loss of signal is recognised later)"
        parts.append(f"{p.word} beyond its default {F.setting_value(p.default, unit)}: it {rarer}")
    if "alarm_active" in why:
        parts.append("while " + ", ".join(F.event_title(k).split(" (")[0].lower() for k in related)
                     + " is active")
    return f"{text}: " + "; ".join(parts)


class Relaxations:
    """Since when (engine clock) each protected setting in force has been relaxed beyond its
    default; ``update`` after every change of the settings in force (any path: the
    settings command, a surgeon profile, the end of a case restoring the settings)."""

    def __init__(self) -> None:
        self.since: dict[str, float] = {}

    def update(self, settings: Mapping[str, Any], now: float) -> None:
        """Start the clock of a setting that became relaxed; forget one that was restored."""
        for key, p in PROTECTED.items():
            if p.relaxed(settings[key]):
                self.since.setdefault(key, now)
            else:
                self.since.pop(key, None)

    def view(self, settings: Mapping[str, Any], case_t: Any) -> list[dict[str, Any]]:
        """The state's ``limits``: every relaxed protected setting, for the monitor to show
        until it is restored (``case_t``: engine clock -> case time)."""
        out = []
        for key in PROTECTED:
            if key not in self.since:
                continue
            p = PROTECTED[key]
            value = settings[key]
            out.append({"setting": key, "name": F.setting_name(key), "value": value, "default": p.default,
                        "unit": p.unit, p.word: True, "relaxed": p.word, "since_s": round(case_t(self.since[key]), 3),
                        "text": f"{p.short} {F.setting_value(value, p.unit)}, {p.word}"})
        return out


def below_default_threshold(response: bool, amplitude_uV: Any, settings: Mapping[str, Any]) -> bool:
    """A response that only a lowered event threshold makes one (its amplitude is below the
    default threshold): it is never shown as a plain "response"."""
    if not response or amplitude_uV is None:
        return False
    default = SCHEMA["analysis.event_threshold_uV"].default
    return float(settings["analysis.event_threshold_uV"]) < default and float(amplitude_uV) < default
