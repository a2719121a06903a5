"""The stimulus pipeline: epoch -> measurement -> journal -> rules -> alarms -> procedure.

Owns: ``StimulusPipeline``: each ``StimEpoch`` attributed to the selection in force when
the board delivered it (``Stimulator.selection_at``) and numbered in the case, measured
(``Analyzer``; never a response while cautery is on), journaled with everything it causes in ONE transaction
(the stimulus, its rule events, the alarm transitions they cause, step results; their
announcements and sounds follow the write), the procedure's changes journaled (tagged
steps, the contralateral vagus answered by the monitor, staging advice), remembered for
the screen (last responses, trends), then sounded and published (``measurements``,
``waveforms``).
May import: ``app.model``, ``app.format``, ``app.record.entries``, ``app.rules.procedure``
(its error), ``app.engine.*`` rooms below it (context, ledger, timebase, stimulator,
alarm_desk, emg_stream, tube, persist, jsonsafe, seams, case_state, limits, overlap),
``firmware_bridge.messages``.

Stimuli while no case is open are measured, sounded and published, but not journaled
and not judged by the rules (there is no patient record to judge them in). So are the
stimuli the board delivered before the open case began (by the board's clock mapped to
case time, which runs late by the transport delay, never early): an epoch of the
previous case still in flight never becomes the next case's.

Both outputs at once (the vagal electrode at 1 Hz while the surgeon's probe runs a train):
a pulse of the other output can fall in an epoch with its artifact and its response
(``app.engine.overlap``). While the other output rests, an epoch is measured and recorded
at once. While it may stimulate, the epoch is first looked at on both channels by an
analyzer of its own (what this pulse evokes there: the other output's epochs are judged
by it), then waits until the other output's pulses that can reach it are known (about one
pulse of its train; at most ``overlap.HOLD_S``, or ``overlap.NEIGHBOUR_HOLD_S`` for a slow
train), and is then measured with all of them blanked and judged: not measured
(``other_stimulus``) if a pulse that may have evoked a response on its channel reaches it.
Epochs are recorded in the order they arrived; a closing case records its waiting ones
first. While an output is not measured for that reason, the events say so, and when it
is measured again (``_note_crossed``; a new case starts without that run).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np

from app import format as F
from app.engine.alarm_desk import AlarmDesk
from app.engine.case_state import CaseState, Trend
from app.engine.context import EngineContext
from app.engine.emg_stream import LABELS, EmgStream
from app.engine.jsonsafe import plain
from app.engine.ledger import Ledger
from app.engine.overlap import Overlap, Pending, other_output
from app.engine.limits import below_default_threshold
from app.engine.persist import Persistence
from app.engine.seams import Analyzer, AnalyzerFactory
from app.engine.stimulator import Stimulator, step_site
from app.engine.timebase import TimeBase
from app.engine.tube import TubeDesk
from app.model import InvalidReason, Measurement, RuleEvent, Side, Site, Source, Step, Stimulus
from app.record import entries as E
from app.rules.procedure import ProcedureError
from firmware_bridge.messages import Output, StimEpoch


# stimuli of one output in a row not measured because of the other before the screen says so
CROSSED_RUN = 3
# while the probe rests, every this many vagal epochs is also measured on the other side's channel
CROSS_EVERY = 10

# rule events that a response makes (they say so when only a lowered threshold made it one)
RESPONSE_EVENTS = ("signal_recovered", "baseline_set", "nonrecurrent_nerve_suspected")


def step_words(v: Mapping[str, Any]) -> str:
    """A step's value in words, numbers through ``app.format``: ``593 µV, 7.83 ms at 1.00 mA
    (delivered 1.01 mA)``, ``no response (18 µV) at 1.00 mA (delivered 1.00 mA)``."""
    amp = v.get("amplitude_uV")
    if v.get("response"):
        what = F.amp_text(amp) + (f", {F.lat_text(v['latency_ms'])}" if v.get("latency_ms") is not None else "")
        if v.get("lowered_threshold"):
            what += " (response, lowered threshold)"
    else:
        what = "no response" + (f" ({F.amp_text(amp)})" if amp is not None else "")
    if v.get("set_mA") is not None:
        what += f" at {F.current_text(v.get('set_mA'), v.get('delivered_mA'))}"
    return what


def findings_words(findings: Mapping[str, Any]) -> str:
    """What a step shows beside its value: ``; V2 is 96 % of V1``, the R2 reduction."""
    out = ""
    if findings.get("v2_of_v1_pct") is not None:
        out += f"; V2 is {F.pct_text(findings['v2_of_v1_pct'])} of V1"
    red = findings.get("r2_reduction")
    if isinstance(red, Mapping) and red.get("message"):
        out += f"; {red['message']}"
    return out


def step_findings(case: CaseState, settings: Mapping[str, Any], side: Side, step: Step) -> dict[str, Any]:
    """The V2/V1 ratio (V1, V2) and the R2 proximal/distal reduction (R2P, R2D) a step
    now shows, as ``RuleEngine.record_step`` returns them for a step recorded by button."""
    summary = case.rules.procedure.summary(settings)["sides"][side.value]
    out: dict[str, Any] = {}
    if step in (Step.V1, Step.V2) and summary["v2_of_v1_pct"] is not None:
        out["v2_of_v1_pct"] = summary["v2_of_v1_pct"]
    if step in (Step.R2P, Step.R2D) and summary["r2_reduction"] is not None:
        out["r2_reduction"] = summary["r2_reduction"]
    return out


class StimulusPipeline:
    """Every stimulus from the board (see the module docstring)."""

    def __init__(self, ctx: EngineContext, time: TimeBase, ledger: Ledger, stim: Stimulator, alarms: AlarmDesk,
                 emg: EmgStream, tube: TubeDesk, persist: Persistence, analyzer_factory: AnalyzerFactory) -> None:
        self.ctx = ctx
        self.time = time
        self.ledger = ledger
        self.stim = stim
        self.alarms = alarms
        self.emg = emg
        self.tube = tube
        self.persist = persist
        self._analyzer_factory = analyzer_factory
        self.analyzer: Analyzer = analyzer_factory(ctx.settings)
        self._cross: Analyzer = analyzer_factory(ctx.settings)  # the other side's channel (``epoch``)
        self._idle_index = 0  # stimuli while no case is open are numbered here
        self.overlap = Overlap(stim, lambda: self.ctx.settings, time.board_clock)
        # the epochs measured and waiting for their judgement, in the order they arrived
        self._held: deque[tuple[Pending, CaseState | None, Measurement | None]] = deque()
        self._crossed: dict[Source, int] = {}  # per source, its stimuli in a row not measured so

    def settings_changed(self) -> None:
        """New settings: a new analyzer for the next epoch."""
        self.analyzer = self._analyzer_factory(self.ctx.settings)
        self._cross = self._analyzer_factory(self.ctx.settings)

    # -- one epoch

    def _stimulus_of(self, e: StimEpoch) -> tuple[Stimulus, CaseState | None]:
        """The stimulus, and the case it belongs to: the open case, unless the board
        delivered it before the case opened (an epoch of the previous case still in flight)."""
        post_s = (e.samples.shape[1] - e.pre_samples) / float(e.sample_rate_hz) if e.samples.ndim == 2 else 0.05
        t_s = self.time.case_t_of_board(e.board_time_us, latency_s=post_s)
        # the selection in force when the board delivered it (its token, else its onset time)
        site, side, step, source = self.stim.selection_at(e.output, e.config_token, t_s + self.time.origin)
        case = self.ctx.case if t_s >= 0.0 else None
        if case is not None:
            index, case.stim_index = case.stim_index, case.stim_index + 1
        else:
            index, self._idle_index = self._idle_index, self._idle_index + 1
        return Stimulus(
            index=index, t_s=t_s, site=site, side=side, source=source,
            set_mA=e.set_current_uA / 1000.0,
            delivered_mA=None if e.delivered_current_uA < 0 else e.delivered_current_uA / 1000.0,
            pw_us=int(e.pulse_width_us), step=step,
        ), case

    def _note_crossed(self, stim: Stimulus, m: Measurement) -> None:
        """Say when an output's stimuli stop being measured because of the other output
        (``CROSSED_RUN`` of them in a row: the vagal electrode while the probe answers on its
        channel), and when they are measured again; a stray one is only in its stimulus."""
        run = self._crossed.get(stim.source, 0)
        where = F.site_side(stim.site.value, stim.side.value)
        other = "probe" if stim.source is Source.APS else "continuous vagal electrode"
        if m.invalid_reason is InvalidReason.OTHER_STIMULUS:
            self._crossed[stim.source] = run + 1
            if run + 1 == CROSSED_RUN:
                self.ledger.event("stimulus", "other_stimulus_start",
                                  f"{where} not measured while the {other} stimulates: its responses may fall "
                                  "in this response window", side=stim.side.value, site=stim.site.value,
                                  detail={"source": stim.source.value}, t_s=stim.t_s)
        elif run and m.valid:
            self._crossed[stim.source] = 0
            if run >= CROSSED_RUN:
                self.ledger.event("stimulus", "other_stimulus_end",
                                  f"{where} measured again ({run} stimuli not measured while the {other} "
                                  "stimulated)", side=stim.side.value, site=stim.site.value,
                                  detail={"source": stim.source.value, "not_measured": run}, t_s=stim.t_s)

    def epoch(self, e: StimEpoch) -> None:
        """One stimulus epoch from the board: attributed now; measured, judged and recorded
        at once while the other output rests, else when the other output's pulses that can
        reach it are known (``app.engine.overlap``): only then are they all blanked."""
        stim, case = self._stimulus_of(e)
        self.emg.note_stimulus(stim.t_s)  # its window is not free-running EMG
        self.tube.blank(stim.t_s)
        self.ctx.counters["stimuli"] += 1
        now = self.ctx.clock.now()
        other = other_output(Output(e.output))
        evoked: dict[Side, bool | None] = {}
        m: Measurement | None = None
        if self.overlap.active(other, now):
            # what it evokes on either channel (the other output's epochs are judged by it),
            # by an analyzer of its own (nothing learned there changes the real measurements)
            look: tuple[Side, ...] = (Side.L, Side.R)
        else:
            m = self.analyzer.measure_board_epoch(e, stim, other_onsets=self.overlap.onsets(e, stim))
            evoked[stim.side] = bool(m.response) if m.valid else None
            # the vagal electrode on its other side's channel every ``CROSS_EVERY`` pulses:
            # it vouches for the pulses a slow probe train in step with it reaches
            look = (stim.side.other,) if stim.source is Source.APS and stim.index % CROSS_EVERY == 0 else ()
        if look:
            onsets = self.overlap.onsets(e, stim)
            site = self.overlap.longest_site()  # over the longest response window: the reach's
            for side in look:
                seen = self._cross.measure_board_epoch(e, replace(stim, side=side, site=site, step=None),
                                                       other_onsets=onsets)
                evoked[side] = bool(seen.response) if seen.valid else None
        self._held.append((self.overlap.arrive(e, stim, evoked, now), case, m))
        self.release()

    def release(self, force: bool = False) -> None:
        """Judge and record the waiting epochs that can be, in the order they arrived (the
        record stays in time order; ``force``: all of them, as far as known: the case
        closes). Whether each waiting pulse is clean is settled first, in any order: an
        earlier epoch may be judged by a later one's pulse."""
        now = self.ctx.clock.now()
        for pending, _case, _m in self._held:
            self.overlap.settle(pending, now)
        while self._held and (force or self.overlap.ready(self._held[0][0], now)):
            pending, case, m = self._held.popleft()
            self._record(pending, case, m, now)

    def case_closing(self) -> None:
        """The open case closes: its waiting epochs are recorded in it (as far as known), and
        the next case starts without a run of stimuli not measured."""
        self.release(force=True)
        self._crossed.clear()

    def _record(self, p: Pending, case: CaseState | None, m: Measurement | None, now: float) -> None:
        """A judged epoch: measured now if it waited (every pulse of the other output in it
        known and blanked), invalid if the other output's response may be in it; then
        journaled with everything it causes, sounded and published."""
        e, stim = p.epoch, p.stim
        if m is None:
            m = self.analyzer.measure_board_epoch(e, stim, other_onsets=self.overlap.onsets(e, stim))
        if self.overlap.judge(p, now) and m.valid:
            m = Measurement(m.stimulus, m.channel, False, InvalidReason.OTHER_STIMULUS, False, None, None, None)
        if self.emg.cautery and m.valid:
            # free-running detector says cautery is on: never a response, never a loss
            m = Measurement(m.stimulus, m.channel, False, InvalidReason.CAUTERY, False, None, None, None)
        self.stim.of(stim.source).delivered_mA = stim.delivered_mA
        if case is not None and case is self.ctx.case:
            res = max(e.nv_per_count / 1000.0, 1e-3)
            threshold = float(self.ctx.settings["analysis.event_threshold_uV"])
            in_stream = self.emg.epoch_in_stream(e, stim.index, stim.t_s, res)
            if in_stream is not None:  # its samples are journaled with the stream: not twice
                payload, blob = E.stimulus(m, threshold_uV=threshold)
                payload["waveform_in_stream"] = in_stream
            else:
                payload, blob = E.stimulus(m, e.microvolts(), e.sample_rate_hz, e.pre_samples, res_uV=res,
                                           threshold_uV=threshold)
            # the stimulus and everything it causes in one transaction; sounds and announcements follow it
            with self.ledger.transaction():
                self.ledger.write("stimulus", payload, blob, t_s=stim.t_s)
                self._measured(case, m)
        self.ctx.outputs.stimulus(m, bool(m.valid and m.response))
        self._publish(case, m, e)
        self._note_crossed(stim, m)

    def _measured(self, case: CaseState, m: Measurement) -> None:
        """A journaled measurement of the open case: rules, alarms, procedure, state."""
        stim = m.stimulus
        events = case.rules.process(m)
        self.persist.stimulus()
        for ev in events:
            self.rule_event(case, ev)
        self.documented_steps(case)
        if m.valid:
            case.last_valid[(stim.site.value, stim.side.value)] = m
        pend = case.pending_step
        if pend is not None and m.valid and stim.side.value == pend["side"] and stim.site is step_site(pend["step"]):
            case.pending_step = None
            try:
                self.record_step(case, Step(pend["step"]), m, who=pend["who"], how="operator")
            except ProcedureError as exc:  # the step cannot take it: say so, never stop monitoring
                self.ledger.event("procedure", "step_not_recorded", f"{pend['step']} {F.side_word(pend['side'])} "
                                  f"not recorded: {exc}", side=pend["side"], detail={"step": pend["step"]})
        self._procedure_changed(case, m)
        self.remember(case, m)

    def documented_steps(self, case: CaseState) -> None:
        """R2 / V2 the rules documented from the stimulation done after a loss of signal
        (``RuleEngine.take_documented_steps``): announced as procedure events. They are not
        journaled as step entries (those are the operator's and the tagged stimuli's, and
        these values are withdrawn when the nerve recovers): the record reads them from the
        procedure state of the engine-state entry written at the end of this input."""
        for d in case.rules.take_documented_steps():
            value = d["value"]
            offer = next((o for o in ((case.rules.procedure.troubleshooting(d["side"]) or {}).get("offers") or [])
                          if o.get("step") == d["step"]), None)
            text = (f"{d['step']} {F.side_word(d['side'])} ({F.STEP_WORDS.get(d['step'], '')}) documented from the "
                    f"stimulation done after the loss of signal: {step_words(value)}")
            self.ledger.event("procedure", "step_documented", text, side=d["side"], site=value.get("site"),
                              detail={"step": d["step"], "how": "after_loss", **plain(value),
                                      "offer": offer.get("message") if offer else None})
            self.persist.changed()

    # -- what a measurement causes

    def rule_event(self, case: CaseState, ev: RuleEvent, who: str = "rules") -> None:
        """A rule event of the case: journaled, announced, applied to the alarms. An event
        made by a response that only a lowered threshold calls one says so."""
        if ev.kind.value in RESPONSE_EVENTS and below_default_threshold(True, ev.detail.get("amplitude_uV"),
                                                                        self.ctx.settings):
            threshold = float(self.ctx.settings["analysis.event_threshold_uV"])
            ev = replace(ev, detail={**ev.detail, "lowered_threshold_uV": threshold, "message": (
                f"{ev.detail.get('message') or F.event_title(ev.kind.value)} (response below the default threshold: "
                f"threshold lowered to {F.amp_text(threshold)})")})
        self.ledger.write("rule_event", E.rule_event(ev), t_s=ev.t_s)
        self.ctx.counters[f"rule_{ev.kind.value}"] += 1
        case.rule_counts[ev.kind.value] += 1
        message = str(ev.detail.get("message") or F.event_title(ev.kind.value))
        where = F.site_side(ev.site.value, ev.side.value)
        self.ledger.event("rule", ev.kind.value, f"{message} ({where})", priority=ev.priority.value,
                          side=ev.side.value, site=ev.site.value,
                          detail={"stimulus_index": ev.stimulus_index, **plain(ev.detail)}, t_s=ev.t_s)
        self.alarms.rule_event(ev, who=who)
        self.persist.changed()

    def _procedure_changed(self, case: CaseState, m: Measurement) -> None:
        """Journal what the rule engine changed in the procedure for this measurement."""
        proc = case.rules.procedure
        stim = m.stimulus
        if stim.step is not None and m.valid:
            value = proc.step(stim.side, stim.step)
            if value and value.get("stimulus_index") == stim.index:
                self.step_recorded(stim.side.value, stim.step, value, m, who="probe", how="tagged",
                                   findings=step_findings(case, self.ctx.settings, stim.side, stim.step))
        if stim.site is Site.VAGUS and m.valid:
            other = stim.side.other
            ts = proc.troubleshooting(other) or {}
            ans = ts["answers"].get("contralateral_vagus") if ts.get("open") else None
            if ans and ans.get("by") == "monitor" and abs(float(ans["t_s"]) - m.t_end_s) < 1e-6:
                self.ledger.write("troubleshooting", {"check": "contralateral_vagus", "answer": "yes",
                                                      "side": other.value, "question": ts.get("next_question"),
                                                      "who": "monitor"})
                self.ledger.event("procedure", "troubleshooting", f"contralateral vagus responds ({other.value} "
                                  "loss of signal): answered by the monitor", side=other.value,
                                  detail={"check": "contralateral_vagus", "answer": "yes"})
        self.check_staging(case)

    def check_staging(self, case: CaseState) -> None:
        """Journal the staging recommendations the procedure made since the last look."""
        history = case.rules.procedure.staging_history()
        if len(history) > case.staging_seen:
            for entry in history[case.staging_seen:]:
                self.ledger.write("staging", {"recommendation": entry["message"], "side": entry["side"],
                                              "who": "monitor"})
                self.ledger.event("rule", "staging_recommended", entry["message"], priority="info",
                                  side=entry["side"], detail=entry)
            case.staging_seen = len(history)

    def step_recorded(self, side: str, step: Step, value: Mapping[str, Any], m: Measurement | None,
                      who: str, how: str, findings: Mapping[str, Any] | None = None) -> None:
        """A step's value was recorded: journal, event (with what it now shows: the V2/V1
        ratio, the R2 proximal/distal reduction)."""
        self.ledger.write("step", E.step(side, step.value, m, who=who, comment=f"recorded by {how}"))
        value = {**value, "lowered_threshold": below_default_threshold(bool(value.get("response")),
                                                                       value.get("amplitude_uV"), self.ctx.settings)}
        text = f"{step.value} {F.side_word(side)}: {step_words(value)}" + findings_words(findings or {})
        self.ledger.event("procedure", "step_recorded", text, side=side, site=value.get("site"),
                          detail={"step": step.value, **plain(value), "findings": plain(dict(findings or {}))})
        self.persist.changed()

    def record_step(self, case: CaseState, step: Step, m: Measurement, who: str, how: str) -> dict[str, Any]:
        """Record ``m`` as ``step`` (the operator's step button, now or for the next
        response; an offer of the troubleshooting record): the step's rules are applied to
        it as if it had been tagged before (``RuleEngine.record_step``: a poor V1 raises its
        event now), then the step entry and those events are journaled. Raises
        ``ProcedureError`` when the step cannot take the measurement."""
        rec = case.rules.record_step(step, m.stimulus.side, self.time.now_t(), measurement=m)
        self.step_recorded(m.stimulus.side.value, step, rec.value, m, who=who, how=how, findings=rec.findings)
        for ev in rec.events:
            self.rule_event(case, ev)
        return rec.value

    def remember(self, case: CaseState, m: Measurement) -> None:
        """The case's last response per side (with % of the APS baseline) and its trend."""
        stim = m.stimulus
        d = self.measurement_json(m)
        amp_pct = lat_pct = None
        if stim.source is Source.APS:
            b = case.rules.aps_baseline(stim.side)
            if b and m.valid and m.amplitude_uV is not None and b.get("amplitude_uV"):
                amp_pct = round(m.amplitude_uV / b["amplitude_uV"] * 100.0, 1)
                if m.latency_ms is not None and b.get("latency_ms"):
                    lat_pct = round(m.latency_ms / b["latency_ms"] * 100.0, 1)
        d["amplitude_pct"] = amp_pct
        d["latency_pct"] = lat_pct
        case.last[stim.side.value] = d
        key = f"{stim.side.value}-{stim.site.value}-{stim.source.value}"
        tr = case.trends.get(key)
        if tr is None:
            tr = case.trends[key] = Trend(self.ctx.options.trend_points)
        tr.add(stim.t_s, m.amplitude_uV if m.valid else None, m.latency_ms if m.valid else None)

    def measurement_json(self, m: Measurement) -> dict[str, Any]:
        """A measurement for the screen: ``Measurement.to_json()`` and ``lowered_threshold``
        (a response only because the event threshold is lowered below its default: never
        shown as a plain "response", least of all under a loss of signal)."""
        d = m.to_json()
        d["lowered_threshold"] = below_default_threshold(bool(m.valid and m.response), m.amplitude_uV,
                                                         self.ctx.settings)
        return d

    def _publish(self, case: CaseState | None, m: Measurement, e: StimEpoch) -> None:
        if self.ledger.wants("measurements"):
            d = dict((case.last.get(m.stimulus.side.value) if case is not None else None) or {})
            if d.get("index") != m.stimulus.index:
                d = self.measurement_json(m)
            self.ledger.publish("measurements", {"type": "measurement", **d})
        if self.ledger.wants("waveforms"):
            uv = e.microvolts()
            factor = max(1, int(e.sample_rate_hz // self.ctx.options.display_epoch_hz))
            n = (uv.shape[1] // factor) * factor
            dec = uv[:, :n].reshape(uv.shape[0], -1, factor).mean(axis=2)
            self.ledger.publish("waveforms", {
                "type": "waveform", "index": m.stimulus.index, "t_s": round(m.stimulus.t_s, 4),
                "side": m.stimulus.side.value, "site": m.stimulus.site.value, "source": m.stimulus.source.value,
                "sample_rate_hz": e.sample_rate_hz / factor, "t0_ms": -1000.0 * e.pre_samples / e.sample_rate_hz,
                "channels": {LABELS[i]: np.round(dec[i], 1).tolist() for i in range(min(2, dec.shape[0]))},
            })
