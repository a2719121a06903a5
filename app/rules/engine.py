"""The rule engine: runs every INMSG condition over a stream of measurements.

Owns: ``RuleEngine`` (per-site/side state of every condition of ``conditions.py``, the
baselines, the open loss episodes, EBSLN tracking, the procedure model), its operator
inputs, and its JSON snapshot for resuming a case.
May import: the standard library, ``app.model``, ``app.settings``, ``app.format`` (the one way to
write a duration in a message) and ``app.rules.*``.

Order of evaluation for one measurement (so that events of one stimulus come out in a
fixed order): events a step recorded afterwards left waiting (``tag_step``); no current;
baselines (APS, probe) and poor baseline; non-recurrent nerve; recovery; loss of signal
(new, or continued within ``rules.los_reentry_s``); neuromuscular blockade; combined
event / amplitude decrease; then the losses just raised open (or extend) the site's loss
record, which recovery watches; last what the procedure learns (tagged steps, R2 / V2
after a loss, the RLN stimulus for the next mapping point). The stimulus that completes a
baseline is not itself compared with it. Every event is stamped with the end
of the analysis window of the stimulus that completed it (``Measurement.t_end_s``) and
that stimulus's index.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from app.format import duration as duration_text
from app.model import (
    EventKind,
    InvalidReason,
    Measurement,
    Priority,
    RuleEvent,
    Side,
    Site,
    Source,
    Step,
    Stimulus,
)
from app.rules.conditions import (
    WATCHED_SITES,
    ApsAmplitude,
    ApsBaseline,
    Blockade,
    Facts,
    LossOfSignal,
    NmbSide,
    NoCurrent,
    NonRecurrent,
    PoorBaseline,
    ProbeBaseline,
    Recovery,
    facts,
)
from app.rules.machine import Machine
from app.rules.procedure import Procedure, ProcedureError
from app.settings import Settings

SNAPSHOT_FORMAT = "lnm-rules/1"

PRIORITY: dict[EventKind, Priority] = {
    EventKind.LOSS_OF_SIGNAL: Priority.HIGH,
    EventKind.COMBINED_EVENT: Priority.HIGH,
    EventKind.AMPLITUDE_DECREASE: Priority.MEDIUM,
    EventKind.NO_CURRENT: Priority.MEDIUM,
    EventKind.SIGNAL_RECOVERED: Priority.INFO,
    EventKind.NONRECURRENT_NERVE_SUSPECTED: Priority.INFO,
    EventKind.POOR_BASELINE: Priority.LOW,
    EventKind.BASELINE_SET: Priority.INFO,
    # continues a high-priority condition (the alarm manager keeps the same alarm)
    EventKind.LOSS_OF_SIGNAL_CONTINUED: Priority.HIGH,
    EventKind.NEUROMUSCULAR_BLOCKADE_SUSPECTED: Priority.MEDIUM,
}

AMPLITUDE_DECREASE_ADVICE = "check tube position, secretions and relaxant"
AMPLITUDE_DECREASE_MESSAGE = ("Amplitude decrease with stable latency: check tube position, secretions and "
                              "relaxant (typical of tube displacement, not of nerve injury).")
NMB_ADVICE = "check train-of-four and relaxant with the anaesthetist"
NMB_MESSAGE = ("Neuromuscular blockade suspected: responses on both sides fell with stable latency. "
               "Systemic cause: check train-of-four and relaxant with the anaesthetist.")

# Every setting the rules read (``lnm analyze`` writes them into its result).
SETTINGS_USED: tuple[str, ...] = (
    "analysis.event_threshold_uV",
    "stim.delivered_tolerance_pct",
    "rules.los_min_current_mA",
    "rules.los_consecutive",
    "rules.aps_baseline_count",
    "rules.combined_amplitude_pct",
    "rules.combined_latency_pct",
    "rules.combined_consecutive",
    "rules.amplitude_decrease_pct",
    "rules.amplitude_decrease_consecutive",
    "rules.recovery_pct",
    "rules.recovery_consecutive",
    "rules.poor_baseline_uV",
    "rules.nonrecurrent_latency_ms",
    "rules.r2_reduction_map_pct",
    "rules.r2_reduction_palsy_pct",
    "rules.los_end_consecutive",
    "rules.los_reentry_s",
    "rules.nmb_window_s",
)

_MACHINES: tuple[Machine, ...] = (
    LossOfSignal.MACHINE, ApsBaseline.MACHINE, ProbeBaseline.MACHINE, ApsAmplitude.MACHINE,
    Recovery.MACHINE, NoCurrent.MACHINE, PoorBaseline.MACHINE, NonRecurrent.MACHINE,
    NmbSide.MACHINE, Blockade.MACHINE,
)


_THROUGH_VAGUS = "VAGUS"  # the RLN recovery watcher fed by the side's vagus while it is mapped
_BOTH = "BOTH"  # the key of the blockade machine: one for both sides
_NMB = EventKind.NEUROMUSCULAR_BLOCKADE_SUSPECTED.value
# Times of the case are sums of floats: a limit in seconds allows a microsecond.
_TIME_EPS = 1e-6


class SnapshotError(ValueError):
    """A snapshot cannot be restored; the message says why."""


@dataclass(frozen=True)
class StepRecord:
    """A step recorded by the operator (``RuleEngine.record_step``): the step's value,
    the events its rules raised (poor V1), and what it now shows (``v2_of_v1_pct``,
    ``r2_reduction``)."""

    value: dict[str, Any]
    events: list[RuleEvent] = field(default_factory=list)
    findings: dict[str, Any] = field(default_factory=dict)


def _r(x: float | None, nd: int) -> float | None:
    if x is None or not math.isfinite(float(x)):
        return None
    return round(float(x), nd)


def site_key(site: Site, side: Side) -> str:
    """``VAGUS-L`` style key of a site and side."""
    return f"{site.value}-{side.value}"


def _m_to_dict(m: Measurement) -> dict[str, Any]:
    s = m.stimulus
    return {
        "index": s.index, "t_s": s.t_s, "site": s.site.value, "side": s.side.value,
        "source": s.source.value, "set_mA": s.set_mA, "delivered_mA": _finite(s.delivered_mA),
        "pw_us": s.pw_us, "step": s.step.value if s.step else None,
        "channel": m.channel, "valid": m.valid,
        "invalid_reason": m.invalid_reason.value if m.invalid_reason else None,
        "response": m.response, "amplitude_uV": _finite(m.amplitude_uV), "latency_ms": _finite(m.latency_ms),
        "onset_latency_ms": _finite(m.onset_latency_ms),
    }


def _finite(x: float | None) -> float | None:
    return x if x is None or math.isfinite(x) else None


def _m_from_dict(d: Mapping[str, Any]) -> Measurement:
    stim = Stimulus(
        index=int(d["index"]), t_s=float(d["t_s"]), site=Site(d["site"]), side=Side(d["side"]),
        source=Source(d["source"]), set_mA=float(d["set_mA"]),
        delivered_mA=None if d["delivered_mA"] is None else float(d["delivered_mA"]),
        pw_us=int(d["pw_us"]), step=Step(d["step"]) if d["step"] else None,
    )
    return Measurement(
        stimulus=stim, channel=d["channel"], valid=bool(d["valid"]),
        invalid_reason=InvalidReason(d["invalid_reason"]) if d["invalid_reason"] else None,
        response=bool(d["response"]), amplitude_uV=d["amplitude_uV"], latency_ms=d["latency_ms"],
        onset_latency_ms=d["onset_latency_ms"],
    )


class RuleEngine:
    """The INMSG rules over one case. Pure: call ``process`` once per measurement, in
    time order; operator actions are methods; ``snapshot``/``restore`` resume a case.

    Semantics of every condition: ``app.rules.conditions`` (one table each) and the
    package docstring of ``app.rules``.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.procedure = Procedure()
        self._machines: dict[str, dict[str, list[Any]]] = {mc.name: {} for mc in _MACHINES}
        # per watched site and side: first/last responses (the "initially good signal")
        self._sites: dict[str, dict[str, Any]] = {}
        # per side: APS baseline accumulation and the current baseline
        self._aps: dict[str, dict[str, Any]] = {}
        # per watched site and side: probe baseline
        self._probe: dict[str, dict[str, Any]] = {}
        # per watched site and side: open loss (first event time, conditions)
        self._losses: dict[str, dict[str, Any]] = {}
        # per source: the current no-current episode
        self._no_current: dict[str, dict[str, Any]] = {}
        # per side: EBSLN responses
        self._ebsln: dict[str, dict[str, Any]] = {}
        # per side: the last valid measurement with a response (for "tag as step")
        self._last_response: dict[str, dict[str, Any]] = {}
        # per watched site and side: the latest loss-of-signal episode (onset, end,
        # interruptions), for the hysteresis and re-entry
        self._episodes: dict[str, dict[str, Any]] = {}
        # neuromuscular blockade: per side, when it went down (None: not down); the episode
        self._nmb: dict[str, Any] = _new_nmb()
        # events of a step recorded afterwards (``tag_step``), handed out by the next ``process``
        self._pending: list[RuleEvent] = []
        # steps documented after a loss of signal, for ``take_documented_steps``
        self._documented: list[dict[str, Any]] = []
        self._count = 0

    # -- settings ---------------------------------------------------------------------
    def set_settings(self, settings: Settings) -> None:
        """New settings take effect from the next measurement; state is kept."""
        self.settings = settings

    def settings_used(self) -> dict[str, Any]:
        return {k: self.settings[k] for k in SETTINGS_USED}

    # -- machine state ----------------------------------------------------------------
    def _state(self, machine: Machine, key: str) -> str:
        state: str = self._machines[machine.name].get(key, [machine.initial, 0])[0]
        return state

    def _run(self, machine: Machine, key: str) -> int:
        """The run of a machine just stepped (``_step``) for ``key``."""
        return int(self._machines[machine.name][key][1])

    def _step(self, machine: Machine, key: str, symbol: str) -> str:
        state, run = self._machines[machine.name].get(key, [machine.initial, 0])
        out = machine.step(state, int(run), symbol, self.settings)
        self._machines[machine.name][key] = [out.state, out.run]
        return out.emit

    def _event(self, kind: EventKind, m: Measurement, site: Site, side: Side,
               detail: dict[str, Any], t_s: float | None = None) -> RuleEvent:
        """An event of the stimulus ``m``, stamped with the end of its analysis window
        unless ``t_s`` (when it was recognised) is given."""
        return RuleEvent(
            t_s=m.t_end_s if t_s is None else float(t_s),
            kind=kind, side=side, site=site, priority=PRIORITY[kind],
            stimulus_index=m.stimulus.index, detail=detail,
        )

    # -- references -------------------------------------------------------------------
    def aps_baseline(self, side: Side) -> dict[str, Any] | None:
        """The side's latest APS baseline (None before the first one). During an
        operator's re-baseline it is still returned (recovery compares with it) with
        ``collecting`` true and ``collected`` the stimuli gathered for the new one;
        combined event and amplitude decrease are not evaluated meanwhile."""
        side = Side(side)
        aps = self._aps.get(side.value)
        if not aps or not aps.get("baseline"):
            return None
        b: dict[str, Any] = copy.deepcopy(aps["baseline"])
        b["collecting"] = self._state(ApsBaseline.MACHINE, side.value) != "SET"
        b["collected"] = aps["acc"]["n"]
        return b

    def probe_baseline(self, site: Site, side: Side) -> dict[str, Any] | None:
        b = self._probe.get(site_key(site, side))
        return copy.deepcopy(b) if b else None

    def _reference(self, site: Site, side: Side, source: Source) -> tuple[float | None, str]:
        """Amplitude a source's stimuli at a site are compared with for recovery."""
        key = site_key(site, side)
        if source is Source.APS:
            b = self._aps[side.value]["baseline"]  # ``process`` made the side's record
            if b:
                return b["amplitude_uV"], "aps_baseline"
        else:
            b = self._probe.get(key)
            if b:
                return b["amplitude_uV"], f"probe_baseline_{b['how']}"
        info = self._sites.get(key, {})
        first_src = info.get("first_by_source", {}).get(source.value)
        if first_src:
            return first_src["amplitude_uV"], "first_response_of_source"
        first = info.get("first_response")
        if first:
            return first["amplitude_uV"], "first_response_of_site"
        return None, "none"

    # -- the stream -------------------------------------------------------------------
    def process(self, m: Measurement) -> list[RuleEvent]:
        """Apply every rule to one measurement; returns the events it completed (after
        any that a step recorded afterwards left waiting, see ``tag_step``)."""
        st = self.settings
        f = facts(m, st)
        s = m.stimulus
        events: list[RuleEvent] = self._pending
        self._pending = []
        self._count += 1

        # 1. no current (per stimulator output)
        events.extend(self._no_current_rule(m, f))

        if f.valid and f.response:
            self._last_response[s.side.value] = _m_to_dict(m)
        if f.untagged:
            return events
        if s.site is Site.RLN and s.source is Source.PROBE and self.procedure.mapping_active(s.side):
            # mapping after a confirmed loss: a distal response is no recovery, a silent
            # point proximal to the injury no new loss (``Procedure.mapping_active``)
            self._procedure_inputs(m, f, mapping=True)
            return events

        key = site_key(s.site, s.side)
        # The amplitude rule compares with the baseline as it stood before this stimulus.
        aps = self._aps.setdefault(s.side.value, _new_aps())
        have_baseline = self._state(ApsBaseline.MACHINE, s.side.value) == "SET"
        b = aps["baseline"] if have_baseline else None
        amp_symbol = ApsAmplitude.classify(m, f, b["amplitude_uV"] if b else None,
                                           b["latency_ms"] if b else None, st)
        nmb_symbol = NmbSide.classify(m, f, self.nmb_reference(s.side), st)

        # 2. baselines and poor baseline
        events.extend(self._aps_baseline(m, f, aps))
        events.extend(self._probe_baseline(m, f))
        events.extend(self._poor_v1(m, f, m.t_end_s))

        # 3. non-recurrent nerve
        if self._step(NonRecurrent.MACHINE, s.side.value, NonRecurrent.classify(m, f, st)):
            events.append(self._event(EventKind.NONRECURRENT_NERVE_SUSPECTED, m, s.site, s.side, {
                "source": s.source.value, "latency_ms": _r(f.latency_ms, 3),
                "limit_ms": st["rules.nonrecurrent_latency_ms"], "amplitude_uV": _r(f.amplitude_uV, 2),
                "message": "Short right vagal latency: a non-recurrent laryngeal nerve is suspected.",
            }))

        # site bookkeeping (the "initially good signal" and the recovery references)
        if s.site in WATCHED_SITES and f.response:
            info = self._sites.setdefault(key, {"first_response": None, "first_by_source": {},
                                                "last_response": None})
            brief = {"amplitude_uV": f.amplitude_uV, "latency_ms": f.latency_ms, "t_s": s.t_s,
                     "stimulus_index": s.index, "source": s.source.value}
            if info["first_response"] is None:
                info["first_response"] = brief
            info["first_by_source"].setdefault(s.source.value, brief)

        # 4. recovery (this source at this site)
        if s.site in WATCHED_SITES:
            events.extend(self._recovery(m, f, key))
        if s.site is Site.VAGUS:
            events.extend(self._rln_through_vagus(m, f))

        # 5. loss of signal (with the episode's hysteresis and re-entry)
        new_losses: list[RuleEvent] = []
        if s.site in WATCHED_SITES:
            new_losses.extend(self._loss_of_signal(m, f, key))

        # 6. neuromuscular blockade (both sides): before the amplitude decrease, which it
        # replaces (a stimulus that completes both raises the blockade only)
        new_losses.extend(self._blockade(m, f, nmb_symbol))

        # 7. combined event / amplitude decrease (APS, after the baseline)
        if s.source is Source.APS:
            new_losses.extend(self._aps_amplitude(m, f, amp_symbol, b))

        # 8. losses open (or extend) the site's loss record
        for ev in new_losses:
            self._open_loss(ev, m)
        events.extend(new_losses)

        # 9. EBSLN, contralateral vagus for troubleshooting, procedure steps
        if s.site is Site.EBSLN and f.valid:
            self._track_ebsln(m, f)
        if s.site is Site.VAGUS and f.response:
            self.procedure.note_contralateral_vagus(s.side.other, m.t_end_s, f.amplitude_uV)
        self._procedure_inputs(m, f)
        return events

    # -- pieces of process ------------------------------------------------------------
    def _no_current_rule(self, m: Measurement, f: Facts) -> list[RuleEvent]:
        s = m.stimulus
        if self._step(NoCurrent.MACHINE, s.source.value, NoCurrent.classify(m, f)) != "no_current":
            return []
        self._no_current[s.source.value] = {"t_s": s.t_s, "stimulus_index": s.index}
        delivered_pct = (s.delivered_mA / s.set_mA * 100.0) if s.delivered_mA is not None else None
        return [self._event(EventKind.NO_CURRENT, m, s.site, s.side, {
            "source": s.source.value, "set_mA": _r(s.set_mA, 3), "delivered_mA": _r(s.delivered_mA, 3),
            "delivered_pct": _r(delivered_pct, 1),
            "tolerance_pct": self.settings["stim.delivered_tolerance_pct"],
            "message": "Stimulus current not delivered as set: check probe, leads, contact and a dry field.",
        })]

    def _procedure_inputs(self, m: Measurement, f: Facts, mapping: bool = False) -> None:
        """What the procedure model learns from a valid stimulus: a tagged step's value;
        else, with a loss of signal open on the side, a vagal stimulus is its V2
        (``_document_after_loss``); an RLN probe stimulus is kept for the next mapping
        point."""
        s = m.stimulus
        if not f.valid:
            return
        if s.step is not None:
            self.procedure.offer_tagged(m, f.response)
        elif s.site is Site.VAGUS and f.qualifying and not mapping:
            self._document_after_loss(Step.V2, m, f)
        if s.site is Site.RLN and s.source is Source.PROBE:
            self.procedure.note_rln_stimulus(m, f.response)
    def _poor_v1(self, m: Measurement, f: Facts, t_s: float, afterwards: bool = False) -> list[RuleEvent]:
        """Poor baseline on the side's first valid, qualifying V1 (``PoorBaseline``)."""
        st = self.settings
        s = m.stimulus
        if self._step(PoorBaseline.MACHINE, s.side.value, PoorBaseline.classify(m, f, st)) != "poor_baseline":
            return []
        detail: dict[str, Any] = {
            "basis": "V1", "amplitude_uV": _r(f.amplitude_uV, 2), "limit_uV": st["rules.poor_baseline_uV"],
            "message": "Poor V1 baseline: check tube position and electrode contact.",
        }
        if afterwards:
            detail.update(recorded="step button", stimulus_t_s=round(m.t_end_s, 6))
        return [self._event(EventKind.POOR_BASELINE, m, s.site, s.side, detail, t_s=t_s)]

    def _loss_of_signal(self, m: Measurement, f: Facts, key: str) -> list[RuleEvent]:
        st = self.settings
        s = m.stimulus
        info = self._sites.setdefault(key, {"first_response": None, "first_by_source": {}, "last_response": None})
        los_symbol = LossOfSignal.classify(m, f)
        emit = self._step(LossOfSignal.MACHINE, key, los_symbol)
        if los_symbol == "MISS":
            info.setdefault("misses", []).append(
                {"stimulus_index": s.index, "delivered_measured": s.delivered_mA is not None})
            info["misses"] = info["misses"][-int(st["rules.los_consecutive"]):]
        elif los_symbol in ("RESPONSE", "WEAK"):
            info["misses"] = []
            info["last_response"] = {"amplitude_uV": f.amplitude_uV, "latency_ms": f.latency_ms,
                                     "t_s": s.t_s, "stimulus_index": s.index, "source": s.source.value}
        if emit == "episode_ended":
            self._episode_ended(key, m.t_end_s, s.index)
            return []
        if emit != "loss_of_signal":
            return []
        ref, basis = self._reference(s.site, s.side, s.source)
        last = info.get("last_response") or {}
        detail: dict[str, Any] = {
            "source": s.source.value,
            "consecutive": self._run(LossOfSignal.MACHINE, key),
            "stimulus_indices": [x["stimulus_index"] for x in info.get("misses", [])],
            "amplitude_uV": _r(f.amplitude_uV, 2),
            "set_mA": s.set_mA, "delivered_mA": s.delivered_mA,
            "threshold_uV": st["analysis.event_threshold_uV"],
            "last_response_amplitude_uV": _r(last.get("amplitude_uV"), 2),
            "last_response_t_s": last.get("t_s"),
            "baseline_uV": _r(ref, 2), "baseline_basis": basis,
            "pct_of_baseline": _r((f.amplitude_uV or 0.0) / ref * 100.0, 1) if ref else None,
        }
        episode = self._episodes.get(key)
        ended = episode.get("ended_t_s") if episode else None
        reentry = float(st["rules.los_reentry_s"])
        if episode is not None and ended is not None and m.t_end_s - ended <= reentry + _TIME_EPS:
            # the same episode goes on: no new onset
            episode["interruptions"].append({
                "ended_t_s": ended, "ended_stimulus_index": episode["ended_stimulus_index"],
                "resumed_t_s": m.t_end_s, "resumed_stimulus_index": s.index,
                "interruption_s": round(m.t_end_s - ended, 3)})
            episode["ended_t_s"] = episode["ended_stimulus_index"] = None
            detail.update({
                "episode_t_s": episode["t_s"], "episode_stimulus_index": episode["stimulus_index"],
                "interrupted_t_s": ended, "interruption_s": round(m.t_end_s - ended, 3),
                "interruptions": len(episode["interruptions"]),
                "reentry_s": st["rules.los_reentry_s"],
                "message": (f"Loss of signal again {duration_text(m.t_end_s - ended)} after the responses returned: "
                            "the same loss-of-signal episode continues."),
            })
            return [self._event(EventKind.LOSS_OF_SIGNAL_CONTINUED, m, s.site, s.side, detail)]
        self._episodes[key] = {"t_s": m.t_end_s, "stimulus_index": s.index, "ended_t_s": None,
                               "ended_stimulus_index": None, "interruptions": []}
        detail["message"] = "Loss of signal: no response with current delivered. Start troubleshooting."
        return [self._event(EventKind.LOSS_OF_SIGNAL, m, s.site, s.side, detail)]

    def _episode_ended(self, key: str, t_s: float, stimulus_index: int | None) -> None:
        """The site's loss-of-signal episode ended (``rules.los_end_consecutive``
        responses, or a recovery): a new loss within ``rules.los_reentry_s`` continues it."""
        episode = self._episodes.get(key)
        if episode is not None:
            episode["ended_t_s"] = t_s
            episode["ended_stimulus_index"] = stimulus_index

    def _aps_amplitude(self, m: Measurement, f: Facts, amp_symbol: str, b: Mapping[str, Any] | None) -> list[RuleEvent]:
        s = m.stimulus
        emit = self._step(ApsAmplitude.MACHINE, s.side.value, amp_symbol)
        if not emit or b is None:
            return []
        kind = EventKind(emit)
        if kind is EventKind.AMPLITUDE_DECREASE and self._state(Blockade.MACHINE, _BOTH) == "SUSPECTED":
            # the blockade replaces the single-side advice while it lasts
            return []
        detail: dict[str, Any] = {
            "source": s.source.value,
            "consecutive": self._run(ApsAmplitude.MACHINE, s.side.value),
            "amplitude_uV": _r(f.amplitude_uV, 2), "latency_ms": _r(f.latency_ms, 3),
            "amplitude_pct": _r((f.amplitude_uV or 0.0) / b["amplitude_uV"] * 100.0, 1),
            "latency_pct": _r((f.latency_ms or 0.0) / b["latency_ms"] * 100.0, 1),
            "baseline_amplitude_uV": _r(b["amplitude_uV"], 2),
            "baseline_latency_ms": _r(b["latency_ms"], 3),
        }
        if kind is EventKind.COMBINED_EVENT:
            detail["message"] = ("Combined event: amplitude down and latency up (traction injury "
                                 "pattern). Release traction.")
        else:
            detail["message"] = AMPLITUDE_DECREASE_MESSAGE
            detail["advice"] = AMPLITUDE_DECREASE_ADVICE
        return [self._event(kind, m, s.site, s.side, detail)]

    # -- neuromuscular blockade -------------------------------------------------------
    def nmb_reference(self, side: Side) -> dict[str, Any] | None:
        """What a side's responses are compared with for a neuromuscular blockade: its APS
        baseline (APS stimuli of its site), else its V1 value, else its R1 value (stimuli
        of that site and source; a step recorded from an untagged stimulus stands for the
        vagus (V1) or the RLN (R1)); None when the side has none of them."""
        side = Side(side)
        aps = self._aps.get(side.value)
        if aps and aps.get("baseline") and self._state(ApsBaseline.MACHINE, side.value) == "SET":
            bl = aps["baseline"]
            return {"basis": "aps_baseline", "site": bl.get("site", Site.VAGUS.value), "source": Source.APS.value,
                    "amplitude_uV": bl["amplitude_uV"], "latency_ms": bl["latency_ms"]}
        for step, nerve in ((Step.V1, Site.VAGUS), (Step.R1, Site.RLN)):
            v = self.procedure.step(side, step)
            if v and v["response"] and v.get("amplitude_uV") and v.get("latency_ms"):
                # a step recorded with the button from an untagged stimulus: the step names
                # the nerve (else no tagged stimulus would ever be compared with it)
                site = nerve.value if v["site"] == Site.UNTAGGED.value else v["site"]
                return {"basis": step.value, "site": site, "source": v["source"],
                        "amplitude_uV": v["amplitude_uV"], "latency_ms": v["latency_ms"],
                        "stimulus_index": v.get("stimulus_index")}
        return None

    def _blockade(self, m: Measurement, f: Facts, symbol: str) -> list[RuleEvent]:
        """Neuromuscular blockade suspected (``NmbSide``, ``Blockade``)."""
        s = m.stimulus
        side = s.side.value
        emit = self._step(NmbSide.MACHINE, side, symbol)
        down = self._nmb["down"]
        if emit == "side_down":
            ref = self.nmb_reference(s.side) or {}
            down[side] = {
                "t_s": m.t_end_s, "stimulus_index": s.index, "site": s.site.value, "source": s.source.value,
                "amplitude_uV": _r(f.amplitude_uV, 2), "latency_ms": _r(f.latency_ms, 3),
                "reference": ref.get("basis"), "reference_uV": _r(ref.get("amplitude_uV"), 2),
                "reference_latency_ms": _r(ref.get("latency_ms"), 3),
                "amplitude_pct": _r((f.amplitude_uV or 0.0) / ref["amplitude_uV"] * 100.0, 1) if ref else None,
                "latency_pct": _r((f.latency_ms or 0.0) / ref["latency_ms"] * 100.0, 1) if ref else None,
            }
        elif emit == "side_up":
            down[side] = None
        if emit != "side_down":
            return []
        times = {k: (v["t_s"] if v else None) for k, v in down.items()}
        if self._step(Blockade.MACHINE, _BOTH, Blockade.classify(times, self.settings)) != _NMB:
            return []
        apart = abs(times["L"] - times["R"])  # type: ignore[operator]
        self._nmb["episode"] = {"t_s": m.t_end_s, "stimulus_index": s.index,
                                "sides": copy.deepcopy(down)}
        return [self._event(EventKind.NEUROMUSCULAR_BLOCKADE_SUSPECTED, m, s.site, s.side, {
            "sides": copy.deepcopy(down), "apart_s": round(apart, 3), "window_s": self.settings["rules.nmb_window_s"],
            "amplitude_pct_limit": self.settings["rules.amplitude_decrease_pct"],
            "latency_pct_limit": self.settings["rules.combined_latency_pct"],
            "message": NMB_MESSAGE, "advice": NMB_ADVICE,
        })]

    def _end_blockade(self, m: Measurement) -> list[RuleEvent]:
        """A side recovered from the blockade: it is over on both sides (systemic). A
        vagus still in its own amplitude decrease gets its advice back (the alarm mapping
        had ended it for the blockade): that side's fall was not the relaxant."""
        t_s = m.t_end_s
        self._step(Blockade.MACHINE, _BOTH, "ENDED")
        for side in Side:
            self._step(NmbSide.MACHINE, side.value, "RESET")
            self._nmb["down"][side.value] = None
        if self._nmb.get("episode") is not None:
            self._nmb["episode"]["ended_t_s"] = t_s
        self._nmb["last_episode"] = self._nmb.pop("episode", None)
        self._nmb["episode"] = None
        events: list[RuleEvent] = []
        for key, loss in list(self._losses.items()):
            if _NMB not in loss["conditions"]:
                continue
            loss["conditions"].remove(_NMB)
            if not loss["conditions"]:
                del self._losses[key]
                for w in self._watchers(key):
                    self._step(Recovery.MACHINE, f"{key}-{w}", "DONE")
            elif EventKind.AMPLITUDE_DECREASE.value in loss["conditions"]:
                site_value, side_value = key.split("-")
                b = (self._aps.get(side_value) or {}).get("baseline") or {}
                events.append(self._event(EventKind.AMPLITUDE_DECREASE, m, Site(site_value), Side(side_value), {
                    "source": Source.APS.value, "after_blockade": True,
                    "baseline_amplitude_uV": _r(b.get("amplitude_uV"), 2),
                    "baseline_latency_ms": _r(b.get("latency_ms"), 3),
                    "message": ("The blockade is over but this vagus is still low with stable latency: "
                                + AMPLITUDE_DECREASE_MESSAGE[0].lower() + AMPLITUDE_DECREASE_MESSAGE[1:]),
                    "advice": AMPLITUDE_DECREASE_ADVICE,
                }))
        return events

    def _document_after_loss(self, step: Step, m: Measurement, f: Facts) -> None:
        """R2 / V2 of a side with an open loss of signal, from the stimulation done."""
        value = self.procedure.document_after_loss(step, m, f.response, _m_to_dict(m))
        if value is not None:
            self._documented.append({"side": m.stimulus.side.value, "step": step.value, "value": value,
                                     "measurement": _m_to_dict(m)})

    def take_documented_steps(self) -> list[dict[str, Any]]:
        """Steps the rules documented since the last call (R2 / V2 after a loss of signal,
        ``Procedure.document_after_loss``): ``side``, ``step``, ``value`` and the
        ``measurement`` (``Measurement``) for the record's step entry. The engine calls
        this after ``process`` and journals each one; the list is then empty."""
        out = []
        for d in self._documented:
            out.append({**d, "measurement": _m_from_dict(d["measurement"])})
        self._documented = []
        return out

    def _aps_baseline(self, m: Measurement, f: Facts, aps: dict[str, Any]) -> list[RuleEvent]:
        s = m.stimulus
        st = self.settings
        symbol = ApsBaseline.classify(m, f)
        emit = self._step(ApsBaseline.MACHINE, s.side.value, symbol)
        if not emit:
            return []
        acc = aps["acc"]
        amp, lat = float(f.amplitude_uV), float(f.latency_ms)  # type: ignore[arg-type]
        if acc["n"] == 0:
            acc["first_index"] = s.index
        acc["n"] += 1
        acc["sum_uV"] += amp
        acc["sum_ms"] += lat
        acc["sumsq_uV"] += amp * amp
        acc["sumsq_ms"] += lat * lat
        if emit != "baseline_set":
            return []
        n = acc["n"]
        mean_uV, mean_ms = acc["sum_uV"] / n, acc["sum_ms"] / n
        sd_uV = max(acc["sumsq_uV"] / n - mean_uV * mean_uV, 0.0) ** 0.5
        sd_ms = max(acc["sumsq_ms"] / n - mean_ms * mean_ms, 0.0) ** 0.5
        aps["baseline"] = {
            "amplitude_uV": mean_uV, "latency_ms": mean_ms, "count": n,
            "amplitude_sd_uV": sd_uV, "latency_sd_ms": sd_ms, "t_s": m.t_end_s, "stimulus_index": s.index,
            "first_index": acc["first_index"], "site": s.site.value,
            "number": aps["number"] + 1,
        }
        aps["number"] += 1
        aps["site"] = s.site.value
        aps["acc"] = _new_acc()
        events = [self._event(EventKind.BASELINE_SET, m, s.site, s.side, {
            "source": "APS", "how": "aps_mean", "number": aps["number"],
            "amplitude_uV": _r(mean_uV, 2), "latency_ms": _r(mean_ms, 3), "count": n,
            "amplitude_sd_uV": _r(sd_uV, 2), "latency_sd_ms": _r(sd_ms, 3),
            "amplitude_cv_pct": _r(sd_uV / mean_uV * 100.0, 1) if mean_uV else None,
            "first_index": acc["first_index"],
        })]
        self._step(ApsAmplitude.MACHINE, s.side.value, "BASELINE_SET")
        if self._step(PoorBaseline.MACHINE, s.side.value, PoorBaseline.classify_aps(mean_uV, st)):
            events.append(self._event(EventKind.POOR_BASELINE, m, s.site, s.side, {
                "basis": "APS baseline", "amplitude_uV": _r(mean_uV, 2), "limit_uV": st["rules.poor_baseline_uV"],
                "message": "Poor APS baseline: check tube position and electrode contact.",
            }))
        return events

    def _probe_baseline(self, m: Measurement, f: Facts) -> list[RuleEvent]:
        s = m.stimulus
        if s.site not in WATCHED_SITES:
            return []
        key = site_key(s.site, s.side)
        if self._step(ProbeBaseline.MACHINE, key, ProbeBaseline.classify(m, f)) != "baseline_set":
            return []
        self._probe[key] = {"amplitude_uV": f.amplitude_uV, "latency_ms": f.latency_ms, "how": "first_response",
                            "t_s": m.t_end_s, "stimulus_index": s.index, "set_mA": s.set_mA}
        return [self._event(EventKind.BASELINE_SET, m, s.site, s.side, {
            "source": "PROBE", "how": "first_response", "amplitude_uV": _r(f.amplitude_uV, 2),
            "latency_ms": _r(f.latency_ms, 3), "count": 1, "set_mA": s.set_mA,
        })]

    def _recovery(self, m: Measurement, f: Facts, key: str) -> list[RuleEvent]:
        s = m.stimulus
        ref, basis = self._reference(s.site, s.side, s.source)
        symbol = Recovery.classify(m, f, ref, self.settings)
        if self._step(Recovery.MACHINE, f"{key}-{s.source.value}", symbol) != "signal_recovered":
            return []
        loss = self._losses.pop(key, None) or {"t_s": m.t_end_s, "conditions": [], "stimulus_index": None}
        if s.site is Site.VAGUS and self._state(ApsAmplitude.MACHINE, s.side.value) != "NO_BASELINE":
            self._step(ApsAmplitude.MACHINE, s.side.value, "RECOVERED")
        return self._recovered(m, f, s.site, loss, s.source.value, ref, basis, "Signal recovered.")

    def _rln_through_vagus(self, m: Measurement, f: Facts) -> list[RuleEvent]:
        """While a side is mapped (``Procedure.mapping_active``) its RLN recovers through
        its vagus: a vagal response crosses the whole recurrent nerve, and the RLN's own
        probe stimuli are mapping. Same rule as ``Recovery``, on the vagal amplitude
        against the vagal reference of that source (machine key ``RLN-<side>-VAGUS``)."""
        s = m.stimulus
        key = site_key(Site.RLN, s.side)
        if key not in self._losses or not self.procedure.mapping_active(s.side):
            return []
        ref, basis = self._reference(Site.VAGUS, s.side, s.source)
        symbol = Recovery.classify(m, f, ref, self.settings)
        if self._step(Recovery.MACHINE, f"{key}-{_THROUGH_VAGUS}", symbol) != "signal_recovered":
            return []
        return self._recovered(
            m, f, Site.RLN, self._losses.pop(key), _THROUGH_VAGUS, ref, f"vagus {basis}",
            "Signal recovered: the vagus responds, so the whole recurrent nerve conducts.",
            through=Site.VAGUS.value)

    def _recovered(self, m: Measurement, f: Facts, site: Site, loss: Mapping[str, Any], watcher: str,
                   ref: float | None, basis: str, message: str, **extra: Any) -> list[RuleEvent]:
        """What every recovery of ``site`` does once ``watcher`` (a source, or the RLN's
        through-the-vagus watcher) saw it: the site's other watchers stop, the episode
        ends, the procedure hears of a recovered loss of signal, a blockade ends; the
        recovery event (and what the end of a blockade raises)."""
        s = m.stimulus
        key = site_key(site, s.side)
        consecutive = self._run(Recovery.MACHINE, f"{key}-{watcher}")
        for w in self._watchers(key):
            if w != watcher:
                self._step(Recovery.MACHINE, f"{key}-{w}", "DONE")
        # a recovery ends the loss-of-signal episode too (with the default settings the
        # responses have ended it already)
        if self._step(LossOfSignal.MACHINE, key, "END") == "episode_ended":
            self._episode_ended(key, m.t_end_s, s.index)
        recovered = list(loss["conditions"])
        if EventKind.LOSS_OF_SIGNAL.value in recovered:
            self.procedure.on_recovery(s.side, site, m.t_end_s)
            episode = self._episodes.get(key)
            if episode is not None and episode["interruptions"]:
                extra["interruptions"] = copy.deepcopy(episode["interruptions"])
        after = self._end_blockade(m) if _NMB in recovered else []
        return [self._event(EventKind.SIGNAL_RECOVERED, m, site, s.side, {
            "source": s.source.value, **extra,
            "time_since_loss_s": round(m.t_end_s - loss["t_s"], 3),
            "loss_t_s": loss["t_s"], "loss_stimulus_index": loss["stimulus_index"],
            "recovered": recovered,
            "amplitude_uV": _r(f.amplitude_uV, 2), "latency_ms": _r(f.latency_ms, 3),
            "baseline_uV": _r(ref, 2), "baseline_basis": basis,
            "pct_of_baseline": _r((f.amplitude_uV or 0.0) / ref * 100.0, 1) if ref else None,
            "consecutive": consecutive,
            "message": message,
        }), *after]

    @staticmethod
    def _watchers(key: str) -> list[str]:
        """The recovery watchers of a site key: one per source, and for an RLN the one
        fed by its vagus while the side is mapped."""
        return [src.value for src in Source] + ([_THROUGH_VAGUS] if key.startswith(Site.RLN.value + "-") else [])

    def _open_loss(self, ev: RuleEvent, m: Measurement) -> None:
        """A loss just raised opens (or extends) its site's loss record, which recovery
        watches. A blockade extends the record of each side's reference site; a continued
        loss of signal re-opens its episode's record with the episode's onset."""
        if ev.kind is EventKind.NEUROMUSCULAR_BLOCKADE_SUSPECTED:
            for side, down in ev.detail["sides"].items():
                if down:
                    self._add_loss_condition(site_key(Site(down["site"]), Side(side)), ev.kind.value,
                                             ev.t_s, ev.stimulus_index)
            return
        key = site_key(ev.site, ev.side)
        continued = ev.kind is EventKind.LOSS_OF_SIGNAL_CONTINUED
        if continued:
            episode = self._episodes[key]
            self._add_loss_condition(key, EventKind.LOSS_OF_SIGNAL.value, episode["t_s"], episode["stimulus_index"])
        else:
            self._add_loss_condition(key, ev.kind.value, ev.t_s, ev.stimulus_index)
        if ev.kind in (EventKind.LOSS_OF_SIGNAL, EventKind.LOSS_OF_SIGNAL_CONTINUED):
            # the misses that raised it (``_loss_of_signal`` keeps them; a loss is raised on a miss)
            misses = self._sites[key]["misses"]
            measured = bool(misses) and all(x["delivered_measured"] for x in misses)
            self.procedure.on_loss(ev.side, ev.site, ev.t_s, ev.stimulus_index, current_measured=measured,
                                   continued=continued)
            if ev.site is Site.RLN and m.stimulus.step in (None, Step.R2):
                self._document_after_loss(Step.R2, m, facts(m, self.settings))

    def _add_loss_condition(self, key: str, condition: str, t_s: float, stimulus_index: int | None) -> None:
        loss = self._losses.get(key)
        if loss is None:
            loss = {"t_s": t_s, "stimulus_index": stimulus_index, "conditions": []}
            self._losses[key] = loss
        if condition not in loss["conditions"]:
            loss["conditions"].append(condition)
        for w in self._watchers(key):
            self._step(Recovery.MACHINE, f"{key}-{w}", "LOSS")

    def _track_ebsln(self, m: Measurement, f: Facts) -> None:
        s = m.stimulus
        e = self._ebsln.setdefault(s.side.value, {"stimuli": 0, "responses": 0, "present": False,
                                                  "first_response": None, "last": None,
                                                  "max_amplitude_uV": None})
        e["stimuli"] += 1
        entry = {"response": f.response, "amplitude_uV": f.amplitude_uV,
                 "latency_ms": f.latency_ms if f.response else None, "t_s": s.t_s, "stimulus_index": s.index,
                 "set_mA": s.set_mA}
        e["last"] = entry
        if f.response:
            e["responses"] += 1
            e["present"] = True
            if e["first_response"] is None:
                e["first_response"] = entry
            if e["max_amplitude_uV"] is None or (f.amplitude_uV or 0.0) > e["max_amplitude_uV"]:
                e["max_amplitude_uV"] = f.amplitude_uV

    def ebsln(self, side: Side) -> dict[str, Any]:
        """EBSLN glottic responses of a side (tracked, never alarmed)."""
        e = self._ebsln.get(side.value)
        if e is None:
            return {"stimuli": 0, "responses": 0, "present": False, "first_response": None, "last": None,
                    "max_amplitude_uV": None}
        return copy.deepcopy(e)

    # -- operator inputs --------------------------------------------------------------
    def rebaseline(self, side: Side, source: Source = Source.APS, t_s: float = 0.0,
                   site: Site | None = None) -> list[RuleEvent]:
        """Start a new baseline. APS: the next ``rules.aps_baseline_count`` valid,
        qualifying APS responses of the side; combined event / amplitude decrease pause
        until then, and their open episode ends (without a recovery event; a loss of
        signal stays open). PROBE: the next good probe response of ``site`` (or of every
        watched site of the side)."""
        side, source = Side(side), Source(source)
        if source is Source.APS:
            aps = self._aps.setdefault(side.value, _new_aps())
            aps["acc"] = _new_acc()
            aps["requested_t_s"] = t_s
            self._step(ApsBaseline.MACHINE, side.value, "REBASELINE")
            self._step(ApsAmplitude.MACHINE, side.value, "REBASELINE")
            key = site_key(Site(aps.get("site", Site.VAGUS.value)), side)
            loss = self._losses.get(key)
            if loss is not None:
                loss["conditions"] = [c for c in loss["conditions"]
                                      if c not in (EventKind.COMBINED_EVENT.value, EventKind.AMPLITUDE_DECREASE.value)]
                if not loss["conditions"]:
                    del self._losses[key]
                    for w in self._watchers(key):
                        self._step(Recovery.MACHINE, f"{key}-{w}", "DONE")
        else:
            if site is not None and Site(site) not in WATCHED_SITES:
                raise ValueError(f"probe baseline for site {Site(site).value}: only VAGUS and RLN have one")
            for s in ([Site(site)] if site is not None else list(WATCHED_SITES)):
                key = site_key(s, side)
                self._step(ProbeBaseline.MACHINE, key, "CLEAR")
                self._probe.pop(key, None)
        return []

    def capture_baseline(self, site: Site, side: Side, measurement: Measurement,
                         t_s: float | None = None) -> list[RuleEvent]:
        """The operator captures ``measurement`` as the probe baseline of ``site``/``side``."""
        site, side = Site(site), Side(side)
        if site not in WATCHED_SITES:
            raise ValueError(f"baseline for site {site.value}: only VAGUS and RLN have one")
        if measurement.stimulus.side is not side:
            raise ValueError(f"baseline for {site_key(site, side)}: the measurement is from side "
                             f"{measurement.stimulus.side.value}")
        f = facts(measurement, self.settings)
        if not f.response or f.amplitude_uV is None:
            raise ValueError(f"baseline for {site_key(site, side)}: the measurement is not a valid response")
        key = site_key(site, side)
        self._step(ProbeBaseline.MACHINE, key, "CAPTURE")
        when = measurement.t_end_s if t_s is None else float(t_s)
        self._probe[key] = {"amplitude_uV": f.amplitude_uV, "latency_ms": f.latency_ms, "how": "captured",
                            "t_s": when, "stimulus_index": measurement.stimulus.index,
                            "set_mA": measurement.stimulus.set_mA}
        return [self._event(EventKind.BASELINE_SET, measurement, site, side, {
            "source": "PROBE", "how": "captured", "amplitude_uV": _r(f.amplitude_uV, 2),
            "latency_ms": _r(f.latency_ms, 3), "count": 1, "set_mA": measurement.stimulus.set_mA,
        }, t_s=when)]

    def last_response(self, side: Side) -> Measurement | None:
        d = self._last_response.get(Side(side).value)
        return _m_from_dict(d) if d else None

    def record_step(self, step: Step, side: Side, t_s: float, measurement: Measurement | None = None) -> StepRecord:
        """The step button: record an already measured stimulus (default: the side's last
        valid response) as ``step``, and apply the step's rules to it as if it had been
        tagged before it was measured (clinical-rules.md, "steps recorded afterwards"):
        a V1 is judged for a poor baseline (the side's first valid, qualifying V1 only);
        the V2/V1 ratio and the R2 proximal/distal reduction are returned with it.
        Events are stamped with ``t_s`` (when they were recognised: now) and the
        stimulus's index. Raises ``ProcedureError`` when there is nothing to record."""
        side = Side(side)
        try:
            step = Step(step)
        except ValueError:
            raise ProcedureError(f"step {step!r}: must be one of {', '.join(x.value for x in Step)}") from None
        m = measurement if measurement is not None else self.last_response(side)
        if m is None:
            raise ProcedureError(f"step {step.value}: no response on side {side.value} to record")
        if m.stimulus.side is not side:
            raise ProcedureError(f"step {step.value}: the measurement is from side {m.stimulus.side.value}")
        f = facts(m, self.settings)
        if not f.valid:
            raise ProcedureError(f"step {step.value}: the measurement is invalid ({m.invalid_reason})")
        value = self.procedure.capture_step(step, m, f.response, t_s)
        events: list[RuleEvent] = []
        tagged = replace(m, stimulus=replace(m.stimulus, step=step))
        if step is Step.V1 and not f.untagged:
            events.extend(self._poor_v1(tagged, facts(tagged, self.settings), max(float(t_s), m.t_end_s),
                                        afterwards=True))
        summary = self.procedure.summary(self.settings)["sides"][side.value]
        findings: dict[str, Any] = {}
        if step in (Step.V1, Step.V2) and summary["v2_of_v1_pct"] is not None:
            findings["v2_of_v1_pct"] = summary["v2_of_v1_pct"]
        if step in (Step.R2P, Step.R2D) and summary["r2_reduction"] is not None:
            findings["r2_reduction"] = summary["r2_reduction"]
        return StepRecord(value=value, events=events, findings=findings)

    def tag_step(self, step: Step, side: Side, t_s: float, measurement: Measurement | None = None) -> dict[str, Any]:
        """``record_step`` returning only the step's value (the original entry point).
        The events the step's rules raised are not lost: the next ``process`` returns them
        first. New callers use ``record_step`` and handle its events at once."""
        rec = self.record_step(step, side, t_s, measurement)
        self._pending.extend(rec.events)
        return rec.value

    def tag_offer(self, side: Side, step: Step, t_s: float) -> StepRecord:
        """The operator accepts what the side's troubleshooting record offers for
        ``step`` (R2 / V2 after a loss of signal): that stimulus is recorded as the step
        (``record_step``). Raises ``ProcedureError`` when nothing is offered."""
        side, step = Side(side), Step(step)
        offer = self.procedure.offer(side, step)
        if not offer or not offer.get("measurement"):
            raise ProcedureError(f"step {step.value}: no stimulus on side {side.value} is offered for it")
        return self.record_step(step, side, t_s, _m_from_dict(offer["measurement"]))

    def add_mapping_point(self, side: Side, position_mm: float, t_s: float, response: bool | None = None,
                          label: str = "", measurement: Measurement | None = None) -> dict[str, Any]:
        """A mapping point of the side's RLN at ``position_mm`` from the laryngeal entry,
        with the measured amplitude, latency and current of ``measurement`` (default:
        the side's last RLN probe stimulus since its loss that no earlier point took).
        ``response`` None takes the measured verdict. Returns the side's mapping with
        ``changed`` (see ``Procedure.add_mapping_point``)."""
        side = Side(side)
        if measurement is None:
            return self.procedure.add_mapping_point(side, position_mm, response, t_s, label=label)
        if measurement.stimulus.side is not side or measurement.stimulus.site is not Site.RLN:
            raise ProcedureError(f"mapping point on side {side.value}: the measurement is not of that side's RLN")
        f = facts(measurement, self.settings)
        if not f.valid:
            raise ProcedureError(f"mapping point at {position_mm} mm: the measurement is invalid "
                                 f"({measurement.invalid_reason})")
        self.procedure.note_rln_stimulus(measurement, f.response)
        return self.procedure.add_mapping_point(side, position_mm, response, t_s, label=label)

    # -- state for the screen and the record ------------------------------------------
    def state(self) -> dict[str, Any]:
        """What the rules see now, per site and side (JSON-serialisable)."""
        sites: dict[str, Any] = {}
        for side in Side:
            for site in WATCHED_SITES:
                key = site_key(site, side)
                sites[key] = {
                    "los": self._state(LossOfSignal.MACHINE, key),
                    "probe_baseline": self.probe_baseline(site, side),
                    "loss": copy.deepcopy(self._losses.get(key)),
                    "first_response": copy.deepcopy(self._sites.get(key, {}).get("first_response")),
                }
        sides = {
            side.value: {
                "aps_baseline_state": self._state(ApsBaseline.MACHINE, side.value),
                "aps_baseline": self.aps_baseline(side),
                "aps_collected": self._aps.get(side.value, _new_aps())["acc"]["n"],
                "aps_amplitude": self._state(ApsAmplitude.MACHINE, side.value),
                "ebsln": self.ebsln(side),
            }
            for side in Side
        }
        for key, episode in self._episodes.items():
            if key in sites:
                sites[key]["episode"] = copy.deepcopy(episode)
        for side in Side:
            sides[side.value]["nmb"] = self._state(NmbSide.MACHINE, side.value)
            sides[side.value]["nmb_reference"] = self.nmb_reference(side)
        return {"sites": sites, "sides": sides,
                "no_current": {src.value: self._state(NoCurrent.MACHINE, src.value) for src in Source},
                "blockade": {"state": self._state(Blockade.MACHINE, _BOTH), **copy.deepcopy(self._nmb)}}

    # -- snapshot / restore -----------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        data = {
            "format": SNAPSHOT_FORMAT,
            "count": self._count,
            "machines": self._machines,
            "sites": self._sites,
            "aps": self._aps,
            "probe": self._probe,
            "losses": self._losses,
            "no_current": self._no_current,
            "ebsln": self._ebsln,
            "last_response": self._last_response,
            "episodes": self._episodes,
            "nmb": self._nmb,
            "pending": [ev.to_json() for ev in self._pending],
            "procedure": self.procedure.to_dict(),
        }
        snapshot: dict[str, Any] = json.loads(json.dumps(data))
        return snapshot

    @classmethod
    def restore(cls, settings: Settings, snapshot: Mapping[str, Any]) -> RuleEngine:
        if not isinstance(snapshot, Mapping) or snapshot.get("format") != SNAPSHOT_FORMAT:
            found = snapshot.get("format") if isinstance(snapshot, Mapping) else type(snapshot).__name__
            raise SnapshotError(f"rule engine snapshot: format {found!r} is not {SNAPSHOT_FORMAT!r}")
        eng = cls(settings)
        try:
            data = copy.deepcopy(dict(snapshot))
            machines = data["machines"]
            for mc in _MACHINES:
                for key, (state, run) in machines.get(mc.name, {}).items():
                    if state not in mc.states or not isinstance(run, int):
                        raise SnapshotError(f"rule engine snapshot: {mc.name} {key}: bad state {state!r}/{run!r}")
                eng._machines[mc.name] = {k: [v[0], int(v[1])] for k, v in machines.get(mc.name, {}).items()}
            eng._count = int(data["count"])
            eng._sites = data["sites"]
            eng._aps = data["aps"]
            eng._probe = data["probe"]
            eng._losses = data["losses"]
            eng._no_current = data["no_current"]
            eng._ebsln = data["ebsln"]
            eng._last_response = data["last_response"]
            # added later: a snapshot without them is still resumed
            eng._episodes = data.get("episodes", {})
            eng._nmb = data.get("nmb", _new_nmb())
            eng._pending = [_event_from_dict(x) for x in data.get("pending", [])]
            eng.procedure = Procedure.from_dict(data["procedure"])
            if "episodes" not in data:
                # the loss-of-signal table used to count misses in ARMED
                los = eng._machines[LossOfSignal.MACHINE.name]
                for key, (state, run) in los.items():
                    if state == "ARMED" and run > 0:
                        los[key] = ["MISSING", run]
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, SnapshotError):
                raise
            raise SnapshotError(f"rule engine snapshot: {exc.__class__.__name__}: {exc}") from None
        return eng


def _new_acc() -> dict[str, Any]:
    return {"n": 0, "sum_uV": 0.0, "sum_ms": 0.0, "sumsq_uV": 0.0, "sumsq_ms": 0.0, "first_index": None}


def _new_nmb() -> dict[str, Any]:
    return {"down": {"L": None, "R": None}, "episode": None, "last_episode": None}


def _event_from_dict(d: Mapping[str, Any]) -> RuleEvent:
    return RuleEvent(t_s=float(d["t_s"]), kind=EventKind(d["kind"]), side=Side(d["side"]), site=Site(d["site"]),
                     priority=Priority(d["priority"]), stimulus_index=d["stimulus_index"],
                     detail=dict(d.get("detail") or {}))


def _new_aps() -> dict[str, Any]:
    return {"acc": _new_acc(), "baseline": None, "number": 0, "site": Site.VAGUS.value, "requested_t_s": None}
