"""The kinds of case-journal entries and the schema of their payloads.

Owns: ``KINDS`` (every entry kind, what it records, its payload fields), payload
validation, the canonical JSON encoding that the hash chain covers, and small helper
constructors the engine uses to build payloads.
May import: the standard library, numpy, ``app.model``, ``app.settings``,
``app.record.waveform``.

Every entry is ``(seq, case_id, kind, t_s, wall, payload, blob)``: ``t_s`` is monotonic
case time in seconds, ``wall`` the UTC wall time (ISO-8601, ``Z``), ``payload`` a JSON
object whose fields depend on the kind, ``blob`` optional bytes (waveforms, see
``waveform.py``). Sides are ``"L"``/``"R"``, sites and sources as in ``app.model``.
``who`` is the role or pseudonymous operator code that did something (``"surgeon"``,
``"nurse"``, ``"system"``...).

=================  ========================================================================
kind               payload (required fields first; ``?`` optional)
=================  ========================================================================
case_opened        patient_id, planned_sides [L/R], software_version, date? (YYYY-MM-DD),
                   surgeon?, procedure?, tube? {type, size_mm, depth_cm}, anaesthesia?
                   {relaxant, relaxant_time (HH:MM), tof_count (0-4), tof_ratio_pct} (null
                   when not given; ``case.update`` operator entries change them later),
                   operator?, board? {firmware_version, board_id, simulated}, format
                   ("lnm-journal/1")
settings           values {every "group.name": value}, source?, profile?
setting_changed    key, old, new, unit?, who?, source?; for a protected limit
                   (``app.engine.limits``) default?, relaxed? (beyond its default),
                   confirmed?, why? (["relaxes", "alarm_active"])
tube_check         impedances_ohm {electrode: ohm, -1 = lead off}, passed, imbalance_ohm?
                   {L, R}, lead_off? [electrode], breathing_variation? {L: side, R: side} (side:
                   ``app.analysis.breathing.SideBreathing.to_json``, {status: "measuring", ...}
                   while its window runs, or a bare bool in older records),
                   limits? {max_impedance_kohm, max_imbalance_kohm}, override? {who, reason},
                   message?
stimulus           ``Measurement.to_json()`` (index, t_s, site, side, source, set_mA,
                   delivered_mA, pw_us, step, channel, valid, invalid_reason, response,
                   amplitude_uV, latency_ms, onset_latency_ms), threshold_uV?, waveform?
                   {encoding, dtype, res_uV, channels, n, clipped, sample_rate_hz, pre_samples,
                   labels}; blob = the epoch (``waveform.encode``: ``flac/1``, or
                   ``delta-zlib/1`` in older records) when waveform is present;
                   or, instead of waveform and blob, waveform_in_stream {first_sample, n,
                   sample_rate_hz, pre_samples, labels, res_uV}: the epoch is those samples
                   of the free-running EMG stored in this case's ``emg_block`` entries (the
                   engine checked they are the epoch's own samples), or, when the stream did
                   not keep them, the case's ``stimulus_waveform`` entry of the same index
stimulus_waveform  index, t_s, waveform {as a stimulus}; blob = the epoch: a stimulus whose
                   waveform_in_stream the stream did not keep (a gap, storage nearly full)
emg_block          t_s (case time of the first sample), first_sample, sample_rate_hz, labels
                   ["EMG L", "EMG R"], waveform {encoding, dtype, res_uV, channels, n, clipped};
                   blob = the samples. Free-running EMG, consecutive chunks (about 1 s).
irritation         side, onset_s, duration_s, peak_uV, channel?, kind? ("burst", "train",
                   "spike"), rms_uV?
cautery            state ("start"/"end"), side?, onset_s?, duration_s?
rule_event         ``RuleEvent.to_json()``: t_s, kind, side, site, priority,
                   stimulus_index, detail
step               side, step (V1 S1 R1 R2 S2 V2 R2P R2D), stimulus_index?, amplitude_uV?,
                   latency_ms?, onset_latency_ms?, set_mA?, delivered_mA?, pw_us?,
                   stimulus_t_s?, response?, who?, comment?
laryngoscopy       step ("L1"/"L2"), then side + finding, or left + right (each "normal",
                   "paresis", "palsy", "not_examined"; "reduced", "immobile",
                   "not_assessed" accepted), who?, comment?
alarm              the alarm manager's ``LogEntry.to_json()``: transition ("raised",
                   "acknowledged", "cleared", "condition_ended", "reset", "escalated",
                   "audio_paused", ...), alarm_id? ("loss_of_signal:VAGUS-L"; null for audio
                   transitions), kind?, priority?, who?, t?, detail?; side?, site?,
                   event_kind?, message? may be given directly
operator           action, who?, detail?
troubleshooting    check, answer, side?, question?, who?
mapping            side, position_mm (from the laryngeal entry, 0 = most distal), response,
                   amplitude_uV?, who?
procedure          state (``Procedure.to_dict()``), summary? (``Procedure.summary()``)
los_type           side, los_type (1 segmental, 2 global), who?, detail?
staging            recommendation, decision? ("proceed_second_side", "postpone_second_side",
                   null while undecided), reason?, who?, side?
note               text, who?
reader_message     event ("received", "acknowledged"), id, reader (station user), from?
                   (the reader's name), text?, kind? ("message", "interpretation"), sent_at?,
                   received_at?, who? (who acknowledged it at the OR), acknowledged_at?. A
                   remote reader's message to the OR (``app.engine.inbox``) and the OR's
                   acknowledgement.
snapshot           label?, who?, stimulus_index?
link               event ("connected", "lost", "reconnected", "board_fault", "invalid_data",
                   "data_valid", "incompatible", "board_accepted", "board_restarted",
                   "data_missing", "data_missing_ended", "health" (the link's counters when
                   a case opens, every minute and when it closes), ...), detail?
engine             event ("started", "resumed", "fault", "stopped", ...), detail?, version?
storage            event ("problem", "recovered", "rescued", "low_space"), message?, queued?,
                   dropped?; low_space: free_bytes, hours_left, bytes_per_hour, min_hours
case_closed        reason?, who?, summary?
=================  ========================================================================

Unknown payload fields are kept (and hashed); missing required fields or values of the
wrong type are refused with a ``ValueError`` naming the kind and the field.
"""

from __future__ import annotations

import enum
import functools
import json
import math
from dataclasses import dataclass, field
from typing import Any
from collections.abc import Mapping

import numpy as np

from app.model import CHANNEL_LABELS, SIDES, SITES, SOURCES, STEPS, Measurement, RuleEvent
from app.record import waveform as _wf
from firmware_bridge.fields import Field, FieldError

NUM = (int, float)
NONE = type(None)

STIM_STEPS = STEPS  # the steps that carry a measurement
LARYNGOSCOPY_STEPS = ("L1", "L2")
FOLD_FINDINGS = ("normal", "paresis", "palsy", "not_examined", "reduced", "immobile", "not_assessed")
PROCEDURE_ORDER = ("L1", "V1", "S1", "R1", "R2", "R2P", "R2D", "S2", "V2", "L2")


@dataclass(frozen=True)
class Kind:
    """One entry kind: its payload fields (required, optional, allowed values) and blob rule."""

    name: str
    doc: str
    required: Mapping[str, tuple[type, ...]]
    optional: Mapping[str, tuple[type, ...]] = field(default_factory=dict)
    choices: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    blob: str = "none"  # "none", "optional", "with_waveform" (blob iff payload has waveform)

    @functools.cached_property
    def fields(self) -> dict[str, Field]:
        """Each payload field as a field specification (payloads are stored as given: exact)."""
        out = {}
        for name, types in {**self.optional, **self.required}.items():
            allowed = self.choices.get(name)
            out[name] = Field(name, _field_kind(types), nullable=NONE in types,
                              choices=None if allowed is None else tuple(a for a in allowed if a is not None),
                              accept="exact", finite=False)
        return out


# Python types of the payload table -> field kinds (int and float: a number; NONE: null allowed)
_KIND_OF = {str: "str", int: "int", float: "number", bool: "bool", dict: "object", list: "list", object: "any"}
_TYPE_NAME = {"str": "str", "int": "int", "number": "int/float", "bool": "bool", "object": "dict", "list": "list",
              "any": "anything"}


def _field_kind(types: tuple[type, ...]) -> str:
    kinds = [_KIND_OF[t] for t in types if t is not NONE and not (t is int and float in types)]
    return "|".join(kinds) or "any"


def _k(name: str, doc: str, required: dict, optional: dict | None = None, choices: dict | None = None,
       blob: str = "none") -> Kind:
    return Kind(name, doc, required, optional or {}, choices or {}, blob)


_SIDE = {"side": SIDES}
KINDS: dict[str, Kind] = {
    k.name: k
    for k in [
        _k("case_opened", "case data at the start of a case",
           {"patient_id": (str,), "planned_sides": (list,), "software_version": (str,)},
           {"date": (str,), "surgeon": (str, NONE), "procedure": (str, NONE), "tube": (dict, NONE),
            "anaesthesia": (dict, NONE), "operator": (str, NONE), "board": (dict, NONE), "format": (str,)}),
        _k("settings", "the full settings in force", {"values": (dict,)},
           {"source": (str, NONE), "profile": (str, NONE)}),
        _k("setting_changed", "one setting changed", {"key": (str,), "old": (object,), "new": (object,)},
           {"unit": (str,), "who": (str, NONE), "source": (str, NONE)}),
        _k("tube_check", "electrode impedances and tube placement check",
           {"impedances_ohm": (dict,), "passed": (bool,)},
           {"imbalance_ohm": (dict,), "lead_off": (list,), "breathing_variation": (dict, bool, NONE),
            "limits": (dict,), "override": (dict, NONE), "message": (str, NONE), "who": (str, NONE)}),
        _k("stimulus", "one stimulus, its measurement and its epoch",
           {"index": (int,), "t_s": NUM, "site": (str,), "side": (str,), "source": (str,),
            "set_mA": NUM, "delivered_mA": NUM + (NONE,), "valid": (bool,), "response": (bool,),
            "amplitude_uV": NUM + (NONE,), "latency_ms": NUM + (NONE,)},
           {"pw_us": (int,), "step": (str, NONE), "channel": (str, NONE), "invalid_reason": (str, NONE),
            "onset_latency_ms": NUM + (NONE,), "threshold_uV": NUM + (NONE,), "waveform": (dict,),
            "waveform_in_stream": (dict,)},
           {"site": SITES, "side": SIDES, "source": SOURCES, "step": STIM_STEPS + (None,)},
           blob="with_waveform"),
        _k("stimulus_waveform", "the epoch of a stimulus that the stored stream did not keep",
           {"index": (int,), "t_s": NUM, "waveform": (dict,)}, blob="with_waveform"),
        _k("emg_block", "a chunk of the free-running EMG stream",
           {"t_s": NUM, "first_sample": (int,), "sample_rate_hz": NUM, "labels": (list,), "waveform": (dict,)},
           blob="with_waveform"),
        _k("irritation", "a free-running EMG episode (irritation)",
           {"side": (str,), "onset_s": NUM, "duration_s": NUM, "peak_uV": NUM},
           {"channel": (str, NONE), "kind": (str, NONE), "rms_uV": NUM + (NONE,)}, _SIDE),
        _k("cautery", "electrocautery detected", {"state": (str,)},
           {"side": (str, NONE), "onset_s": NUM, "duration_s": NUM + (NONE,)}, {"state": ("start", "end")}),
        _k("rule_event", "an event the rules recognised (RuleEvent.to_json())",
           {"t_s": NUM, "kind": (str,), "side": (str,), "site": (str,), "priority": (str,),
            "stimulus_index": (int, NONE)}, {"detail": (dict,)}, {"side": SIDES, "site": SITES}),
        _k("step", "an INMSG procedure step and its values", {"side": (str,), "step": (str,)},
           {"stimulus_index": (int, NONE), "amplitude_uV": NUM + (NONE,), "latency_ms": NUM + (NONE,),
            "onset_latency_ms": NUM + (NONE,), "set_mA": NUM + (NONE,), "delivered_mA": NUM + (NONE,),
            "pw_us": (int, NONE), "stimulus_t_s": NUM + (NONE,), "response": (bool, NONE),
            "who": (str, NONE), "comment": (str, NONE)},
           {"side": SIDES, "step": STIM_STEPS}),
        _k("laryngoscopy", "L1/L2 vocal fold findings", {"step": (str,)},
           {"side": (str, NONE), "finding": (str, NONE), "left": (str, NONE), "right": (str, NONE),
            "who": (str, NONE), "comment": (str, NONE)},
           {"step": LARYNGOSCOPY_STEPS, "side": SIDES + (None,), "finding": FOLD_FINDINGS + (None,),
            "left": FOLD_FINDINGS + (None,), "right": FOLD_FINDINGS + (None,)}),
        _k("alarm", "an alarm log transition (the alarm manager's LogEntry.to_json())", {"transition": (str,)},
           {"alarm_id": (str, NONE), "alarm": (str, NONE), "kind": (str, NONE), "priority": (str, NONE),
            "side": (str, NONE), "site": (str, NONE), "event_kind": (str, NONE), "message": (str, NONE),
            "who": (str, NONE), "t": NUM, "detail": (dict, NONE)}),
        _k("operator", "any operator action", {"action": (str,)}, {"who": (str, NONE), "detail": (object,)}),
        _k("troubleshooting", "an INMSG troubleshooting check and its answer",
           {"check": (str,), "answer": (str,)},
           {"side": (str, NONE), "question": (str, NONE), "who": (str, NONE)}),
        _k("mapping", "one nerve mapping point", {"side": (str,), "position_mm": NUM, "response": (bool,)},
           {"amplitude_uV": NUM + (NONE,), "who": (str, NONE)}, _SIDE),
        _k("procedure", "the procedure model's state (for resume and the record)", {"state": (dict,)},
           {"summary": (dict, NONE)}),
        _k("los_type", "the loss-of-signal type after mapping", {"side": (str,), "los_type": (int,)},
           {"who": (str, NONE), "detail": (object,)}, {"side": SIDES, "los_type": (1, 2)}),
        _k("staging", "staging recommendation and the surgeon's decision", {"recommendation": (str,)},
           {"decision": (str, NONE), "reason": (str, NONE), "who": (str, NONE), "side": (str, NONE)}),
        _k("note", "a free-text note", {"text": (str,)}, {"who": (str, NONE)}),
        _k("reader_message", "a remote reader's message to the OR, or its acknowledgement",
           {"event": (str,), "id": (str,), "reader": (str,)},
           {"from": (str, NONE), "text": (str, NONE), "kind": (str, NONE), "sent_at": (str, NONE),
            "received_at": (str, NONE), "who": (str, NONE), "acknowledged_at": (str, NONE)},
           {"event": ("received", "acknowledged"), "kind": ("message", "interpretation", None)}),
        _k("snapshot", "an operator mark", {},
           {"label": (str, NONE), "who": (str, NONE), "stimulus_index": (int, NONE)}),
        _k("link", "board link events", {"event": (str,)}, {"detail": (object,)}),
        _k("engine", "engine life cycle", {"event": (str,)}, {"detail": (object,), "version": (str, NONE)}),
        _k("storage", "storage problems and recovery (written by the journal)", {"event": (str,)},
           {"message": (str, NONE), "queued": (int,), "dropped": (dict,), "since": (str, NONE), "path": (str,)}),
        _k("case_closed", "the case ended", {}, {"reason": (str, NONE), "who": (str, NONE), "summary": (object,)}),
    ]
}


def validate(kind: str, payload: Mapping[str, Any], blob: bytes | None = None) -> None:
    """Refuse a payload that does not follow ``KINDS[kind]`` (``ValueError``)."""
    spec = KINDS.get(kind)
    if spec is None:
        raise ValueError(f"unknown journal entry kind {kind!r}; known: {', '.join(KINDS)}")
    if not isinstance(payload, Mapping):
        raise ValueError(f"journal entry {kind}: payload must be a JSON object, got {type(payload).__name__}")
    fields = spec.fields
    for name in (*spec.required, *spec.optional):
        if name in payload:
            _check_field(kind, fields[name], payload[name], spec.choices.get(name, ()))
        elif name in spec.required:
            raise ValueError(f"journal entry {kind}: required field {name!r} is missing")
    if spec.blob == "with_waveform":
        has_wave = "waveform" in payload
        if has_wave and blob is None:
            raise ValueError(f"journal entry {kind}: has waveform metadata but no blob")
        if blob is not None and not has_wave:
            raise ValueError(f"journal entry {kind}: has a blob but no waveform metadata")
    elif spec.blob == "none" and blob is not None:
        raise ValueError(f"journal entry {kind}: takes no blob")


def _check_field(kind: str, spec: Field, value: Any, allowed: tuple[Any, ...]) -> None:
    """``value`` of field ``spec`` of an entry of ``kind``, or ``ValueError`` naming both."""
    try:
        spec.check(value)
    except FieldError as exc:
        if exc.reason == "choice":
            raise ValueError(f"journal entry {kind}: field {spec.name!r} is {value!r}; allowed: "
                             + ", ".join(repr(a) for a in allowed)) from None
        names = "/".join([_TYPE_NAME[k] for k in spec.kind.split("|")] + (["null"] if spec.nullable else []))
        raise ValueError(f"journal entry {kind}: field {spec.name!r} must be {names}, got {value!r}") from None


# ----------------------------------------------------------------------------- canonical JSON


def _default(obj: Any) -> Any:
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"cannot store a {type(obj).__name__} in the journal: {obj!r}")


def _clean(obj: Any) -> Any:
    """NaN/inf -> None (JSON has no such numbers); tuples -> lists; keys -> str."""
    kind = type(obj)
    if kind is str or kind is int or kind is bool or obj is None:  # (most values: at once)
        return obj
    if kind is dict:
        return {k if type(k) is str else str(k.value if isinstance(k, enum.Enum) else k): _clean(v)
                for k, v in obj.items()}
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, np.floating):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, Mapping):
        return {str(k.value if isinstance(k, enum.Enum) else k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def canonical_json(obj: Any) -> str:
    """One text for one value: sorted keys, no spaces, ASCII only, no NaN."""
    return json.dumps(_clean(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False, default=_default)


def normalise(payload: Mapping[str, Any]) -> dict[str, Any]:
    """The payload exactly as it will be stored and read back."""
    return json.loads(canonical_json(payload))


# ----------------------------------------------------------------------------- constructors


def stimulus(measurement: Measurement, epoch_uV: np.ndarray | None = None, sample_rate_hz: float | None = None,
             pre_samples: int | None = None, labels: list[str] | None = None,
             res_uV: float = _wf.DEFAULT_RES_UV, threshold_uV: float | None = None,
             codec: str = "auto") -> tuple[dict[str, Any], bytes | None]:
    """Payload and blob of a ``stimulus`` entry. ``epoch_uV`` is ``(channels, n)`` or 1-D;
    ``codec`` as in ``waveform.encode``."""
    payload = measurement.to_json()
    if threshold_uV is not None:
        payload["threshold_uV"] = float(threshold_uV)
    if epoch_uV is None:
        return payload, None
    if sample_rate_hz is None or pre_samples is None:
        raise ValueError("a stimulus waveform needs sample_rate_hz and pre_samples")
    meta, blob = _wf.encode(epoch_uV, res_uV, codec=codec)
    meta.update(sample_rate_hz=float(sample_rate_hz), pre_samples=int(pre_samples))
    if labels is None:
        labels = list(CHANNEL_LABELS) if meta["channels"] == len(CHANNEL_LABELS) else [measurement.channel or ""]
    meta["labels"] = list(labels)
    payload["waveform"] = meta
    return payload, blob


def in_stream(first_sample: int, n: int, sample_rate_hz: float, pre_samples: int, labels: list[str] | tuple[str, ...],
              res_uV: float = _wf.DEFAULT_RES_UV) -> dict[str, Any]:
    """A stimulus's ``waveform_in_stream``: its epoch is stream samples ``first_sample`` .. +``n``."""
    return {"first_sample": int(first_sample), "n": int(n), "sample_rate_hz": float(sample_rate_hz),
            "pre_samples": int(pre_samples), "labels": list(labels), "res_uV": float(res_uV)}


def stimulus_waveform(index: int, t_s: float, epoch_uV: np.ndarray, sample_rate_hz: float, pre_samples: int,
                      labels: list[str] | tuple[str, ...], res_uV: float = _wf.DEFAULT_RES_UV,
                      codec: str = "auto") -> tuple[dict[str, Any], bytes]:
    """Payload and blob of a ``stimulus_waveform`` entry (the epoch the stream did not keep)."""
    meta, blob = _wf.encode(epoch_uV, res_uV, codec=codec)
    meta.update(sample_rate_hz=float(sample_rate_hz), pre_samples=int(pre_samples), labels=list(labels))
    return {"index": int(index), "t_s": float(t_s), "waveform": meta}, blob


def emg_block(t_s: float, first_sample: int, sample_rate_hz: float, samples_uV: np.ndarray,
              labels: list[str] | tuple[str, ...] = CHANNEL_LABELS,
              res_uV: float = _wf.DEFAULT_RES_UV, codec: str = "auto") -> tuple[dict[str, Any], bytes]:
    """Payload and blob of an ``emg_block`` entry (``samples_uV``: ``(channels, n)``)."""
    meta, blob = _wf.encode(samples_uV, res_uV, codec=codec)
    if meta["channels"] != len(labels):
        raise ValueError(f"emg_block: {meta['channels']} channels but {len(labels)} labels")
    return {"t_s": float(t_s), "first_sample": int(first_sample), "sample_rate_hz": float(sample_rate_hz),
            "labels": list(labels), "waveform": meta}, blob


def rule_event(event: RuleEvent) -> dict[str, Any]:
    """A ``rule_event`` payload."""
    return event.to_json()


def settings(values: Mapping[str, Any], source: str | None = None, profile: str | None = None) -> dict[str, Any]:
    """Full settings (a ``Settings`` or any mapping of ``group.name`` -> value)."""
    return {"values": dict(values), "source": source, "profile": profile}


def setting_changed(key: str, old: Any, new: Any, who: str | None = None) -> dict[str, Any]:
    """A ``setting_changed`` payload (with the setting's unit)."""
    from app.settings import SCHEMA

    unit = SCHEMA[key].unit if key in SCHEMA else ""
    return {"key": key, "old": old, "new": new, "unit": unit, "who": who}


def step(side: str, step_name: str, measurement: Measurement | None = None, who: str | None = None,
         comment: str | None = None) -> dict[str, Any]:
    """A ``step`` payload; the values come from the measurement that documents the step."""
    p: dict[str, Any] = {"side": _v(side), "step": _v(step_name), "who": who}
    if comment:
        p["comment"] = comment
    if measurement is not None:
        s = measurement.stimulus
        p.update(stimulus_index=s.index, stimulus_t_s=round(s.t_s, 6), set_mA=s.set_mA,
                 delivered_mA=s.delivered_mA, pw_us=s.pw_us, response=measurement.response,
                 amplitude_uV=measurement.amplitude_uV, latency_ms=measurement.latency_ms,
                 onset_latency_ms=measurement.onset_latency_ms)
    return p


def alarm(transition: str, alarm_id: str | None, priority: Any = None, side: Any = None, who: str | None = None,
          message: str | None = None, event_kind: Any = None, site: Any = None) -> dict[str, Any]:
    """An ``alarm`` payload built by hand (the engine normally journals ``LogEntry.to_json()``)."""
    return {"transition": transition, "alarm_id": alarm_id, "priority": _v(priority), "side": _v(side),
            "site": _v(site), "event_kind": _v(event_kind), "message": message, "who": who}


def tube_check(impedances_ohm: Mapping[Any, int], max_impedance_kohm: float, max_imbalance_kohm: float,
               breathing_variation: Mapping[str, Any] | None = None,
               override: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Evaluate and describe a tube check. Electrode keys: ``L_POS L_NEG R_POS R_NEG ...``;
    ``-1`` ohm means not measurable (lead off). Limits come from the ``tube.*`` settings."""
    imp = {(k.name if isinstance(k, enum.Enum) else str(k)): int(v) for k, v in impedances_ohm.items()}
    lead_off = sorted(k for k, v in imp.items() if v < 0)
    limit = max_impedance_kohm * 1000.0
    high = sorted(k for k, v in imp.items() if v >= 0 and k[:2] in ("L_", "R_") and v > limit)
    imbalance: dict[str, int | None] = {}
    for side in SIDES:
        pos, neg = imp.get(f"{side}_POS"), imp.get(f"{side}_NEG")
        imbalance[side] = None if pos is None or neg is None or pos < 0 or neg < 0 else abs(pos - neg)
    unbalanced = sorted(s for s, v in imbalance.items() if v is not None and v > max_imbalance_kohm * 1000.0)
    passed = not lead_off and not high and not unbalanced
    problems = ([f"lead off: {', '.join(lead_off)}"] if lead_off else []) + \
        ([f"impedance above {max_impedance_kohm:g} kOhm: {', '.join(high)}"] if high else []) + \
        ([f"imbalance above {max_imbalance_kohm:g} kOhm: side {', '.join(unbalanced)}"] if unbalanced else [])
    return {"impedances_ohm": imp, "passed": passed, "imbalance_ohm": imbalance, "lead_off": lead_off,
            "breathing_variation": dict(breathing_variation) if breathing_variation is not None else None,
            "limits": {"max_impedance_kohm": max_impedance_kohm, "max_imbalance_kohm": max_imbalance_kohm},
            "override": dict(override) if override else None,
            "message": "; ".join(problems) if problems else "all electrodes within limits"}


def _v(x: Any) -> Any:
    return x.value if isinstance(x, enum.Enum) else x
