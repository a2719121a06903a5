"""``lnm analyze RECORDING.edf --out RESULT.json``: re-analyse an EDF+ recording.

Owns: the offline composition of the live engine's cores over a recording: every STIM
annotation's epoch is cut from the file (read lazily, only the epochs), measured by
``app.analysis.EpochAnalyzer`` in batches, and fed in time order to
``app.rules.RuleEngine``, exactly as the engine does live. Writes the ``lnm-analysis/1``
JSON of ``shared/specs/recording-exchange.md``.

Where another stimulus falls inside an epoch (fast probe trains), its artifact is blanked
too. Cautery is recognised from each epoch itself (broadband burst); the free-running
detector is not run over the recording (the JSON has no place for its episodes), so an
epoch that live fell only inside the detector's cautery hold time may be measured here.
May import: ``app.analysis``, ``app.rules``, ``app.model``, ``app.settings``.

Exit status: 0 on success; 2 with one line on stderr naming the file and the problem for
an unreadable or non-conforming recording or a rejected configuration; 1 when the result
cannot be written.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from app.analysis.edf import Recording, RecordingError, open_edf
from app.analysis.epoch import EpochAnalyzer
from app.model import InvalidReason, Measurement
from app.settings import SettingError, Settings, load

FORMAT = "lnm-analysis/1"
PRE_MS = 10.0  # the epoch starts this long before the stimulus (recording-exchange.md)
BATCH = 512  # epochs measured together


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recording", type=Path, help="EDF+ recording (EMG L / EMG R and STIM annotations)")
    parser.add_argument("--out", type=Path, required=True, help="where to write the JSON result")
    parser.add_argument("--config", type=Path, default=None, help="configuration directory (default: the shipped config/)")
    parser.add_argument("--profile", default=None, help="surgeon profile whose settings apply")


def run(args: argparse.Namespace) -> int:
    try:
        settings = load(args.config, args.profile)
    except SettingError as exc:
        print(f"lnm analyze: {exc}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    try:
        recording = open_edf(args.recording)
        result = analyze_recording(recording, settings)
    except RecordingError as exc:
        print(f"lnm analyze: {exc}", file=sys.stderr)
        return 2
    result["recording"]["path"] = str(args.recording)
    try:
        _write_json(args.out, result)
    except OSError as exc:
        print(f"lnm analyze: {args.out}: cannot be written ({exc.strerror or exc})", file=sys.stderr)
        return 1
    stimuli = result["stimuli"]
    elapsed = time.perf_counter() - started
    print(
        f"{args.recording}: {len(stimuli)} stimuli ({sum(s['valid'] for s in stimuli)} valid, "
        f"{sum(s['response'] for s in stimuli)} responses), {len(result['events'])} events, "
        f"{result['recording']['duration_s']:.1f} s analysed in {elapsed:.2f} s -> {args.out}"
    )
    return 0


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1, allow_nan=False)
        f.write("\n")
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- core


def measure_recording(recording: Recording, analyzer: EpochAnalyzer) -> list[Measurement]:
    """Measure every stimulus of ``recording`` on its ipsilateral channel, in time order."""
    fs = float(recording.sample_rate_hz)
    n = recording.n_samples
    pre = int(round(PRE_MS * fs / 1000.0))
    post = int(round(analyzer.window_ms * fs / 1000.0))
    length = pre + post
    stimuli = sorted(recording.stimuli, key=lambda s: (s.t_s, s.index))
    onsets = np.array([int(round(s.t_s * fs)) for s in stimuli], dtype=np.int64)
    out: dict[int, Measurement] = {}
    pending: dict[str, tuple[list[int], list[np.ndarray], list[list[int]]]] = {}

    def flush(channel: str) -> None:
        idx, rows, others = pending.pop(channel, ([], [], []))
        if idx:
            ms = analyzer.measure_batch(
                np.vstack(rows), fs, pre, [stimuli[i] for i in idx], [channel] * len(idx), other_onsets=others
            )
            out.update(zip(idx, ms))

    for i, stim in enumerate(stimuli):
        channel = stim.side.channel if stim.side.channel in recording.signals else None
        onset = int(onsets[i])
        if channel is None:
            out[i] = analyzer.measure(np.zeros(length), fs, pre, stim, None)
            continue
        if onset >= n or onset < 0:
            out[i] = Measurement(stim, channel, False, InvalidReason.ARTIFACT, False, None, None, None)
            continue
        a, b = onset - pre, onset + post
        # other stimuli inside this epoch (a fast probe train): their artifacts are blanked
        near = onsets[np.searchsorted(onsets, a) : np.searchsorted(onsets, b)]
        others = [int(o - a) for o in near if o != onset]
        x = np.asarray(recording.signals[channel][max(0, a) : min(n, b)], dtype=np.float64)
        if a < 0:  # stimulus in the first 10 ms: extend the first sample backwards
            x = np.concatenate([np.full(-a, x[0]), x])
        if b > n:  # the recording ends inside the window: measured alone, on what exists
            out[i] = analyzer.measure(x, fs, pre, stim, channel, other_onsets=others)
            continue
        idx, rows, other_rows = pending.setdefault(channel, ([], [], []))
        idx.append(i)
        rows.append(x)
        other_rows.append(others)
        if len(idx) >= BATCH:
            flush(channel)
    for channel in list(pending):
        flush(channel)
    return [out[i] for i in range(len(stimuli))]


def settings_section(settings: Settings, keys: Iterable[str]) -> dict[str, Any]:
    """Settings by short name (``event_threshold_uV``); the full key where names clash."""
    keys = list(dict.fromkeys(keys))
    short = [k.split(".", 1)[-1] for k in keys]
    return {(s if short.count(s) == 1 else k): settings[k] for k, s in zip(keys, short)}


def analyze_recording(recording: Recording, settings: Settings) -> dict[str, Any]:
    """The ``lnm-analysis/1`` document of a recording (``recording.path`` = its source)."""
    from app.rules import SETTINGS_USED, RuleEngine

    analyzer = EpochAnalyzer(settings)
    engine = RuleEngine(settings)
    measurements = measure_recording(recording, analyzer)
    events = []
    for m in measurements:
        events.extend(engine.process(m))
    used = [*SETTINGS_USED, *(k for k in settings if k.startswith("analysis."))]
    fs = float(recording.sample_rate_hz)
    return {
        "format": FORMAT,
        "recording": {
            "path": recording.source,
            "duration_s": round(recording.duration_s, 6),
            "sample_rate_hz": int(fs) if fs.is_integer() else fs,
            "channels": recording.channels,
        },
        "settings": settings_section(settings, used),
        "stimuli": [m.to_json() for m in measurements],
        "events": [e.to_json() for e in events],
    }


__all__ = ["analyze_recording", "configure", "measure_recording", "run", "settings_section"]
