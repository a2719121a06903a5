"""EDF+ export of a case's raw data, following ``shared/specs/recording-exchange.md``.

Owns: ``case_recording`` (journal -> the data of an EDF+ recording) and
``write_case_edf`` (-> file, through ``app.analysis.edf.write_edf``: this module has no
EDF writer of its own).
May import: the standard library, numpy, ``app.model``, ``app.analysis.edf``,
``app.record`` modules.

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
- Rule events, alarm raises, steps and notes are added as annotations (``EVENT ...``,
  ``ALARM ...``, ``STEP ...``, ``NOTE ...``), which the spec says readers ignore.
- Patient: the pseudonymous patient id only; start date/time: the case's wall time.
"""

from __future__ import annotations

import dataclasses
import inspect
from datetime import timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np

from app.model import Side, Site, Source, Step, Stimulus
from app.record import waveform as W
from app.record.journal import parse_utc

LABELS = ("EMG L", "EMG R")
IN_MEMORY_LIMIT = 1 << 30  # larger signals go to a temporary memory-mapped file


class EdfUnavailable(RuntimeError):
    """The EDF+ writer (``app.analysis.edf``) is not part of this build."""


def _edf_module() -> Any:
    try:
        from app.analysis import edf
    except ImportError as exc:
        raise EdfUnavailable(f"the EDF+ writer app.analysis.edf is not available ({exc})") from None
    return edf


def _stimulus(p: dict[str, Any], t_s: float) -> Stimulus:
    return Stimulus(index=int(p["index"]), t_s=float(t_s), site=Site(p["site"]), side=Side(p["side"]),
                    source=Source(p["source"]), set_mA=float(p["set_mA"]),
                    delivered_mA=None if p.get("delivered_mA") is None else float(p["delivered_mA"]),
                    pw_us=int(p.get("pw_us") or 100), step=Step(p["step"]) if p.get("step") else None)


def case_recording(journal: Any, case_id: str, tmp_dir: Path | None = None) -> dict[str, Any]:
    """The EDF+ content of a case as plain data: ``sample_rate_hz``, ``signals`` (label ->
    float32 µV array), ``stimuli`` (``Stimulus`` with onsets in recording time),
    ``annotations`` ([(onset_s, duration_s, text)]), ``start`` (aware datetime),
    ``patient_code``, ``mode`` ("stream" / "epochs")."""
    case = journal.case_data(case_id)
    opened = next(iter(journal.entries(case_id, kinds=["case_opened"], blobs=False)))
    case_start = parse_utc(opened.wall)
    blocks = [(e.seq, e.payload) for e in journal.entries(case_id, kinds=["emg_block"], blobs=False)]
    if blocks:
        data = _from_stream(journal, case_id, blocks, tmp_dir)
    else:
        data = _from_epochs(journal, case_id)
    t0 = data.pop("case_t0")
    data["start"] = case_start + timedelta(seconds=t0 if data["mode"] == "stream" else 0.0)
    data["patient_code"] = str(case.get("patient_id") or "X")
    data["case_id"] = case_id
    if data["mode"] == "stream":
        _add_case_annotations(journal, case_id, data, t0)
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
    annotations: list[tuple[float, float, str]] = [
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
        for a, b in zip(edges[::2], edges[1::2]):
            annotations.append((a / fs, (b - a) / fs, f"LNM gap duration_s={(b - a) / fs:.3f} (no EMG stored)"))
    skipped = len(blocks) - len(usable)
    if skipped:
        annotations.append((0.0, 0.0, f"LNM {skipped} EMG blocks at another sample rate not included"))
    duration = n_total / fs
    stimuli, outside = [], 0
    for e in journal.entries(case_id, kinds=["stimulus"], blobs=False):
        onset = float(e.payload["t_s"]) - t0
        if 0.0 <= onset < duration:
            stimuli.append(_stimulus(e.payload, onset))
        else:
            outside += 1
    if outside:
        annotations.append((0.0, 0.0, f"LNM {outside} stimuli outside the stored EMG stream (see case.json)"))
    return {"mode": "stream", "sample_rate_hz": fs, "signals": signals, "stimuli": stimuli,
            "annotations": annotations, "case_t0": t0}


def _from_epochs(journal: Any, case_id: str) -> dict[str, Any]:
    entries = [e for e in journal.entries(case_id, kinds=["stimulus"]) if e.blob is not None]
    annotations: list[tuple[float, float, str]] = [
        (0.0, 0.0, f"LNM epochs-only case={case_id}: no free-running EMG stored; the signal is the stored "
                   "stimulus epochs back to back")]
    if not entries:
        return {"mode": "epochs", "sample_rate_hz": 20000.0, "signals": {lab: np.zeros(20000, np.float32)
                                                                        for lab in LABELS},
                "stimuli": [], "annotations": annotations + [(0.0, 0.0, "LNM no stimulus epochs stored")],
                "case_t0": 0.0}
    rates = [float(e.payload["waveform"]["sample_rate_hz"]) for e in entries]
    fs = max(set(rates), key=rates.count)
    entries = [e for e in entries if float(e.payload["waveform"]["sample_rate_hz"]) == fs]
    total = sum(int(e.payload["waveform"]["n"]) for e in entries)
    signals = {lab: np.zeros(total, np.float32) for lab in LABELS}
    stimuli = []
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
        annotations.append((at / fs, x.shape[1] / fs, f"LNM epoch case_t_s={float(e.payload['t_s']):.4f}"))
        at += x.shape[1]
    return {"mode": "epochs", "sample_rate_hz": fs, "signals": signals, "stimuli": stimuli,
            "annotations": annotations, "case_t0": 0.0}


def _allocate(labels: list[str], n: int, tmp_dir: Path | None) -> dict[str, np.ndarray]:
    if n * 4 * len(labels) <= IN_MEMORY_LIMIT or tmp_dir is None:
        return {lab: np.zeros(n, np.float32) for lab in labels}
    out = {}
    for i, lab in enumerate(labels):
        out[lab] = np.memmap(Path(tmp_dir) / f"signal-{i}.f32", dtype=np.float32, mode="w+", shape=(n,))
    return out


def _add_case_annotations(journal: Any, case_id: str, data: dict[str, Any], t0: float) -> None:
    fs = data["sample_rate_hz"]
    duration = len(next(iter(data["signals"].values()))) / fs if data["signals"] else 0.0
    ann = data["annotations"]
    for e in journal.entries(case_id, kinds=["rule_event", "alarm", "step", "note", "laryngoscopy"], blobs=False):
        p = e.payload
        t = (float(p["t_s"]) if e.kind == "rule_event" else float(e.t_s)) - t0
        if not 0.0 <= t < duration:
            continue
        if e.kind == "rule_event":
            text = f"EVENT {p['kind']} side={p['side']} site={p['site']} priority={p['priority']}"
        elif e.kind == "alarm":
            if p["transition"] not in ("raised", "acknowledged", "cleared", "escalated"):
                continue
            text = f"ALARM {p['transition']} {p.get('alarm_id') or p.get('alarm') or ''}".strip()
        elif e.kind == "step":
            text = f"STEP {p['step']} side={p['side']}"
        elif e.kind == "laryngoscopy":
            text = f"STEP {p['step']} laryngoscopy"
        else:
            text = "NOTE " + str(p["text"])[:80]
        ann.append((t, 0.0, text))


def _make_recording(edf: Any, data: dict[str, Any]) -> Any:
    """Build ``app.analysis.edf.Recording`` from ``data`` by its field names."""
    rec_cls = edf.Recording
    params = (list(f.name for f in dataclasses.fields(rec_cls)) if dataclasses.is_dataclass(rec_cls)
              else list(inspect.signature(rec_cls).parameters))
    kwargs: dict[str, Any] = {}
    for name in params:
        low = name.lower()
        if "rate" in low:
            kwargs[name] = data["sample_rate_hz"]
        elif low in ("signals", "channels", "data"):
            kwargs[name] = data["signals"]
        elif "stim" in low:
            kwargs[name] = data["stimuli"]
        elif "start" in low:
            kwargs[name] = data["start"].astimezone(timezone.utc).replace(tzinfo=None) \
                if "naive" in low else data["start"]
        elif "patient" in low:
            kwargs[name] = data["patient_code"]
        elif "annotation" in low:
            kwargs[name] = data["annotations"]
    return rec_cls(**kwargs)


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
                f"{len(data['stimuli'])} STIM annotations")
