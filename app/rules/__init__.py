"""The INMSG rule engine and the procedure model.

Owns: the rules that turn measurements into clinical events (``RuleEngine``), one
documented, table-driven state machine per condition (``conditions``, ``machine``), the
baselines, and the INMSG procedure (``procedure``: steps, troubleshooting, mapping,
staging). Pure: no threads, clocks, files or sockets; the same code runs live in the
engine service and offline in ``lnm analyze``.
May import: the standard library, ``app.model`` and ``app.settings`` only.

Semantics (``shared/reference/clinical-rules.md``, "Precise semantics of the defaults";
``RULES.md`` beside this file records the choices that text leaves open;
every number is a setting: ``rules.*``, ``analysis.event_threshold_uV``,
``stim.delivered_tolerance_pct``):

- Rules run per nerve site and side (VAGUS-L, RLN-R, ...). ``UNTAGGED`` stimuli feed no
  rule at all. Invalid epochs and non-qualifying stimuli are skipped: they neither count
  nor break a run. A stimulus *qualifies* when its set current is >=
  ``rules.los_min_current_mA`` and its delivered current, where measured, is >= (100 -
  ``stim.delivered_tolerance_pct``) % of the set current.
- Loss of signal (high): after at least one valid response at the site, then
  ``rules.los_consecutive`` qualifying valid stimuli in a row without a response. Once
  per episode. Hysteresis: the episode ends only when ``rules.los_end_consecutive``
  qualifying valid stimuli in a row respond (or the site recovers); a new loss within
  ``rules.los_reentry_s`` of that end continues the same episode and alarm condition:
  ``loss_of_signal_continued`` (high: it keeps, or makes active again, the same alarm;
  no new onset), with the episode's onset and its interruptions; the recovery event
  lists the interruptions. Loss and recovery watch VAGUS and RLN; EBSLN responses are
  tracked (``RuleEngine.ebsln``), never alarmed.
- APS baseline (info ``baseline_set``): means of the first ``rules.aps_baseline_count``
  valid, qualifying APS responses of a side, again after ``rebaseline``.
- Combined event (high) / amplitude decrease (medium, "check tube position,
  secretions and relaxant", in that order): APS only,
  after the baseline, on ``rules.combined_consecutive`` /
  ``rules.amplitude_decrease_consecutive`` consecutive valid qualifying APS stimuli.
  A no-response APS stimulus neither counts nor breaks these runs (no latency: it is the
  loss-of-signal's business). LOS may co-exist with either; a decrease escalates to a
  combined event, never the other way round (see ``conditions.ApsAmplitude``).
- Neuromuscular blockade suspected (medium, "systemic cause: check train-of-four and
  relaxant with the anaesthetist"): each side compared with its reference (its APS
  baseline, else its V1 value, else its R1 value; only stimuli of the reference's site
  and source) shows the amplitude-decrease condition (amplitude <
  ``rules.amplitude_decrease_pct`` %, latency <= ``rules.combined_latency_pct`` %) on
  ``rules.amplitude_decrease_consecutive`` consecutive valid, qualifying responses, and
  the two sides went down within ``rules.nmb_window_s`` of each other. Once per episode;
  while it lasts the amplitude-decrease advice is not raised (the alarm mapping ends an
  open one). It enters the loss record of each side's reference site, so it recovers as
  the amplitude decrease does; the first side to recover ends it on both sides (a vagus
  still in its own amplitude decrease then gets that advice again).
- Steps recorded afterwards (``RuleEngine.record_step``, the step button): the step's
  rules apply as if the stimulus had been tagged before it was measured (poor V1; the
  V2/V1 ratio and the R2 reduction are returned).
- After a loss of signal the side's R2 and V2 are the stimuli given at those steps,
  documented with "no response" and the measured amplitude and current, and offered by
  the troubleshooting record for tagging (``Procedure.document_after_loss``).
- Mapping: while a side's loss of signal is confirmed (troubleshooting ``true_los``) and
  not recovered, probe stimuli of that side's RLN are mapping, not monitoring: they
  neither recover nor lose the RLN site (a response distal to a segmental injury is not
  a recovery). The side's vagus still recovers it (``Procedure.mapping_active``).
- Recovery (info): after a LOS, combined event or amplitude decrease at a site,
  ``rules.recovery_consecutive`` valid qualifying stimuli of one source at the site with
  amplitude >= ``rules.recovery_pct`` % of that source's baseline (APS: the APS baseline;
  probe: the captured baseline, else the first good response at >= 1 mA; failing those,
  the first response). Detail: time since the loss, recovered conditions.
- No current (medium, technical): one event per run of consecutive stimuli of one output
  (PROBE / APS) whose current was not delivered as set; never counted as a LOS.
- Poor baseline (low, "check tube"): the first valid, qualifying V1-tagged stimulus of a
  side, or an APS baseline, below ``rules.poor_baseline_uV``.
- Non-recurrent nerve suspected (info): the first valid right vagal response with latency
  < ``rules.nonrecurrent_latency_ms``.
- Probe baselines (VAGUS, RLN per side): the first good response at >= 1 mA
  (``rules.los_min_current_mA``), or captured by the operator.
- Event time: end of the analysis window (stimulus onset + 50 ms) of the stimulus that
  completed the condition; ``stimulus_index`` is that stimulus's index.
"""

from app.rules.conditions import CONDITIONS, Facts, facts
from app.rules.engine import PRIORITY, SETTINGS_USED, RuleEngine, SnapshotError, StepRecord
from app.rules.machine import Machine, Row, RuleTableError
from app.rules.procedure import (
    Check,
    Conclusion,
    Finding,
    Procedure,
    ProcedureError,
)

__all__ = [
    "CONDITIONS",
    "PRIORITY",
    "SETTINGS_USED",
    "Check",
    "Conclusion",
    "Facts",
    "Finding",
    "Machine",
    "Procedure",
    "ProcedureError",
    "Row",
    "RuleEngine",
    "RuleTableError",
    "SnapshotError",
    "StepRecord",
    "facts",
]
