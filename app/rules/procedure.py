"""The INMSG procedure model: steps, laryngoscopy, LOS troubleshooting, mapping, staging.

Owns: what the standard procedure (L1 - V1 - S1 - R1 - R2 - S2 - V2 - L2, plus R2P/R2D)
recorded per side, the planned sides and their order, the loss-of-signal troubleshooting
sequence and its conclusion, nerve mapping and its type 1 / type 2 classification, the
R2p/R2d reduction, and the staging recommendation after a confirmed, unrecovered loss on
the first side of a bilateral operation, with the surgeon's decision.
May import: the standard library and ``app.model``. Pure: no clock, no I/O; every
mutation takes the time (``t_s``, seconds of the case) from its caller. The whole state
is plain data: ``to_dict()`` is JSON-serialisable and ``Procedure.from_dict`` restores it.

Step values
    A measurement tagged with a step (``Stimulus.step``) is offered to the step of its
    side: among the valid tagged measurements, a response beats no response, and a larger
    amplitude beats a smaller one (the best contact shows the nerve's function; one weak
    touch must not hide it). ``count`` says how many tagged measurements were seen. An
    explicit operator capture ("tag this response as step X", ``how = "operator"``)
    replaces the value and is not replaced by later tagged stimuli until the operator
    clears or captures the step again.

Troubleshooting (one record per loss-of-signal episode of a side, opened by the rule
engine; later losses on the same side join the open record). Checks in INMSG order, each
answered "yes" / "no" (yes = this is fine / present), by the operator or the monitor:

    check               | question                                             | by monitor
    current_delivered   | is the current delivered as set (measured vs set)?   | yes when measured
    leads_ok            | probe, return and ground leads connected?            |
    field_dry           | is the field dry (fluid shunts current)?             |
    laryngeal_twitch    | laryngeal twitch palpable on stimulation?            |
    contralateral_vagus | does the contralateral vagus respond?                | yes on a response
    tube_position_ok    | tube depth and rotation correct (laryngoscope)?      |
    secretions_ok       | no saliva / secretions on the electrodes?            |
    nmb_ok              | train-of-four normal (no neuromuscular blockade)?    |
    nonrecurrent        | non-recurrent nerve suspected (right side)?          |

    Conclusion (first rule that applies):

    1. current_delivered, leads_ok or field_dry answered "no" -> ``stimulation_problem``:
       fix the stimulation and stimulate again (not a loss of signal).
    2. nmb_ok "no" -> ``neuromuscular_blockade`` (both sides depressed; wait, re-test).
    3. contralateral_vagus "no" -> ``system_fault_likely``: no response on the healthy
       side either points to the recording chain or to blockade, not to this nerve.
    4. laryngeal_twitch "yes" -> ``recording_problem_likely``: the nerve conducts and the
       muscle contracts, but the EMG does not show it (tube, electrodes, cables).
    5. tube_position_ok or secretions_ok "no" -> ``recording_problem_likely``.
    6. current_delivered "yes", laryngeal_twitch "no" and contralateral_vagus "yes" ->
       ``true_los``: confirmed; map the nerve (type 1 / type 2).
    7. otherwise ``open``, with the next unanswered check in INMSG order.

    The surgeon may override with a verdict (``true_los`` / ``not_true_los`` and a
    reason), which wins over rules 1-7 and is recorded. ``nonrecurrent_suspected`` is
    flagged on the right side when the operator says so or when V1 is absent on the right
    but present on the left.

Mapping (per side, of the side's RLN): while the side's loss is confirmed (``true_los``)
and not recovered, ``mapping_active`` is true and the rule engine takes probe stimuli of
that RLN as mapping (no loss, no recovery); the vagus of the side still recovers it.
Each point keeps its position (mm from the laryngeal entry, 0 = most distal), whether
the nerve responded, and the measured amplitude, latency, set and delivered current and
stimulus index of the last RLN probe stimulus since the loss that no earlier point took.
Type 1 (segmental): the lesion lies between the most proximal responding point and the
most distal silent point proximal to it (proximal to the most proximal responding point
when no silent point lies beyond it); it moves with every point. No responding point:
type 2 (global) when the contralateral vagus responds; with the contralateral vagus
silent, ``system_fault_suspected``; not tested, ``undetermined``. The result names the
RLN (``site``): the loss type belongs to the recurrent nerve, not to the vagus.

Steps after a loss of signal (clinical-rules.md): while a side's loss is open, the
stimuli given at R2 and V2 are documented as those steps, with "no response" and the
measured amplitude and current, never "not recorded": R2 is the RLN stimulus that
completed the loss; V2 the first valid, qualifying vagal stimulus of the side from the
loss on (replaced once by a later one that responds). The record offers each ("V2 can be
recorded from stimulus #12 (no response, 14 µV at 1.0 mA)") so that the operator can tag
it; a tagged or operator value is never replaced, and when the loss recovers the values
documented from it are withdrawn (they no longer describe the nerve).

Staging: while the plan is bilateral and the first planned side has a troubleshooting
record that is confirmed (conclusion or verdict ``true_los``) and not recovered, the
recommendation "consider postponing the second side" (INMSG 2018 Part I) is active. Its
start, the end of its basis (recovery, a changed verdict or plan) and the surgeon's
decision with the reason are kept in ``staging`` for the record.
"""

from __future__ import annotations

import copy
import enum
import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

from app.model import SIDES, Measurement, Side, Site, Step

FORMAT = "lnm-procedure/1"


# The enumerations keep the ``str`` mix-in of ``app.model`` (not ``StrEnum``, whose
# members print differently): their values are what the record and the API carry.
class Finding(str, enum.Enum):  # noqa: UP042
    """Laryngoscopy finding for one vocal fold (L1 before, L2 after surgery)."""

    NORMAL = "normal"
    PARESIS = "paresis"
    PALSY = "palsy"
    NOT_EXAMINED = "not_examined"


class Check(str, enum.Enum):  # noqa: UP042
    """A check of the loss-of-signal troubleshooting sequence (``CHECK_QUESTIONS``)."""

    CURRENT_DELIVERED = "current_delivered"
    LEADS_OK = "leads_ok"
    FIELD_DRY = "field_dry"
    LARYNGEAL_TWITCH = "laryngeal_twitch"
    CONTRALATERAL_VAGUS = "contralateral_vagus"
    TUBE_POSITION_OK = "tube_position_ok"
    SECRETIONS_OK = "secretions_ok"
    NMB_OK = "nmb_ok"
    NONRECURRENT = "nonrecurrent"


CHECK_QUESTIONS: dict[Check, str] = {
    Check.CURRENT_DELIVERED: "Is the current delivered as set (measured vs set)?",
    Check.LEADS_OK: "Are the probe, return and ground leads connected?",
    Check.FIELD_DRY: "Is the field dry (fluid shunts current)?",
    Check.LARYNGEAL_TWITCH: "Is a laryngeal twitch palpable on stimulation?",
    Check.CONTRALATERAL_VAGUS: "Does the contralateral vagus respond?",
    Check.TUBE_POSITION_OK: "Are tube depth and rotation correct (laryngoscope)?",
    Check.SECRETIONS_OK: "Are the electrodes free of saliva and secretions?",
    Check.NMB_OK: "Is the train-of-four normal (no neuromuscular blockade)?",
    Check.NONRECURRENT: "Is a non-recurrent laryngeal nerve suspected?",
}

# The INMSG order in which the next unanswered check is proposed (``nonrecurrent`` is
# asked only on the right side).
CHECK_ORDER: tuple[Check, ...] = (
    Check.CURRENT_DELIVERED,
    Check.LEADS_OK,
    Check.FIELD_DRY,
    Check.LARYNGEAL_TWITCH,
    Check.CONTRALATERAL_VAGUS,
    Check.TUBE_POSITION_OK,
    Check.SECRETIONS_OK,
    Check.NMB_OK,
    Check.NONRECURRENT,
)


class Conclusion(str, enum.Enum):  # noqa: UP042
    """What the troubleshooting answers (or the surgeon's verdict) conclude."""

    OPEN = "open"
    STIMULATION_PROBLEM = "stimulation_problem"
    NEUROMUSCULAR_BLOCKADE = "neuromuscular_blockade"
    SYSTEM_FAULT_LIKELY = "system_fault_likely"
    RECORDING_PROBLEM_LIKELY = "recording_problem_likely"
    TRUE_LOS = "true_los"
    NOT_TRUE_LOS = "not_true_los"  # surgeon's verdict only


CONCLUSION_MESSAGES: dict[Conclusion, str] = {
    Conclusion.OPEN: "Troubleshooting in progress.",
    Conclusion.STIMULATION_PROBLEM: (
        "Stimulation problem: current not delivered, a lead or a wet field. Fix it and stimulate again."
    ),
    Conclusion.NEUROMUSCULAR_BLOCKADE: (
        "Neuromuscular blockade: responses are depressed on both sides. Wait for train-of-four recovery."
    ),
    Conclusion.SYSTEM_FAULT_LIKELY: (
        "No response from the contralateral vagus either: system fault (recording chain) or blockade "
        "likely, not a nerve injury."
    ),
    Conclusion.RECORDING_PROBLEM_LIKELY: (
        "Recording problem likely: check tube depth and rotation, secretions, electrodes and cables."
    ),
    Conclusion.TRUE_LOS: ("True loss of signal: map the nerve from distal to proximal (type 1 / type 2). "
                          "Probe responses of this RLN are mapping now, not recovery: recovery is "
                          "judged on the vagus."),
    Conclusion.NOT_TRUE_LOS: "Not a true loss of signal (surgeon's verdict).",
}

STAGING_MESSAGE = (
    "Confirmed, unrecovered loss of signal on the first side of a bilateral operation: "
    "consider postponing the second side (INMSG 2018)."
)

STAGING_DECISIONS = ("postpone_second_side", "proceed_second_side")

# State keys added after the first format: a saved state without them is still read.
_ADDED_KEYS = ("rln_last",)

# Steps documented from the stimulation done after a loss of signal, and the site each
# belongs to.
AFTER_LOSS_STEPS = {"R2": "RLN", "V2": "VAGUS"}
_SIDE_WORD = {"L": "left", "R": "right"}

# Steps entered by hand (laryngoscopy) vs steps with a measured response.
LARYNGOSCOPY = ("L1", "L2")
ALL_STEPS = ("L1", "V1", "S1", "R1", "R2", "S2", "V2", "L2", "R2P", "R2D")


class ProcedureError(ValueError):
    """An operator action that cannot be applied; the message says why."""


def _yes_no(answer: Any) -> str:
    if isinstance(answer, bool):
        return "yes" if answer else "no"
    if isinstance(answer, str) and answer.strip().lower() in ("yes", "no"):
        return answer.strip().lower()
    raise ProcedureError(f"troubleshooting answer {answer!r}: must be yes or no")


def _side(side: Side | str) -> Side:
    try:
        return Side(side)
    except ValueError:
        raise ProcedureError(f"side {side!r}: must be L or R") from None


def _finite(x: float | None) -> float | None:
    return x if x is None or math.isfinite(x) else None


def _measurement_value(m: Measurement, response: bool, how: str) -> dict[str, Any]:
    s = m.stimulus
    return {
        "site": s.site.value,
        "source": s.source.value,
        "response": bool(response),
        "amplitude_uV": _finite(m.amplitude_uV),
        "latency_ms": _finite(m.latency_ms) if response else None,
        "onset_latency_ms": _finite(m.onset_latency_ms) if response else None,
        "set_mA": s.set_mA,
        "delivered_mA": _finite(s.delivered_mA),
        "pw_us": s.pw_us,
        "t_s": s.t_s,
        "stimulus_index": s.index,
        "how": how,
    }


def _stimulus_words(v: Mapping[str, Any]) -> str:
    """'no response, 14 µV at 1.0 mA' style summary of a step value or mapping point."""
    amp, lat = v.get("amplitude_uV"), v.get("latency_ms")
    what = "response" if v.get("response") else "no response"
    parts = [what]
    if amp is not None:
        parts.append(f"{amp:.0f} µV" + (f", {lat:.2f} ms" if v.get("response") and lat is not None else ""))
    text = ", ".join(parts)
    if v.get("set_mA") is not None:
        text += f" at {v['set_mA']:.1f} mA"
        if v.get("delivered_mA") is not None:
            text += f", {v['delivered_mA']:.2f} mA delivered"
    return text


def _offer_message(step: str, value: Mapping[str, Any]) -> str:
    return f"{step} can be recorded from stimulus #{value['stimulus_index']} ({_stimulus_words(value)})."


def _better(new: Mapping[str, Any], old: Mapping[str, Any]) -> bool:
    if new["response"] != old["response"]:
        return bool(new["response"])
    return (new["amplitude_uV"] or 0.0) > (old["amplitude_uV"] or 0.0)


class Procedure:
    """The INMSG procedure of one case. See the module docstring for the semantics."""

    def __init__(self) -> None:
        self._d: dict[str, Any] = {
            "format": FORMAT,
            "plan": None,  # {"sides": ["L", "R"], "t_s": ...}
            "steps": {"L": {}, "R": {}},  # side -> step -> value
            "laryngoscopy": {"L": {}, "R": {}},  # side -> "L1"/"L2" -> finding
            "troubleshooting": [],  # records, oldest first
            "mapping": {"L": [], "R": []},
            "staging": [],  # recommendation history
            # per side: the last valid RLN probe stimulus since the side's loss (a mapping
            # point entered by hand takes its measured values)
            "rln_last": {"L": None, "R": None},
        }

    # -- serialisation ----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = json.loads(json.dumps(self._d))
        return state

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Procedure:
        if not isinstance(data, Mapping) or data.get("format") != FORMAT:
            found = data.get("format") if isinstance(data, Mapping) else type(data).__name__
            raise ProcedureError(f"procedure state: format {found!r} is not {FORMAT!r}")
        p = cls()
        for key in p._d:
            if key not in data and key not in _ADDED_KEYS:
                raise ProcedureError(f"procedure state: missing {key!r}")
        added = {k: copy.deepcopy(p._d[k]) for k in _ADDED_KEYS}
        p._d = copy.deepcopy(dict(data))
        for key, value in added.items():
            p._d.setdefault(key, value)
        return p

    # -- plan -------------------------------------------------------------------------
    def set_plan(self, sides: Iterable[Side | str], t_s: float) -> None:
        """Planned sides in operating order: ``[L]``, ``[R]``, ``[L, R]`` or ``[R, L]``."""
        order = [_side(s).value for s in sides]
        if not order or len(order) > 2 or len(set(order)) != len(order):
            raise ProcedureError(f"planned sides {order}: give one side, or both sides in operating order")
        self._d["plan"] = {"sides": order, "t_s": t_s}
        self._update_staging(t_s, "plan changed")

    @property
    def planned_sides(self) -> list[Side]:
        plan = self._d["plan"]
        return [Side(s) for s in plan["sides"]] if plan else []

    @property
    def plan_kind(self) -> str | None:
        sides = self.planned_sides
        if not sides:
            return None
        if len(sides) == 2:
            return "bilateral"
        return "left" if sides[0] is Side.L else "right"

    # -- steps ------------------------------------------------------------------------
    def offer_tagged(self, m: Measurement, response: bool) -> bool:
        """A valid measurement tagged with a step; returns True when it became the value."""
        step = m.stimulus.step
        if step is None:
            return False
        side = m.stimulus.side.value
        new = _measurement_value(m, response, "tagged")
        old = self._d["steps"][side].get(step.value)
        if old is None:
            new["count"] = 1
            self._d["steps"][side][step.value] = new
            return True
        count = int(old.get("count", 0)) + 1
        if old["how"] == "operator" or (old["how"] != "after_loss" and not _better(new, old)):
            old["count"] = count
            return False
        new["count"] = count
        self._d["steps"][side][step.value] = new
        return True

    def capture_step(self, step: Step | str, m: Measurement, response: bool, t_s: float) -> dict[str, Any]:
        """The operator tags this measurement as ``step`` of its side."""
        try:
            step = Step(step)
        except ValueError:
            raise ProcedureError(f"step {step!r}: must be one of {', '.join(s.value for s in Step)}") from None
        side = m.stimulus.side.value
        old = self._d["steps"][side].get(step.value)
        value = _measurement_value(m, response, "operator")
        value["count"] = int(old.get("count", 0)) if old else 0
        value["captured_t_s"] = t_s
        self._d["steps"][side][step.value] = value
        return copy.deepcopy(value)

    def clear_step(self, side: Side | str, step: Step | str) -> None:
        self._d["steps"][_side(side).value].pop(Step(step).value, None)

    # -- steps documented after a loss of signal --------------------------------------
    def document_after_loss(self, step: Step | str, m: Measurement, response: bool,
                            measurement: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
        """A stimulus given at ``step`` (R2 or V2) while the side's loss of signal is open.

        The side's open troubleshooting record offers it to the operator ("V2 can be
        recorded from stimulus #12 (no response, 14 µV at 1.0 mA)"), and the step's value
        becomes it (``how = "after_loss"``) unless the step holds a tagged or an operator
        value: the step was done, with no response, and is documented so, never as "not
        recorded". The first such stimulus stays unless a later one responds and it did
        not. ``measurement`` (plain data) is kept with the offer so that the operator can
        tag exactly that stimulus. Returns the step's new value when it changed, else None.
        """
        step = Step(step)
        if step.value not in AFTER_LOSS_STEPS:
            raise ProcedureError(f"step {step.value}: only {', '.join(AFTER_LOSS_STEPS)} are documented after a loss")
        side = m.stimulus.side.value
        rec = self._open_record(side)
        if rec is None:
            return None
        value = _measurement_value(m, response, "after_loss")
        value["count"] = 1
        value["record_id"] = rec["id"]
        offers = rec.setdefault("offers", {})
        old_offer = offers.get(step.value)
        if old_offer is not None and not (value["response"] and not old_offer["response"]):
            return None
        offers[step.value] = {**value, "step": step.value, "message": _offer_message(step.value, value),
                              "measurement": copy.deepcopy(dict(measurement)) if measurement else None}
        old = self._d["steps"][side].get(step.value)
        if old is not None and old["how"] != "after_loss":
            return None
        self._d["steps"][side][step.value] = value
        return copy.deepcopy(value)

    def offer(self, side: Side | str, step: Step | str) -> dict[str, Any] | None:
        """The stimulus the side's open (else latest) troubleshooting record offers for
        ``step`` (with its ``measurement``), or None."""
        side = _side(side).value
        rec = self._open_record(side) or self._latest_record(side)
        offer = (rec or {}).get("offers", {}).get(Step(step).value)
        return copy.deepcopy(offer) if offer else None

    def _withdraw_after_loss(self, rec: Mapping[str, Any]) -> None:
        """The loss recovered: values documented from its stimulation no longer describe
        the nerve (the operator records the steps again, by tagging)."""
        steps = self._d["steps"][rec["side"]]
        for step in AFTER_LOSS_STEPS:
            value = steps.get(step)
            if value and value["how"] == "after_loss" and value.get("record_id") == rec["id"]:
                del steps[step]

    def step(self, side: Side | str, step: Step | str) -> dict[str, Any] | None:
        value = self._d["steps"][_side(side).value].get(Step(step).value)
        return copy.deepcopy(value) if value else None

    def set_laryngoscopy(self, phase: str, side: Side | str, finding: Finding | str, t_s: float,
                         note: str = "") -> None:
        if phase not in LARYNGOSCOPY:
            raise ProcedureError(f"laryngoscopy {phase!r}: must be L1 or L2")
        try:
            finding = Finding(finding)
        except ValueError:
            allowed = ", ".join(f.value for f in Finding)
            raise ProcedureError(f"laryngoscopy finding {finding!r}: must be one of {allowed}") from None
        self._d["laryngoscopy"][_side(side).value][phase] = {
            "finding": finding.value, "note": str(note), "t_s": t_s,
        }

    def laryngoscopy(self, phase: str, side: Side | str) -> dict[str, Any] | None:
        value = self._d["laryngoscopy"][_side(side).value].get(phase)
        return copy.deepcopy(value) if value else None

    def r2_reduction(self, side: Side | str, settings: Mapping[str, Any]) -> dict[str, Any] | None:
        """(R2D - R2P) / R2D in % with the advice from ``rules.r2_reduction_*_pct``."""
        steps = self._d["steps"][_side(side).value]
        p, d = steps.get("R2P"), steps.get("R2D")
        if not p or not d or not d.get("amplitude_uV") or d["amplitude_uV"] <= 0:
            return None
        r2p = float(p["amplitude_uV"] or 0.0) if p["response"] else 0.0
        r2d = float(d["amplitude_uV"])
        pct = (r2d - r2p) / r2d * 100.0
        map_pct = float(settings["rules.r2_reduction_map_pct"])
        palsy_pct = float(settings["rules.r2_reduction_palsy_pct"])
        if pct > palsy_pct:
            advice, message = "palsy_likely", (
                f"R2p is {pct:.0f} % below R2d (> {palsy_pct:g} %): palsy likely; map the nerve."
            )
        elif pct > map_pct:
            advice, message = "map", f"R2p is {pct:.0f} % below R2d (> {map_pct:g} %): map the nerve."
        else:
            advice, message = None, f"R2p is {pct:.0f} % below R2d."
        return {"r2p_uV": r2p, "r2d_uV": r2d, "reduction_pct": round(pct, 1), "advice": advice,
                "message": message}

    # -- troubleshooting --------------------------------------------------------------
    def _open_record(self, side: str) -> dict[str, Any] | None:
        records: list[dict[str, Any]] = self._d["troubleshooting"]
        for rec in records[::-1]:
            if rec["side"] == side and rec["recovered_t_s"] is None:
                return rec
        return None

    def _latest_record(self, side: str) -> dict[str, Any] | None:
        records: list[dict[str, Any]] = self._d["troubleshooting"]
        for rec in records[::-1]:
            if rec["side"] == side:
                return rec
        return None

    def on_loss(self, side: Side | str, site: Site | str, t_s: float, stimulus_index: int | None,
                current_measured: bool = False, continued: bool = False) -> dict[str, Any]:
        """The rule engine raised a loss of signal; opens or joins the side's record.

        ``continued``: the loss came back within ``rules.los_reentry_s`` of its episode's
        end; the episode goes on: the site keeps its onset, the interruption is listed,
        and a record that a recovery had closed is opened again."""
        side = _side(side).value
        site = Site(site).value
        rec = self._open_record(side)
        if rec is None and continued:
            latest = self._latest_record(side)
            if latest is not None and site in latest["sites"]:
                rec = latest
                rec["recovered_t_s"] = None
                rec.setdefault("reopened_t_s", []).append(t_s)
        entry = rec["sites"].get(site) if rec is not None else None
        if continued and rec is not None and entry is not None:
            entry["recovered_t_s"] = None
            entry.setdefault("continued", []).append({"t_s": t_s, "stimulus_index": stimulus_index})
            self._update_staging(t_s, "")
            return copy.deepcopy(rec)
        if rec is None:
            rec = {
                "id": len(self._d["troubleshooting"]) + 1,
                "side": side,
                "t_s": t_s,
                "stimulus_index": stimulus_index,
                "sites": {},
                "answers": {},
                "verdict": None,
                "recovered_t_s": None,
            }
            self._d["troubleshooting"].append(rec)
        rec["sites"][site] = {"t_s": t_s, "stimulus_index": stimulus_index, "recovered_t_s": None}
        if current_measured and Check.CURRENT_DELIVERED.value not in rec["answers"]:
            rec["answers"][Check.CURRENT_DELIVERED.value] = {
                "answer": "yes", "by": "monitor", "t_s": t_s,
                "note": "delivered current measured within tolerance on the stimuli that lost the signal",
            }
        self._update_staging(t_s, "")
        return copy.deepcopy(rec)

    def on_recovery(self, side: Side | str, site: Site | str, t_s: float) -> None:
        """The rule engine saw the signal recover at ``site``; the record closes when no
        site of the side is still lost."""
        side = _side(side).value
        rec = self._open_record(side)
        if rec is None:
            return
        entry = rec["sites"].get(Site(site).value)
        if entry is not None and entry["recovered_t_s"] is None:
            entry["recovered_t_s"] = t_s
        if all(e["recovered_t_s"] is not None for e in rec["sites"].values()):
            rec["recovered_t_s"] = t_s
            self._withdraw_after_loss(rec)
            self._d["rln_last"][side] = None
        self._update_staging(t_s, "recovered")

    def mapping_active(self, side: Side | str) -> bool:
        """True while ``side`` has a confirmed (true LOS), unrecovered loss of signal.

        Probe stimuli of that side's RLN are then mapping (distal to proximal), not
        monitoring: a response distal to a segmental injury says nothing about the nerve
        as a whole, so the rule engine neither recovers nor loses the site on them.
        """
        rec = self._open_record(_side(side).value)
        return rec is not None and self._conclude(rec)[0] is Conclusion.TRUE_LOS

    def note_contralateral_vagus(self, side: Side | str, t_s: float, amplitude_uV: float | None) -> bool:
        """A vagal response on the other side while ``side`` has an open record."""
        rec = self._open_record(_side(side).value)
        if rec is None or Check.CONTRALATERAL_VAGUS.value in rec["answers"]:
            return False
        note = "response measured" + (f" ({amplitude_uV:.0f} uV)" if amplitude_uV is not None else "")
        rec["answers"][Check.CONTRALATERAL_VAGUS.value] = {"answer": "yes", "by": "monitor", "t_s": t_s,
                                                           "note": note}
        self._update_staging(t_s, "")
        return True

    def answer(self, side: Side | str, check: Check | str, answer: Any, t_s: float, note: str = "",
               by: str = "operator") -> dict[str, Any]:
        """Record an answer of the open (else the latest) record of ``side``."""
        side = _side(side).value
        try:
            check = Check(check)
        except ValueError:
            allowed = ", ".join(c.value for c in Check)
            raise ProcedureError(f"troubleshooting check {check!r}: must be one of {allowed}") from None
        rec = self._open_record(side) or self._latest_record(side)
        if rec is None:
            raise ProcedureError(f"no loss of signal on side {side} to troubleshoot")
        rec["answers"][check.value] = {"answer": _yes_no(answer), "by": by, "t_s": t_s, "note": str(note)}
        self._update_staging(t_s, "verdict changed")
        return self.troubleshooting(side) or {}

    def set_verdict(self, side: Side | str, verdict: Conclusion | str, reason: str, t_s: float) -> None:
        """The surgeon's own verdict on the side's loss: ``true_los`` or ``not_true_los``."""
        side = _side(side).value
        verdict = Conclusion(verdict)
        if verdict not in (Conclusion.TRUE_LOS, Conclusion.NOT_TRUE_LOS):
            raise ProcedureError(f"verdict {verdict.value!r}: must be true_los or not_true_los")
        if not str(reason).strip():
            raise ProcedureError("verdict: a reason is required")
        rec = self._open_record(side) or self._latest_record(side)
        if rec is None:
            raise ProcedureError(f"no loss of signal on side {side} to judge")
        rec["verdict"] = {"verdict": verdict.value, "reason": str(reason), "t_s": t_s}
        self._update_staging(t_s, "verdict changed")

    def _nonrecurrent_suspected(self, rec: Mapping[str, Any]) -> bool:
        if rec["side"] != "R":
            return False
        ans = rec["answers"].get(Check.NONRECURRENT.value)
        if ans is not None:
            return bool(ans["answer"] == "yes")
        v1r, v1l = self._d["steps"]["R"].get("V1"), self._d["steps"]["L"].get("V1")
        return bool(v1r and not v1r["response"] and v1l and v1l["response"])

    def _conclude(self, rec: Mapping[str, Any]) -> tuple[Conclusion, Check | None, str]:
        a = {k: v["answer"] for k, v in rec["answers"].items()}
        if rec["verdict"] is not None:
            return Conclusion(rec["verdict"]["verdict"]), None, "surgeon"
        if any(a.get(c.value) == "no" for c in (Check.CURRENT_DELIVERED, Check.LEADS_OK, Check.FIELD_DRY)):
            return Conclusion.STIMULATION_PROBLEM, None, "checks"
        if a.get(Check.NMB_OK.value) == "no":
            return Conclusion.NEUROMUSCULAR_BLOCKADE, None, "checks"
        if a.get(Check.CONTRALATERAL_VAGUS.value) == "no":
            return Conclusion.SYSTEM_FAULT_LIKELY, None, "checks"
        if a.get(Check.LARYNGEAL_TWITCH.value) == "yes":
            return Conclusion.RECORDING_PROBLEM_LIKELY, None, "checks"
        if a.get(Check.TUBE_POSITION_OK.value) == "no" or a.get(Check.SECRETIONS_OK.value) == "no":
            return Conclusion.RECORDING_PROBLEM_LIKELY, None, "checks"
        if (
            a.get(Check.CURRENT_DELIVERED.value) == "yes"
            and a.get(Check.LARYNGEAL_TWITCH.value) == "no"
            and a.get(Check.CONTRALATERAL_VAGUS.value) == "yes"
        ):
            return Conclusion.TRUE_LOS, None, "checks"
        for c in CHECK_ORDER:
            if c is Check.NONRECURRENT and rec["side"] != "R":
                continue
            if c.value not in a:
                return Conclusion.OPEN, c, "checks"
        return Conclusion.OPEN, None, "checks"

    def troubleshooting(self, side: Side | str) -> dict[str, Any] | None:
        """The side's open (else latest) record with its conclusion and next check."""
        rec = self._open_record(_side(side).value) or self._latest_record(_side(side).value)
        if rec is None:
            return None
        return self._describe(rec)

    def _describe(self, rec: Mapping[str, Any]) -> dict[str, Any]:
        conclusion, nxt, by = self._conclude(rec)
        out = copy.deepcopy(dict(rec))
        message = CONCLUSION_MESSAGES[conclusion]
        if conclusion is Conclusion.OPEN and nxt is not None:
            message = f"{message} Next: {CHECK_QUESTIONS[nxt]}"
        out.update({
            "open": rec["recovered_t_s"] is None,
            "conclusion": conclusion.value,
            "concluded_by": by,
            "confirmed": conclusion is Conclusion.TRUE_LOS,
            "next_check": nxt.value if nxt else None,
            "next_question": CHECK_QUESTIONS[nxt] if nxt else None,
            "message": message,
            "nonrecurrent_suspected": self._nonrecurrent_suspected(rec),
            "offers": self._describe_offers(rec),
        })
        return out

    def _describe_offers(self, rec: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The steps this record offers to tag, R2 then V2, each with whether the step's
        value is that stimulus (``documented``) and how it was recorded."""
        out = []
        steps = self._d["steps"][rec["side"]]
        for step in AFTER_LOSS_STEPS:
            offer = rec.get("offers", {}).get(step)
            if not offer:
                continue
            value = steps.get(step) or {}
            item = {k: v for k, v in offer.items() if k != "measurement"}
            item["documented"] = value.get("stimulus_index") == offer["stimulus_index"]
            item["step_how"] = value.get("how")
            out.append(item)
        return out

    def records(self) -> list[dict[str, Any]]:
        return [self._describe(r) for r in self._d["troubleshooting"]]

    # -- mapping ----------------------------------------------------------------------
    def note_rln_stimulus(self, m: Measurement, response: bool) -> None:
        """A valid RLN probe stimulus while the side's loss of signal is open: the next
        mapping point entered by hand takes its measured values."""
        side = m.stimulus.side.value
        if self._open_record(side) is None:
            return
        value = _measurement_value(m, response, "mapping")
        value["used"] = False
        self._d["rln_last"][side] = value

    def add_mapping_point(self, side: Side | str, position_mm: float, response: bool | None, t_s: float,
                          amplitude_uV: float | None = None, label: str = "",
                          latency_ms: float | None = None, set_mA: float | None = None,
                          delivered_mA: float | None = None) -> dict[str, Any]:
        """A mapping point at ``position_mm`` from the laryngeal entry (0 = most distal).

        Without measured values given, the point takes those of the side's last RLN probe
        stimulus since the loss (``note_rln_stimulus``) that no earlier point took:
        amplitude, latency, set and delivered current, stimulus index. ``response`` None
        takes the measured verdict; a stated one that disagrees with the measurement is
        kept, with a note. Returns the side's mapping (``mapping``) with ``changed``: the
        classification or the lesion moved."""
        try:
            position = float(position_mm)
        except (TypeError, ValueError):
            raise ProcedureError(f"mapping position {position_mm!r}: must be a number of mm") from None
        if not position >= 0 or position == float("inf"):
            raise ProcedureError(f"mapping position {position_mm!r}: must be >= 0 mm from the laryngeal entry")
        side = _side(side).value
        before = self._lesion_key(self.mapping(side))
        point: dict[str, Any] = {
            "position_mm": position, "response": None, "t_s": t_s, "label": str(label),
            "amplitude_uV": _finite(amplitude_uV), "latency_ms": _finite(latency_ms), "set_mA": _finite(set_mA),
            "delivered_mA": _finite(delivered_mA), "stimulus_index": None, "measured": False,
            "measured_response": None, "note": "",
        }
        last = self._d["rln_last"][side]
        if amplitude_uV is None and last is not None and not last["used"]:
            last["used"] = True
            point.update(amplitude_uV=last["amplitude_uV"], latency_ms=last["latency_ms"], set_mA=last["set_mA"],
                         delivered_mA=last["delivered_mA"], stimulus_index=last["stimulus_index"], measured=True,
                         measured_response=bool(last["response"]), stimulus_t_s=last["t_s"])
        if response is None:
            if point["measured_response"] is None:
                raise ProcedureError(f"mapping point at {position:g} mm: no RLN stimulus measured since the loss; "
                                     "say whether the nerve responded")
            point["response"] = point["measured_response"]
        else:
            point["response"] = bool(response)
            if point["measured_response"] is not None and point["measured_response"] != point["response"]:
                said = "a response" if point["response"] else "no response"
                point["note"] = (f"entered as {said}; the monitor measured "
                                 f"{_stimulus_words({**point, 'response': point['measured_response']})}")
        self._d["mapping"][side].append(point)
        out = self.mapping(side)
        out["changed"] = self._lesion_key(out) != before
        return out

    @staticmethod
    def _lesion_key(mapping: Mapping[str, Any]) -> tuple[Any, ...]:
        return (mapping["classification"], mapping["lesion_between_mm"], mapping["lesion_proximal_to_mm"])

    def clear_mapping(self, side: Side | str) -> None:
        self._d["mapping"][_side(side).value] = []

    def mapping(self, side: Side | str) -> dict[str, Any]:
        """Type 1 (segmental) / type 2 (global) from the side's mapping points, for the
        side's RLN (``site`` RLN: the loss type belongs to the recurrent nerve).

        Type 1: the lesion lies between the most proximal responding point and the most
        distal silent point proximal to it (a response proves conduction from that point
        to the larynx, so a silent point distal to it is a contact problem, listed in
        ``silent_distal_mm``); with no silent point proximal to it, proximal to it.
        Type 2: no point responds (with the contralateral vagus responding; silent too: a
        system fault is suspected; not tested: undetermined)."""
        side = _side(side).value
        points = sorted(self._d["mapping"][side], key=lambda p: (p["position_mm"], p["t_s"]))
        nerve = f"the {_SIDE_WORD[side]} RLN"
        out: dict[str, Any] = {"side": side, "site": Site.RLN.value, "points": copy.deepcopy(points), "type": None,
                               "classification": "not_mapped", "lesion_between_mm": None,
                               "lesion_proximal_to_mm": None, "silent_distal_mm": [],
                               "message": "Not mapped."}
        if not points:
            return out
        responding = [p["position_mm"] for p in points if p["response"]]
        if responding:
            proximal_ok = max(responding)
            silent = [p["position_mm"] for p in points if not p["response"] and p["position_mm"] > proximal_ok]
            out["silent_distal_mm"] = sorted({p["position_mm"] for p in points
                                              if not p["response"] and p["position_mm"] < proximal_ok})
            if silent:
                first_silent = min(silent)
                out["lesion_between_mm"] = [proximal_ok, first_silent]
                where = (f"the nerve responds up to {proximal_ok:g} mm from the laryngeal entry and is silent at "
                         f"{first_silent:g} mm, so the lesion lies between {proximal_ok:g} and {first_silent:g} mm.")
            else:
                out["lesion_proximal_to_mm"] = proximal_ok
                where = (f"the nerve responds up to {proximal_ok:g} mm from the laryngeal entry, the most proximal "
                         f"point mapped, so the lesion lies proximal to {proximal_ok:g} mm.")
            message = f"Type 1 (segmental) injury of {nerve}: {where}"
            if out["silent_distal_mm"]:
                at = ", ".join(f"{x:g}" for x in out["silent_distal_mm"])
                message += f" Silent at {at} mm, distal to a responding point: a contact problem; re-test."
            out.update(type=1, classification="type_1", message=message)
            return out
        rec = self._latest_record(side)
        contra = rec["answers"].get(Check.CONTRALATERAL_VAGUS.value, {}).get("answer") if rec else None
        if contra == "yes":
            out.update(type=2, classification="type_2",
                       message=f"Type 2 (global) injury of {nerve}: no response at any mapped point; "
                               "the contralateral vagus responds.")
        elif contra == "no":
            out.update(classification="system_fault_suspected",
                       message=f"No response at any mapped point of {nerve}, and the contralateral vagus is "
                               "silent too: suspect a system fault.")
        else:
            out.update(classification="undetermined",
                       message=f"No response at any mapped point of {nerve}: stimulate the contralateral vagus "
                               "to tell a type 2 (global) injury from a system fault.")
        return out

    # -- staging ----------------------------------------------------------------------
    def _staging_basis(self) -> dict[str, Any] | None:
        sides = self.planned_sides
        if len(sides) != 2:
            return None
        first = sides[0].value
        rec = self._open_record(first)
        if rec is None:
            return None
        conclusion, _, _ = self._conclude(rec)
        if conclusion is not Conclusion.TRUE_LOS:
            return None
        return rec

    def _update_staging(self, t_s: float, reason: str) -> None:
        basis = self._staging_basis()
        active = self._active_staging()
        if active is not None and (basis is None or basis["id"] != active["record_id"]):
            active["basis_ended_t_s"] = t_s
            rec = next((r for r in self._d["troubleshooting"] if r["id"] == active["record_id"]), None)
            if rec is not None and rec["recovered_t_s"] is not None:
                active["basis_end_reason"] = "recovered"
            else:
                active["basis_end_reason"] = reason or "basis changed"
            active = None
        if basis is not None and active is None:
            self._d["staging"].append({
                "id": len(self._d["staging"]) + 1,
                "record_id": basis["id"],
                "side": basis["side"],
                "second_side": self.planned_sides[1].value,
                "since_t_s": t_s,
                "message": STAGING_MESSAGE,
                "basis_ended_t_s": None,
                "basis_end_reason": None,
                "decision": None,
            })

    def _active_staging(self) -> dict[str, Any] | None:
        staging: list[dict[str, Any]] = self._d["staging"]
        for entry in staging[::-1]:
            if entry["basis_ended_t_s"] is None:
                return entry
        return None

    def staging_recommendation(self) -> dict[str, Any] | None:
        """The active recommendation (None when its basis does not hold)."""
        active = self._active_staging()
        return copy.deepcopy(active) if active else None

    def staging_history(self) -> list[dict[str, Any]]:
        return copy.deepcopy(self._d["staging"])

    def decide_staging(self, decision: str, reason: str, t_s: float) -> dict[str, Any]:
        """The surgeon's decision on the latest recommendation, with its reason."""
        if decision not in STAGING_DECISIONS:
            raise ProcedureError(f"staging decision {decision!r}: must be one of {', '.join(STAGING_DECISIONS)}")
        if not str(reason).strip():
            raise ProcedureError("staging decision: a reason is required")
        if not self._d["staging"]:
            raise ProcedureError("staging decision: there is no staging recommendation")
        entry = self._d["staging"][-1]
        entry["decision"] = {"decision": decision, "reason": str(reason), "t_s": t_s}
        return copy.deepcopy(entry)

    # -- summary ----------------------------------------------------------------------
    def summary(self, settings: Mapping[str, Any]) -> dict[str, Any]:
        """Per side: steps, laryngoscopy, V2/V1 ratio, R2 reduction, mapping, troubleshooting."""
        sides: dict[str, Any] = {}
        for side in SIDES:
            steps = copy.deepcopy(self._d["steps"][side])
            v1, v2 = steps.get("V1"), steps.get("V2")
            ratio = None
            if v1 and v2 and v1["response"] and v1["amplitude_uV"]:
                ratio = round((v2["amplitude_uV"] or 0.0) / v1["amplitude_uV"] * 100.0 if v2["response"] else 0.0, 1)
            sides[side] = {
                "steps": steps,
                "laryngoscopy": copy.deepcopy(self._d["laryngoscopy"][side]),
                "v2_of_v1_pct": ratio,
                "r2_reduction": self.r2_reduction(side, settings),
                "mapping": self.mapping(side),
                "troubleshooting": [self._describe(r) for r in self._d["troubleshooting"] if r["side"] == side],
            }
        return {
            "plan": copy.deepcopy(self._d["plan"]),
            "plan_kind": self.plan_kind,
            "sides": sides,
            "staging": self.staging_history(),
            "staging_active": self.staging_recommendation(),
        }
