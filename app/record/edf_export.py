"""EDF+ export of a case: its raw data and its whole operator context (``docs/recording-format.md``).

Owns: ``case_recording`` (journal -> the data of an EDF+ recording), ``context_annotations``
(journal entries -> the operator-context annotations of conventions version 2) and
``write_case_edf`` (-> file, through ``app.analysis.edf.write_edf``: this module has no
EDF writer of its own).
May import: the standard library, numpy, ``app.model``, ``app.format``, ``app.settings``
(short setting names), ``app.analysis.edf``, ``app.record`` modules.

What is written:

- **Free-running EMG stored** (``emg_block`` entries): the signals ``EMG L``/``EMG R`` are
  the stream from its first to its last stored sample at the stream's rate; the recording
  starts at the stream's first sample (the annotation ``LNM start case_t_s=...`` gives its
  case time). Stretches with no stored block (engine restart, storage refused the stream)
  are zero and annotated ``LNM gap duration_s=...``. Every stimulus inside the recording
  is a ``STIM`` annotation at its onset; stimuli outside it are counted in an ``LNM``
  annotation (they are all in the case JSON).
- **No stream stored**: the signals are the stored stimulus epochs placed back to back (10
  ms before to 50 ms after each stimulus, nothing between), so that ``lnm analyze`` and
  any EDF reader see every measured epoch; the annotation ``LNM epochs-only`` says so,
  and each STIM onset is the epoch's onset in this compressed time line (the case time of
  each stimulus is in the case JSON and in ``LNM epoch`` annotations).
- **The operator context** (``RECORDING-EXCHANGE 2``): the planned sides, every step at
  the onset of the stimulus that documents it (``step=`` in its STIM annotation too, with
  ``by=button`` when the step button recorded it afterwards), L1/L2 with side and
  finding, probe placements and stimulator settings, troubleshooting answers and verdicts,
  mapping points with their distance, the loss-of-signal type, re-baselines, captured
  baselines, setting changes, staging, and the stretches the monitor treated as
  electrocautery. Each item that changed what the monitor did with later stimuli carries
  ``s=N``: the number of the file's stimuli it had measured when the item took effect, so
  that ``lnm analyze`` applies it between the same two stimuli. Physical range and
  clipping: ``app.analysis.edf`` (fixed, 1 µV per step, ``CLIP`` annotations).
- Rule events, alarm transitions and notes stay as ``EVENT ...``, ``ALARM ...`` and
  ``NOTE ...`` annotations, which readers ignore.
- Patient: the pseudonymous patient id only; start date/time: the case's wall time.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np

from app import format as F
from app.model import Side, Site, Source, Step, Stimulus
from app.record import waveform as W
from app.record.journal import parse_utc

LABELS = ("EMG L", "EMG R")
IN_MEMORY_LIMIT = 1 << 30  # larger signals go to a temporary memory-mapped file
CONVENTIONS_MARK = "RECORDING-EXCHANGE 2"  # app.analysis.edf.CONVENTIONS_MARK
CONTEXT_KINDS = ("case_opened", "operator", "troubleshooting", "step", "laryngoscopy", "staging", "los_type",
                 "setting_changed", "cautery", "mapping", "rule_event", "alarm", "note", "snapshot")
_RECORD_FINDINGS = {"reduced": "paresis", "immobile": "palsy", "not_assessed": "not_examined"}


class EdfUnavailable(RuntimeError):
    """The EDF+ writer (``app.analysis.edf``) is not part of this build."""


def _edf_module() -> Any:
    try:
        from app.analysis import edf
    except ImportError as exc:
        raise EdfUnavailable(f"the EDF+ writer app.analysis.edf is not available ({exc})") from None
    return edf


def _stimulus(p: Mapping[str, Any], t_s: float) -> Stimulus:
    return Stimulus(index=int(p["index"]), t_s=float(t_s), site=Site(p["site"]), side=Side(p["side"]),
                    source=Source(p["source"]), set_mA=float(p["set_mA"]),
                    delivered_mA=None if p.get("delivered_mA") is None else float(p["delivered_mA"]),
                    pw_us=int(p.get("pw_us") or 100), step=Step(p["step"]) if p.get("step") else None)


def case_recording(journal: Any, case_id: str, tmp_dir: Path | None = None) -> dict[str, Any]:
    """The EDF+ content of a case as plain data: ``sample_rate_hz``, ``signals`` (label ->
    float32 µV array), ``stimuli`` (``Stimulus`` with onsets in recording time),
    ``recorded_steps`` (position in ``stimuli`` -> step recorded afterwards by the step
    button), ``annotations`` ([(onset_s, duration_s, text)]), ``start`` (aware datetime),
    ``patient_code``, ``mode`` ("stream" / "epochs"), ``case_t0`` (case time of the
    recording's start; stream mode)."""
    case = journal.case_data(case_id)
    opened = next(iter(journal.entries(case_id, kinds=["case_opened"], blobs=False)))
    case_start = parse_utc(opened.wall)
    blocks = [(e.seq, e.payload) for e in journal.entries(case_id, kinds=["emg_block"], blobs=False)]
    if blocks:
        data = _from_stream(journal, case_id, blocks, tmp_dir)
    else:
        data = _from_epochs(journal, case_id)
    t0 = data["case_t0"]
    data["start"] = case_start + timedelta(seconds=t0 if data["mode"] == "stream" else 0.0)
    data["patient_code"] = str(case.get("patient_id") or "X")
    data["case_id"] = case_id
    n = len(next(iter(data["signals"].values())))
    duration = n / data["sample_rate_hz"]

    def to_rec(t: float) -> float:  # case time -> recording time (stream mode; inside the recording)
        return min(max(float(t) - t0, 0.0), max(duration - 1e-6, 0.0))

    entries = list(journal.entries(case_id, kinds=list(CONTEXT_KINDS), blobs=False))
    stim_onsets = [s.t_s for s in data["stimuli"]]
    ann, recorded = context_annotations(entries, data["stim_seqs"], data["stimuli"], stim_onsets, to_rec,
                                        duration, epoch_starts=data.get("epoch_starts"))
    data["annotations"].extend(ann)
    data["recorded_steps"] = recorded
    return data


def _from_stream(journal: Any, case_id: str, blocks: list[tuple[int, dict]], tmp_dir: Path | None) -> dict[str, Any]:
    rates = [float(p["sample_rate_hz"]) for _, p in blocks]
    fs = max(set(rates), key=rates.count)
    usable = [(seq, p) for seq, p in blocks if float(p["sample_rate_hz"]) == fs]
    usable.sort(key=lambda x: int(x[1]["first_sample"]))
    s0 = int(usable[0][1]["first_sample"])
    t0 = float(usable[0][1]["t_s"])
    end = max(int(p["first_sample"]) + int(p["waveform"]["n"]) for _, p in usable)
    n_total = end - s0
    labels = [lab for lab in LABELS if any(lab in p["labels"] for _, p in usable)]
    signals = _allocate(labels, n_total, tmp_dir)
    covered = np.zeros(n_total, dtype=bool) if n_total <= 50_000_000 else None
    annotations: list[tuple[float, float | None, str]] = [
        (0.0, 0.0, f"LNM start case_t_s={t0:.4f} case={case_id} stream")]
    for seq, p in usable:
        e = journal.entry(case_id, seq)
        x = W.decode(p["waveform"], e.blob)
        a = int(p["first_sample"]) - s0
        for i, lab in enumerate(p["labels"]):
            if lab in signals:
                signals[lab][a:a + x.shape[1]] = x[i]
        if covered is not None:
            covered[a:a + x.shape[1]] = True
    if covered is not None and not covered.all():
        edges = np.flatnonzero(np.diff(np.concatenate(([1], covered.view(np.int8), [1]))))
        for a, b in zip(edges[::2], edges[1::2], strict=True):
            annotations.append((a / fs, (b - a) / fs, f"LNM gap duration_s={(b - a) / fs:.3f} (no EMG stored)"))
    skipped = len(blocks) - len(usable)
    if skipped:
        annotations.append((0.0, 0.0, f"LNM {skipped} EMG blocks at another sample rate not included"))
    duration = n_total / fs
    stimuli, seqs, outside = [], [], 0
    for e in journal.entries(case_id, kinds=["stimulus"], blobs=False):
        onset = float(e.payload["t_s"]) - t0
        if 0.0 <= onset < duration:
            stimuli.append(_stimulus(e.payload, onset))
            seqs.append(e.seq)
        else:
            outside += 1
    if outside:
        annotations.append((0.0, 0.0, f"LNM {outside} stimuli outside the stored EMG stream (see case.json)"))
    return {"mode": "stream", "sample_rate_hz": fs, "signals": signals, "stimuli": stimuli, "stim_seqs": seqs,
            "annotations": annotations, "case_t0": t0}


def _from_epochs(journal: Any, case_id: str) -> dict[str, Any]:
    entries = [e for e in journal.entries(case_id, kinds=["stimulus"]) if e.blob is not None]
    annotations: list[tuple[float, float | None, str]] = [
        (0.0, 0.0, f"LNM epochs-only case={case_id}: no free-running EMG stored; the signal is the stored "
                   "stimulus epochs back to back")]
    if not entries:
        return {"mode": "epochs", "sample_rate_hz": 20000.0, "signals": {lab: np.zeros(20000, np.float32)
                                                                        for lab in LABELS},
                "stimuli": [], "stim_seqs": [], "epoch_starts": [0.0],
                "annotations": annotations + [(0.0, 0.0, "LNM no stimulus epochs stored")], "case_t0": 0.0}
    rates = [float(e.payload["waveform"]["sample_rate_hz"]) for e in entries]
    fs = max(set(rates), key=rates.count)
    entries = [e for e in entries if float(e.payload["waveform"]["sample_rate_hz"]) == fs]
    total = sum(int(e.payload["waveform"]["n"]) for e in entries)
    signals = {lab: np.zeros(total, np.float32) for lab in LABELS}
    stimuli, seqs, starts = [], [], []
    at = 0
    for e in entries:
        meta = e.payload["waveform"]
        x = W.decode(meta, e.blob)
        labels = meta.get("labels") or list(LABELS[: x.shape[0]])
        for i, lab in enumerate(labels):
            if lab in signals:
                signals[lab][at:at + x.shape[1]] = x[i]
        onset = (at + int(meta["pre_samples"])) / fs
        stimuli.append(_stimulus(e.payload, onset))
        seqs.append(e.seq)
        starts.append(at / fs)
        annotations.append((at / fs, x.shape[1] / fs, f"LNM epoch case_t_s={float(e.payload['t_s']):.4f}"))
        at += x.shape[1]
    starts.append(at / fs)
    return {"mode": "epochs", "sample_rate_hz": fs, "signals": signals, "stimuli": stimuli, "stim_seqs": seqs,
            "epoch_starts": starts, "annotations": annotations, "case_t0": 0.0}


def _allocate(labels: list[str], n: int, tmp_dir: Path | None) -> dict[str, np.ndarray]:
    if n * 4 * len(labels) <= IN_MEMORY_LIMIT or tmp_dir is None:
        return {lab: np.zeros(n, np.float32) for lab in labels}
    out = {}
    for i, lab in enumerate(labels):
        out[lab] = np.memmap(Path(tmp_dir) / f"signal-{i}.f32", dtype=np.float32, mode="w+", shape=(n,))
    return out


# ----------------------------------------------------------------------------- operator context


def short_setting_name(key: str) -> str:
    """The setting's name without its group where that is unique (``event_threshold_uV``),
    else the full key: keeps SET annotations short for edflib-based viewers."""
    from app.settings import SCHEMA

    short = key.split(".", 1)[-1]
    same = [k for k in SCHEMA if k.split(".", 1)[-1] == short]
    return short if same == [key] else key


def _value_token(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)
    return str(v)


class _Context:
    """Turns journal entries (seq order) into context annotations; see the module docstring."""

    def __init__(self, stim_seqs: list[int], stimuli: list[Stimulus], onsets: list[float],
                 to_rec: Callable[[float], float], duration: float, epoch_starts: list[float] | None) -> None:
        from app.analysis.edf import context_text

        self.text = context_text
        order = sorted(range(len(stim_seqs)), key=lambda i: stim_seqs[i])
        self.seqs = [stim_seqs[i] for i in order]
        self.file_index = {stimuli[i].index: i for i in range(len(stimuli))}  # journal index -> position
        self.stimuli, self.onsets = stimuli, onsets
        self.to_rec, self.duration, self.epoch_starts = to_rec, duration, epoch_starts
        self.out: list[tuple[float, float | None, str]] = [(0.0, None, CONVENTIONS_MARK)]
        self.recorded: dict[int, Step] = {}
        self.findings: dict[tuple[str, str], str] = {}
        self.cautery_start: tuple[float, int] | None = None

    def n_before(self, seq: int) -> int:
        return bisect.bisect_left(self.seqs, seq)

    def onset(self, t_s: float, seq: int) -> float:
        if self.epoch_starts is not None:  # compressed time: the start of the next stimulus's epoch
            return self.epoch_starts[min(self.n_before(seq), len(self.epoch_starts) - 1)]
        return self.to_rec(t_s)

    def add(self, t_s: float, seq: int, keyword: str, *args: Any, ordered: bool = True, duration: float | None = None,
            text: str | None = None, **fields: Any) -> None:
        if ordered:
            fields["s"] = self.n_before(seq)
        self.out.append((self.onset(t_s, seq), duration, self.text(keyword, *args, text=text, **fields)))

    def entry(self, e: Any) -> None:
        handler = getattr(self, "_on_" + e.kind, None)
        if handler is not None:
            handler(e, e.payload)

    def _on_case_opened(self, e: Any, p: Mapping[str, Any]) -> None:
        sides = [s for s in p.get("planned_sides") or [] if s in ("L", "R")]
        if sides:
            self.add(0.0, e.seq, "PLAN", *sides)

    def _on_operator(self, e: Any, p: Mapping[str, Any]) -> None:
        d = p.get("detail") if isinstance(p.get("detail"), Mapping) else {}
        a = p.get("action")
        if a == "probe.site":
            step = d.get("step") if d.get("step") not in (None, "none") else None
            self.add(e.t_s, e.seq, "PROBE", ordered=False, site=d.get("site"), side=d.get("side"), step=step)
        elif a == "stim.output":
            self.add(e.t_s, e.seq, "OUTPUT", d.get("output"), ordered=False, on="yes" if d.get("on") else "no")
        elif a == "stim.set":
            self.add(e.t_s, e.seq, "OUTPUT", d.get("output"), ordered=False,
                     mA=F.exact_ma_text(d.get("current_mA")) or None,
                     hz=None if d.get("rate_hz") is None else f"{float(d['rate_hz']):g}",
                     pw_us=None if d.get("pulse_width_us") is None else int(d["pulse_width_us"]))
        elif a == "aps.side":
            self.add(e.t_s, e.seq, "OUTPUT", "aps", ordered=False, side=d.get("side"))
        elif a == "case.update" and d.get("planned_sides"):
            self.add(e.t_s, e.seq, "PLAN", *d["planned_sides"])
        elif a == "step.clear":
            self.add(e.t_s, e.seq, "STEP", d.get("step"), d.get("side"), "clear")
        elif a == "baseline.rebaseline":
            self.add(e.t_s, e.seq, "REBASELINE", d.get("side"))
        elif a == "baseline.capture":
            pos = self.file_index.get(d.get("stimulus_index"))
            self.add(e.t_s, e.seq, "CAPTURE", d.get("site"), d.get("side"), i=pos)
        elif a == "mapping.result":
            self._map(e, d.get("side"), d.get("position_mm"), d.get("response"), d.get("amplitude_uV"),
                      d.get("label"))
        elif a == "mapping.clear":
            self.add(e.t_s, e.seq, "MAP", d.get("side"), "clear")

    def _map(self, e: Any, side: Any, pos: Any, resp: Any, amp: Any, label: Any) -> None:
        self.add(e.t_s, e.seq, "MAP", side, pos_mm=f"{F.position_mm(pos):g}", resp="yes" if resp else "no",
                 uV=F.amplitude_uV(amp), text=str(label) if label else None)

    def _on_mapping(self, e: Any, p: Mapping[str, Any]) -> None:
        self._map(e, p["side"], p["position_mm"], p["response"], p.get("amplitude_uV"), None)

    def _on_troubleshooting(self, e: Any, p: Mapping[str, Any]) -> None:
        side = p.get("side")
        if side not in ("L", "R"):
            return
        check, answer = p["check"], p["answer"]
        if check == "verdict":
            self.add(e.t_s, e.seq, "TS", side, verdict=answer, text=p.get("question"))
        elif p.get("who") == "monitor":  # the rules answer it themselves
            self.add(e.t_s, e.seq, "TS", side, ordered=False, by="monitor", **{check: answer})
        else:
            self.add(e.t_s, e.seq, "TS", side, **{check: answer})

    def _on_step(self, e: Any, p: Mapping[str, Any]) -> None:
        pos = self.file_index.get(p.get("stimulus_index"))
        if pos is None:
            return  # documented by a stimulus outside the recording (case JSON)
        stim = self.stimuli[pos]
        step = p["step"]
        if stim.step is not None and stim.step.value == step:  # tagged when delivered
            self.out.append((self.onsets[pos], None, self.text("STEP", step, p["side"])))
            return
        if stim.step is None:
            self.recorded[pos] = Step(step)
        # dt: from the stimulus to the button press (the step's rules judge it then: a poor V1 is dated there)
        dt = None if p.get("stimulus_t_s") is None else \
            (f"{max(0.0, float(e.t_s) - float(p['stimulus_t_s'])):.3f}".rstrip("0").rstrip(".") or "0")
        self.out.append((self.onsets[pos], None, self.text("STEP", step, p["side"], by="button",
                                                           s=self.n_before(e.seq), dt=dt)))

    def _on_laryngoscopy(self, e: Any, p: Mapping[str, Any]) -> None:
        pairs = []
        if p.get("side") in ("L", "R") and p.get("finding"):
            pairs.append((p["side"], p["finding"]))
        pairs += [(s, p[k]) for s, k in (("L", "left"), ("R", "right")) if p.get(k)]
        for side, finding in pairs:
            finding = _RECORD_FINDINGS.get(finding, finding)
            key = (p["step"], side)
            if self.findings.get(key, "not_examined") == finding:
                continue  # the other side, unchanged, repeated by the record
            self.findings[key] = finding
            self.add(e.t_s, e.seq, "STEP", p["step"], side, finding=finding, text=p.get("comment"))

    def _on_staging(self, e: Any, p: Mapping[str, Any]) -> None:
        if p.get("decision"):
            self.add(e.t_s, e.seq, "STAGING", decision=p["decision"], text=p.get("reason"))
        else:
            self.add(e.t_s, e.seq, "STAGING", p.get("side") or "-", ordered=False, advised="yes")

    def _on_los_type(self, e: Any, p: Mapping[str, Any]) -> None:
        detail = p.get("detail") if isinstance(p.get("detail"), Mapping) else {}
        between = detail.get("lesion_between_mm")
        lesion = f"{F.position_mm(between[0]):g}-{F.position_mm(between[1]):g}" \
            if isinstance(between, list) and len(between) == 2 else None
        self.add(e.t_s, e.seq, "LOS", p["side"], ordered=False, type=p["los_type"], lesion_mm=lesion)

    def _on_setting_changed(self, e: Any, p: Mapping[str, Any]) -> None:
        self.add(e.t_s, e.seq, "SET", **{short_setting_name(p["key"]): _value_token(p["new"])})

    def _on_cautery(self, e: Any, p: Mapping[str, Any]) -> None:
        onset = float(p["onset_s"]) if isinstance(p.get("onset_s"), (int, float)) else e.t_s
        if p["state"] == "start":
            if self.cautery_start is None:
                self.cautery_start = (onset, e.seq)
            return
        if self.cautery_start is not None:
            self._cautery(self.cautery_start, e.t_s, e.seq)
            self.cautery_start = None

    def _cautery(self, start: tuple[float, int], end_t: float, end_seq: int) -> None:
        t_a, seq_a = start
        a, b = self.onset(t_a, seq_a), self.onset(end_t, end_seq)
        text = self.text("CAUTERY", s=self.n_before(seq_a), e=self.n_before(end_seq))
        self.out.append((a, max(b - a, 1e-4), text))

    def _on_rule_event(self, e: Any, p: Mapping[str, Any]) -> None:
        t = self.to_rec(float(p["t_s"])) if self.epoch_starts is None else self.onset(e.t_s, e.seq)
        self.out.append((t, None, f"EVENT {p['kind']} side={p['side']} site={p['site']} priority={p['priority']}"))

    def _on_alarm(self, e: Any, p: Mapping[str, Any]) -> None:
        if p["transition"] in ("raised", "acknowledged", "cleared", "escalated"):
            text = f"ALARM {p['transition']} {p.get('alarm_id') or p.get('alarm') or ''}".strip()
            self.out.append((self.onset(e.t_s, e.seq), None, text))

    def _on_note(self, e: Any, p: Mapping[str, Any]) -> None:
        self.out.append((self.onset(e.t_s, e.seq), None, "NOTE " + " ".join(str(p["text"]).split())[:200]))

    def _on_snapshot(self, e: Any, p: Mapping[str, Any]) -> None:
        self.out.append((self.onset(e.t_s, e.seq), None, "MARK" + (f" {p['label']}" if p.get("label") else "")))

    def finish(self, end_seq: int, end_t: float) -> None:
        if self.cautery_start is not None:  # the case ended during electrocautery
            self._cautery(self.cautery_start, end_t, end_seq)


def context_annotations(entries: Iterable[Any], stim_seqs: list[int], stimuli: list[Stimulus], onsets: list[float],
                        to_rec: Callable[[float], float], duration: float,
                        epoch_starts: list[float] | None = None) -> tuple[list[tuple], dict[int, Step]]:
    """The operator-context annotations of a case (``docs/recording-format.md``) and the
    steps recorded afterwards by the step button (position in ``stimuli`` -> step).

    ``entries``: the journal entries of ``CONTEXT_KINDS`` in seq order; ``stim_seqs``: the
    journal seq of each of ``stimuli`` (the recording's stimuli, onsets ``onsets`` in
    recording time); ``to_rec``: case time -> recording time; ``epoch_starts``: in
    epochs-only recordings, where each stimulus's epoch starts (and the end)."""
    ctx = _Context(stim_seqs, stimuli, onsets, to_rec, duration, epoch_starts)
    last = (1 << 62, duration)
    for e in entries:
        ctx.entry(e)
        last = (e.seq + 1, e.t_s)
    ctx.finish(*last)
    return ctx.out, ctx.recorded


# ----------------------------------------------------------------------------- writing


def _make_recording(edf: Any, data: dict[str, Any]) -> Any:
    """``app.analysis.edf.Recording`` of ``case_recording``'s data."""
    return edf.Recording(sample_rate_hz=data["sample_rate_hz"], signals=data["signals"], stimuli=data["stimuli"],
                         start=data["start"], patient_code=data["patient_code"], annotations=data["annotations"],
                         recorded_steps=data.get("recorded_steps") or {})


def write_case_edf(journal: Any, case_id: str, path: Path, identified: bool = False) -> str:
    """Write the case's EDF+ file; returns a one-line description of what was written."""
    import tempfile

    from app.record.atomic import atomic_write

    edf = _edf_module()
    with tempfile.TemporaryDirectory(prefix="lnm-edf-", dir=Path(path).parent if Path(path).parent.exists()
                                     else None) as tmp:
        data = case_recording(journal, case_id, Path(tmp))
        recording = _make_recording(edf, data)
        atomic_write(Path(path), lambda target: edf.write_edf(target, recording))
        n = len(next(iter(data["signals"].values())))
        fs = data["sample_rate_hz"]
        what = ("free-running EMG" if data["mode"] == "stream" else "stimulus epochs back to back (no stream stored)")
        return (f"{', '.join(data['signals'])} at {fs:g} Hz, {n / fs:.1f} s of {what}, "
                f"{len(data['stimuli'])} STIM annotations with the operator context")
