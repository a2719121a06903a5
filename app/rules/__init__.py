"""The INMSG rule engine and the procedure model.

Owns: the rules that turn measurements into clinical events (``RuleEngine``), one
documented, table-driven state machine per condition (``conditions``, ``machine``), the
baselines, and the INMSG procedure (``procedure``: steps, troubleshooting, mapping,
staging). Pure: no threads, clocks, files or sockets; the same code runs live in the
engine service and offline in ``lnm analyze``.
May import: the standard library, ``app.model`` and ``app.settings`` only.

Semantics (``shared/reference/clinical-rules.md``, "Precise semantics of the defaults";
every number is a setting: ``rules.*``, ``analysis.event_threshold_uV``,
``stim.delivered_tolerance_pct``):

- Rules run per nerve site and side (VAGUS-L, RLN-R, ...). ``UNTAGGED`` stimuli feed no
  rule at all. Invalid epochs and non-qualifying stimuli are skipped: they neither count
  nor break a run. A stimulus *qualifies* when its set current is >=
  ``rules.los_min_current_mA`` and its delivered current, where measured, is >= (100 -
  ``stim.delivered_tolerance_pct``) % of the set current.
- Loss of signal (high): after at least one valid response at the site, then
  ``rules.los_consecutive`` qualifying valid stimuli in a row without a response. Once
  per episode; a valid response at the site ends the episode. Loss and recovery watch
  VAGUS and RLN; EBSLN responses are tracked (``RuleEngine.ebsln``), never alarmed.
- APS baseline (info ``baseline_set``): means of the first ``rules.aps_baseline_count``
  valid, qualifying APS responses of a side, again after ``rebaseline``.
- Combined event (high) / amplitude decrease (medium, "check tube position"): APS only,
  after the baseline, on ``rules.combined_consecutive`` /
  ``rules.amplitude_decrease_consecutive`` consecutive valid qualifying APS stimuli.
  A no-response APS stimulus neither counts nor breaks these runs (no latency: it is the
  loss-of-signal's business). LOS may co-exist with either; a decrease escalates to a
  combined event, never the other way round (see ``conditions.ApsAmplitude``).
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
from app.rules.engine import PRIORITY, SETTINGS_USED, RuleEngine, SnapshotError
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
    "facts",
]
