"""From the rules' events to alarm conditions.

Owns: ``RULE_EVENT_TABLE`` (what each ``app.model.EventKind`` does to the alarm system),
``event_key`` and ``apply_rule_event``.
May import: the standard library, ``app.model`` and ``app.alarms``.

| rule event                       | alarm action                                          |
|----------------------------------|-------------------------------------------------------|
| loss_of_signal                   | raise ``loss_of_signal`` (high, latched until reset)  |
| loss_of_signal_continued         | raise ``loss_of_signal`` again: the same alarm (no new |
|                                  | onset; present already, nothing changes; ended by a   |
|                                  | recovery, it is active again)                         |
| combined_event                   | raise ``combined_event`` (high, latched until reset)  |
| amplitude_decrease               | raise ``amplitude_decrease`` (medium, "check tube     |
|                                  | position")                                            |
| neuromuscular_blockade_suspected | end ``amplitude_decrease`` on both vagi, raise         |
|                                  | ``neuromuscular_blockade_suspected`` (medium) at      |
|                                  | ``BOTH``                                              |
| no_current                       | raise ``no_current`` (medium, technical, momentary)   |
| poor_baseline                    | raise ``poor_baseline`` (low, "check tube", momentary)|
| signal_recovered                 | end ``loss_of_signal``, ``combined_event`` and        |
|                                  | ``amplitude_decrease`` at that site and side (a       |
|                                  | latched alarm stays until acknowledged/reset), and    |
|                                  | the blockade at ``BOTH`` when the event's             |
|                                  | ``recovered`` names it; an info notice                |
| nonrecurrent_nerve_suspected     | info notice                                           |
| baseline_set                     | info notice                                           |

The alarm key is ``SITE-SIDE`` (``VAGUS-L``, ``RLN-R``): a loss of signal on the left
vagus and one on the right RLN are two alarms, acknowledged and reset separately. A
systemic condition (the blockade) has the one key ``BOTH``. The priority carried by the
``RuleEvent`` is informative only: the catalogue decides.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from collections.abc import Mapping
from typing import Any

from app.alarms.catalog import AlarmKind, definition
from app.alarms.manager import AlarmManager, alarm_id
from app.model import EventKind, RuleEvent, Side, Site


SYSTEMIC_KEY = "BOTH"  # the key of a condition of both sides at once


@dataclass(frozen=True)
class RuleAction:
    """What one rule event kind does to the alarm system."""

    raise_kind: AlarmKind | None = None  # condition raised
    clear_kinds: tuple[AlarmKind, ...] = ()  # conditions ended at the same key ...
    clear_keys: tuple[str, ...] = ()  # ... or at these keys
    notice: AlarmKind | None = None  # info notice recorded
    systemic: bool = False  # raised under SYSTEMIC_KEY, not the event's site and side
    # systemic conditions ended at SYSTEMIC_KEY when the event's ``recovered`` names them
    clear_recovered: tuple[AlarmKind, ...] = ()


RULE_EVENT_TABLE: Mapping[EventKind, RuleAction] = MappingProxyType(
    {
        EventKind.LOSS_OF_SIGNAL: RuleAction(raise_kind=AlarmKind.LOSS_OF_SIGNAL),
        EventKind.LOSS_OF_SIGNAL_CONTINUED: RuleAction(raise_kind=AlarmKind.LOSS_OF_SIGNAL),
        EventKind.COMBINED_EVENT: RuleAction(raise_kind=AlarmKind.COMBINED_EVENT),
        EventKind.AMPLITUDE_DECREASE: RuleAction(raise_kind=AlarmKind.AMPLITUDE_DECREASE),
        EventKind.NEUROMUSCULAR_BLOCKADE_SUSPECTED: RuleAction(
            raise_kind=AlarmKind.NEUROMUSCULAR_BLOCKADE_SUSPECTED,
            clear_kinds=(AlarmKind.AMPLITUDE_DECREASE,),
            clear_keys=(f"{Site.VAGUS.value}-{Side.L.value}", f"{Site.VAGUS.value}-{Side.R.value}"),
            systemic=True,
        ),
        EventKind.NO_CURRENT: RuleAction(raise_kind=AlarmKind.NO_CURRENT),
        EventKind.POOR_BASELINE: RuleAction(raise_kind=AlarmKind.POOR_BASELINE),
        EventKind.SIGNAL_RECOVERED: RuleAction(
            clear_kinds=(
                AlarmKind.LOSS_OF_SIGNAL,
                AlarmKind.COMBINED_EVENT,
                AlarmKind.AMPLITUDE_DECREASE,
            ),
            notice=AlarmKind.SIGNAL_RECOVERED,
            clear_recovered=(AlarmKind.NEUROMUSCULAR_BLOCKADE_SUSPECTED,),
        ),
        EventKind.NONRECURRENT_NERVE_SUSPECTED: RuleAction(
            notice=AlarmKind.NONRECURRENT_NERVE_SUSPECTED
        ),
        EventKind.BASELINE_SET: RuleAction(notice=AlarmKind.BASELINE_SET),
    }
)

_SIDE_WORD = {Side.L: "left", Side.R: "right"}
_SITE_WORD = {
    Site.VAGUS: "vagus",
    Site.RLN: "recurrent laryngeal nerve",
    Site.EBSLN: "external branch of the superior laryngeal nerve",
    Site.UNTAGGED: "untagged probe site",
}
# Detail values worth reading in the banner, in this order, with their wording.
_DETAIL_WORDS = (
    ("amplitude_uV", "amplitude {:.0f} µV"),
    ("baseline_amplitude_uV", "baseline {:.0f} µV"),
    ("baseline_uV", "baseline {:.0f} µV"),
    ("latency_ms", "latency {:.2f} ms"),
    ("baseline_latency_ms", "baseline latency {:.2f} ms"),
    ("set_mA", "set {:.2f} mA"),
    ("delivered_mA", "delivered {:.2f} mA"),
)


def _systemic(event: RuleEvent) -> bool:
    action = RULE_EVENT_TABLE.get(EventKind(event.kind))
    return bool(action and action.systemic)


def event_key(event: RuleEvent) -> str:
    """``VAGUS-L`` style key of the site and side the event is about (``BOTH`` for a
    condition of both sides)."""
    if _systemic(event):
        return SYSTEMIC_KEY
    return f"{Site(event.site).value}-{Side(event.side).value}"


def where(event: RuleEvent) -> str:
    """``left vagus`` style wording of the event's site and side."""
    if _systemic(event):
        return "both sides"
    return f"{_SIDE_WORD[Side(event.side)]} {_SITE_WORD[Site(event.site)]}"


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _numbers(detail: Mapping[str, Any]) -> str:
    parts = []
    for name, fmt in _DETAIL_WORDS:
        value = detail.get(name)
        if _number(value):
            parts.append(fmt.format(value))
    sides = detail.get("sides")
    if isinstance(sides, Mapping):  # a condition of both sides: each side's fall
        for side in Side:
            d = sides.get(side.value)
            if isinstance(d, Mapping) and _number(d.get("amplitude_pct")):
                ref = str(d.get("reference") or "baseline").replace("aps_baseline", "APS baseline")
                parts.append(f"{_SIDE_WORD[side]} {d['amplitude_pct']:.0f} % of {ref}")
    return ", ".join(parts)


def describe(event: RuleEvent, base_message: str) -> str:
    """The instance message: where, the catalogue text, and the numbers if known."""
    text = f"{where(event).capitalize()} ({event_key(event)}): {base_message}"
    nums = _numbers(event.detail)
    return f"{text} [{nums}]" if nums else text


def apply_rule_event(manager: AlarmManager, event: RuleEvent, who: str = "rules") -> list[str]:
    """Apply one rule event to the manager; returns the alarm ids it touched."""
    action = RULE_EVENT_TABLE.get(EventKind(event.kind))
    if action is None:  # a kind added to the model but not yet mapped: say so loudly
        raise ValueError(f"rule event {event.kind!r} has no alarm mapping")
    key = event_key(event)
    detail = {**event.detail, "rule_t_s": event.t_s, "stimulus_index": event.stimulus_index,
              "rule_priority": _priority_value(event)}
    touched: list[str] = []
    for at in action.clear_keys or (key,):
        for kind in action.clear_kinds:
            if manager.clear_condition(kind, at, who=who, detail={"by_event": event.kind.value}):
                touched.append(alarm_id(kind, at))
    recovered = event.detail.get("recovered") or ()
    for kind in action.clear_recovered:
        if kind.value in recovered and manager.clear_condition(kind, SYSTEMIC_KEY, who=who,
                                                               detail={"by_event": event.kind.value}):
            touched.append(alarm_id(kind, SYSTEMIC_KEY))
    if action.raise_kind is not None:
        d = definition(action.raise_kind)
        touched.append(
            manager.raise_condition(action.raise_kind, key, message=describe(event, d.message),
                                    detail=detail, who=who)
        )
    if action.notice is not None:
        d = definition(action.notice)
        manager.notify(action.notice, key, message=describe(event, d.message), detail=detail, who=who)
        touched.append(alarm_id(action.notice, key))
    return touched


def _priority_value(event: RuleEvent) -> str:
    p = event.priority
    return getattr(p, "value", str(p))
