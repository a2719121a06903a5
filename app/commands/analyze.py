"""``lnm analyze RECORDING.edf --out RESULT.json``: re-analyse an EDF+ recording.

Owns: the offline composition of the live engine's cores over a recording: every STIM
annotation's epoch is cut from the file (read lazily, only the epochs), measured by
``app.analysis.EpochAnalyzer`` in batches, and fed in time order to
``app.rules.RuleEngine``, exactly as the engine does live, together with the operator
context the file carries (``docs/recording-format.md``, conventions version 2). Writes the
``lnm-analysis/1`` JSON of ``shared/specs/recording-exchange.md`` with the additions of
``docs/recording-format.md`` (the step table, troubleshooting, mapping, the case time of
the recording's start).
May import: ``app.analysis``, ``app.rules``, ``app.model``, ``app.settings``.

The operator context is replayed as the engine applied it live (``app/engine``): the
planned sides; at each item's place in the stimulus sequence (``s=``), troubleshooting
answers and verdicts (so that probe stimuli of a nerve confirmed lost are mapping, not
recovery), mapping points, steps recorded with the step button (``RuleEngine.record_step``
with the documented stimulus), steps cleared, L1/L2, continuous re-baselines, captured
probe baselines, staging decisions and setting changes (a changed analysis setting
measures the later epochs, a changed rule setting judges them); stimuli measured while
the monitor detected electrocautery (``CAUTERY``) are invalid (``cautery``), as live.
Version-1 files (no context) and ``--context ignore`` give the stimuli-only analysis.

Where another stimulus falls inside an epoch (fast probe trains), its artifact is blanked
too. Without a ``CAUTERY`` annotation, cautery is recognised from each epoch itself
(broadband burst).

Exit status: 0 on success; 2 with one line on stderr naming the file and the problem for
an unreadable, truncated or non-conforming recording (a malformed context annotation, a
setting change the schema refuses), a rejected configuration, or an output path that is
not a previous result (it is never overwritten); 1 when the result cannot be written. A
context item that is well-formed but finds nothing to apply to (a troubleshooting answer
without a loss of signal) is listed in the result's ``context.problems``: the
re-analysis differs from the case there.
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from app.analysis.edf import Context, Recording, RecordingError, open_edf
from app.analysis.epoch import EpochAnalyzer
from app.model import InvalidReason, Measurement, Side, Site, Source, Step
from app.settings import SCHEMA, SettingError, Settings, load

FORMAT = "lnm-analysis/1"
PRE_MS = 10.0  # the epoch starts this long before the stimulus (recording-exchange.md)
WINDOW_S = 0.050  # the analysis window: an item without s= follows the stimuli whose window ended
BATCH = 512  # epochs measured together
STEPS_REPORTED = tuple(s.value for s in Step)


def configure(parser: argparse.ArgumentParser) -> None:
    """The command line of ``lnm analyze``."""
    parser.add_argument("recording", type=Path, help="EDF+ recording (EMG L / EMG R and STIM annotations)")
    parser.add_argument("--out", type=Path, required=True, help="where to write the JSON result")
    parser.add_argument("--config", type=Path, default=None,
                        help="configuration directory (default: the shipped config/)")
    parser.add_argument("--profile", default=None, help="surgeon profile whose settings apply")
    parser.add_argument("--context", choices=("apply", "ignore"), default="apply",
                        help="apply the operator context the recording carries (default), or analyse the "
                             "stimuli alone")


def run(args: argparse.Namespace) -> int:
    """Analyse, write the result, print one summary line; the exit status of the module docstring."""
    try:
        settings = load(args.config, args.profile)
    except SettingError as exc:
        print(f"lnm analyze: {exc}", file=sys.stderr)
        return 2
    problem = _output_problem(args.out, args.recording)
    if problem:
        print(f"lnm analyze: {args.out}: {problem}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    try:
        recording = open_edf(args.recording)
        result = analyze_recording(recording, settings, context=args.context == "apply")
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
    applied = result["context"]["applied"]
    print(
        f"{args.recording}: {len(stimuli)} stimuli ({sum(s['valid'] for s in stimuli)} valid, "
        f"{sum(s['response'] for s in stimuli)} responses), {len(result['events'])} events"
        + (f", {applied} operator actions applied" if applied else "")
        + f", {result['recording']['duration_s']:.1f} s analysed in {elapsed:.2f} s -> {args.out}"
    )
    return 0


def _output_problem(out: Path, recording: Path) -> str | None:
    """Why ``out`` must not be written (None when it may): it is the recording, or an
    existing file that is not a previous analysis result."""
    try:
        if out.exists() and recording.exists() and out.resolve() == recording.resolve():
            return "is the recording itself; give another file for the result"
        if out.is_dir():
            return "is a folder; give a file name for the result"
        if out.exists() or out.is_symlink():
            if out.is_symlink() or not out.is_file():
                return "exists and is not a regular file; it is not replaced"
            with open(out, "rb") as f:
                head = f.read(4096)
            if f'"format": "{FORMAT}"'.encode() not in head and f'"format":"{FORMAT}"'.encode() not in head:
                return "exists and is not an lnm analysis result; it is not replaced (choose another name)"
    except OSError as exc:
        return f"cannot be checked ({exc.strerror or exc})"
    return None


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1, allow_nan=False)
        f.write("\n")
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- measurement


def measure_recording(recording: Recording, analyzer: EpochAnalyzer | Callable[[int], EpochAnalyzer],
                      stimuli_of: Callable[[], list] | None = None) -> list[Measurement]:
    """Measure every stimulus of ``recording`` on its ipsilateral channel, in time order.
    ``analyzer``: one analyzer, or a function of the stimulus's position giving the
    analyzer of the settings in force for it."""
    analyzer_of = analyzer if callable(analyzer) and not isinstance(analyzer, EpochAnalyzer) else (lambda _i: analyzer)
    fs = float(recording.sample_rate_hz)
    n = recording.n_samples
    pre = int(round(PRE_MS * fs / 1000.0))
    stimuli = stimuli_of() if stimuli_of is not None else sorted(recording.stimuli, key=lambda s: (s.t_s, s.index))
    onsets = np.array([int(round(s.t_s * fs)) for s in stimuli], dtype=np.int64)
    out: dict[int, Measurement] = {}
    pending: dict[tuple[str, int], tuple[EpochAnalyzer, list[int], list[np.ndarray], list[list[int]]]] = {}

    def flush(key: tuple[str, int]) -> None:
        an, idx, rows, others = pending.pop(key)
        if idx:
            ms = an.measure_batch(np.vstack(rows), fs, pre, [stimuli[i] for i in idx], [key[0]] * len(idx),
                                  other_onsets=others)
            out.update(zip(idx, ms, strict=True))

    for i, stim in enumerate(stimuli):
        an = analyzer_of(i)
        post = int(round(an.window_ms * fs / 1000.0))
        length = pre + post
        channel = stim.side.channel if stim.side.channel in recording.signals else None
        onset = int(onsets[i])
        if channel is None:
            out[i] = an.measure(np.zeros(length), fs, pre, stim, None)
            continue
        if onset >= n or onset < 0:
            out[i] = Measurement(stim, channel, False, InvalidReason.ARTIFACT, False, None, None, None)
            continue
        a, b = onset - pre, onset + post
        # other stimuli inside this epoch (a fast probe train): their artifacts are blanked
        near = onsets[np.searchsorted(onsets, a) : np.searchsorted(onsets, b)]
        others = [int(o - a) for o in near if o != onset]
        x = _read(recording, channel, max(0, a), min(n, b))
        if a < 0:  # stimulus in the first 10 ms: extend the first sample backwards
            x = np.concatenate([np.full(-a, x[0]), x])
        if b > n:  # the recording ends inside the window: measured alone, on what exists
            out[i] = an.measure(x, fs, pre, stim, channel, other_onsets=others)
            continue
        key = (channel, id(an))
        _an, idx, rows, other_rows = pending.setdefault(key, (an, [], [], []))
        idx.append(i)
        rows.append(x)
        other_rows.append(others)
        if len(idx) >= BATCH:
            flush(key)
    for key in list(pending):
        flush(key)
    return [out[i] for i in range(len(stimuli))]


def _read(recording: Recording, channel: str, a: int, b: int) -> np.ndarray:
    try:
        return np.asarray(recording.signals[channel][a:b], dtype=np.float64)
    except (OSError, ValueError, IndexError) as exc:
        raise RecordingError(f"{recording.source or 'recording'}: samples {a}-{b} of {channel!r} cannot be read "
                             f"({exc})") from None


def settings_section(settings: Settings, keys: Iterable[str]) -> dict[str, Any]:
    """Settings by short name (``event_threshold_uV``); the full key where names clash."""
    keys = list(dict.fromkeys(keys))
    short = [k.split(".", 1)[-1] for k in keys]
    return {(s if short.count(s) == 1 else k): settings[k] for k, s in zip(keys, short, strict=True)}


# ----------------------------------------------------------------------------- operator context


def _setting_key(name: str) -> str | None:
    if name in SCHEMA:
        return name
    found = [k for k in SCHEMA if k.split(".", 1)[-1] == name]
    return found[0] if len(found) == 1 else None


class _Plan:
    """The context items of a recording placed in its stimulus sequence: ``at[N]`` holds
    the items applied after N stimuli were measured (before stimulus N)."""

    def __init__(self, recording: Recording, stimuli: list) -> None:
        self.where = recording.source or "recording"
        self.stimuli = stimuli
        ends = [s.t_s + WINDOW_S for s in stimuli]
        self.at: dict[int, list[Context]] = {}
        self.cautery: set[int] = set()
        n = len(stimuli)
        for c in recording.context:
            if c.keyword == "CAUTERY":
                self._cautery(c, ends)
                continue
            if c.keyword in ("CLIP", "PROBE", "OUTPUT", "LOS") or (c.keyword == "TS" and c.get("by") == "monitor") \
                    or (c.keyword == "STAGING" and "decision" not in c.fields):
                continue  # what the monitor did itself, or what only describes the case
            pos = c.order
            if pos is None and c.keyword == "STEP" and c.get("by") == "button":
                found = self.stimulus_at(c)
                pos = None if found is None else found + 1
            if pos is None:
                pos = bisect.bisect_right(ends, c.onset_s + 1e-7)
            if pos > n:
                raise RecordingError(f"{self.where}: annotation at {c.onset_s:.4f} s ({c.raw!r}): s={pos} is beyond "
                                     f"the {n} stimuli of the file")
            self.at.setdefault(pos, []).append(c)

    def _cautery(self, c: Context, ends: list[float]) -> None:
        if "s" in c.fields:
            self.cautery.update(range(int(c.fields["s"]), int(c.fields["e"])))
        else:
            a, b = c.onset_s, c.onset_s + float(c.duration_s or 0.0)
            self.cautery.update(i for i, e in enumerate(ends) if a <= e - WINDOW_S < b)

    def stimulus_at(self, c: Context) -> int | None:
        """The stimulus a STEP annotation documents: at its onset, on its side, at its site."""
        step, side = c.args[0], c.args[1]
        site = {"V": Site.VAGUS, "R": Site.RLN, "S": Site.EBSLN}[step[0]]
        for i in range(bisect.bisect_left([s.t_s for s in self.stimuli], c.onset_s - 1e-6), len(self.stimuli)):
            s = self.stimuli[i]
            if s.t_s > c.onset_s + 1e-6:
                break
            if s.side.value == side and s.site is site:
                return i
        return None


class _Replay:
    """Measurements and operator context through one ``RuleEngine``, as the engine does."""

    def __init__(self, settings: Settings, plan: _Plan, measurements: list[Measurement]) -> None:
        from app.rules import RuleEngine

        self.settings = settings
        self.rules = RuleEngine(settings)
        self.plan, self.measurements = plan, measurements
        self.events: list[Any] = []
        self.applied = 0
        self.problems: list[str] = []

    def run(self) -> list[Any]:
        for i in range(len(self.measurements) + 1):
            for c in self.plan.at.get(i, ()):
                self.apply(c)
            if i < len(self.measurements):
                self.events.extend(self.rules.process(self.measurements[i]))
        return self.events

    def apply(self, c: Context) -> None:
        from app.rules import ProcedureError

        try:
            handler = getattr(self, "_" + c.keyword.lower())
            handler(c)
        except (ProcedureError, ValueError) as exc:
            # the monitor applied it, so the re-analysis differs from the case here: say so
            self.problems.append(f"annotation at {c.onset_s:.4f} s ({c.raw!r}) not applied: {exc}")
            return
        self.applied += 1

    def _plan(self, c: Context) -> None:
        self.rules.procedure.set_plan(list(c.args), c.onset_s)

    def _ts(self, c: Context) -> None:
        side = c.args[0]
        if "verdict" in c.fields:
            self.rules.procedure.set_verdict(side, c.fields["verdict"], c.text or "(verdict from the recording)",
                                             c.onset_s)
            return
        check = next(k for k in c.fields if k not in ("s", "by"))
        self.rules.procedure.answer(side, check, c.fields[check], c.onset_s, by="operator")

    def _map(self, c: Context) -> None:
        side = c.args[0]
        if c.args[1:] == ("clear",):
            self.rules.procedure.clear_mapping(side)
            return
        amp = float(c.fields["uV"]) if "uV" in c.fields else None
        self.rules.procedure.add_mapping_point(side, float(c.fields["pos_mm"]), c.fields["resp"] == "yes", c.onset_s,
                                               amp, c.text)

    def _step(self, c: Context) -> None:
        step, side = c.args[0], c.args[1]
        proc = self.rules.procedure
        if c.args[2:] == ("clear",):
            proc.clear_step(side, step)
        elif step in ("L1", "L2"):
            proc.set_laryngoscopy(step, side, c.fields["finding"], c.onset_s, c.text)
        elif c.get("by") == "button":
            pos = self.plan.stimulus_at(c)
            if pos is None:
                raise ValueError(f"no {step} stimulus of side {side} at {c.onset_s:.4f} s")
            pressed = c.onset_s + float(c.get("dt") or 0.0)  # the button, after the stimulus
            rec = self.rules.record_step(Step(step), Side(side), pressed, measurement=self.measurements[pos])
            self.events.extend(rec.events)  # as live: the step's rules at once (a poor V1)

    def _rebaseline(self, c: Context) -> None:
        self.events.extend(self.rules.rebaseline(Side(c.args[0]), Source.APS, t_s=c.onset_s))

    def _capture(self, c: Context) -> None:
        if "i" not in c.fields:
            raise ValueError("CAPTURE needs i= (the stimulus captured)")
        m = self.measurements[int(c.fields["i"])]
        self.events.extend(self.rules.capture_baseline(Site(c.args[0]), Side(c.args[1]), m, t_s=c.onset_s))

    def _staging(self, c: Context) -> None:
        self.rules.procedure.decide_staging(c.fields["decision"], c.text or "(decision from the recording)",
                                            c.onset_s)

    def _set(self, c: Context) -> None:
        self.rules.set_settings(self.plan_settings(c, self.rules.settings))

    @staticmethod
    def plan_settings(c: Context, settings: Settings) -> Settings:
        changes = {}
        for name, value in c.fields.items():
            if name == "s":
                continue
            key = _setting_key(name)
            if key is None:
                raise ValueError(f"unknown setting {name!r}")
            changes[key] = value
        try:
            return settings.with_changes(changes, "the recording")
        except SettingError as exc:
            raise ValueError(str(exc)) from None


def _settings_per_stimulus(plan: _Plan, settings: Settings, n: int) -> list[Settings]:
    """The settings in force when each stimulus was measured (``SET`` items)."""
    out, current = [], settings
    for i in range(n):
        for c in plan.at.get(i, ()):
            if c.keyword == "SET":
                try:
                    current = _Replay.plan_settings(c, current)
                except ValueError as exc:
                    raise RecordingError(f"{plan.where}: annotation at {c.onset_s:.4f} s ({c.raw!r}) cannot be "
                                         f"applied: {exc}") from None
        out.append(current)
    return out


def _case_t0(recording: Recording) -> float | None:
    for a in recording.annotations:
        if a.text.startswith("LNM start case_t_s="):
            try:
                return float(a.text.split()[2].split("=", 1)[1])
            except (IndexError, ValueError):
                return None
    return None


def _steps(rules: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for side in Side:
        values = {}
        for step in STEPS_REPORTED:
            v = rules.procedure.step(side, step)
            if v:
                values[step] = {k: v.get(k) for k in ("stimulus_index", "t_s", "site", "source", "response",
                                                      "amplitude_uV", "latency_ms", "onset_latency_ms", "set_mA",
                                                      "delivered_mA", "how")}
                for key, nd in (("t_s", 6), ("amplitude_uV", 2), ("latency_ms", 3), ("onset_latency_ms", 3)):
                    if values[step][key] is not None:  # as ``Measurement.to_json`` rounds them
                        values[step][key] = round(float(values[step][key]), nd)
        for phase in ("L1", "L2"):
            lar = rules.procedure.laryngoscopy(phase, side)
            if lar:
                values[phase] = {"finding": lar.get("finding"), "t_s": lar.get("t_s")}
        out[side.value] = values
    return out


def analyze_recording(recording: Recording, settings: Settings, context: bool = True) -> dict[str, Any]:
    """The ``lnm-analysis/1`` document of a recording (``recording.path`` = its source)."""
    from app.rules import SETTINGS_USED

    stimuli = sorted(recording.stimuli, key=lambda s: (s.t_s, s.index))
    use = context and recording.conventions >= 2
    plan = _Plan(recording if use else Recording(recording.sample_rate_hz, {}, source=recording.source), stimuli)
    per_stim = _settings_per_stimulus(plan, settings, len(stimuli))
    analyzers: dict[int, EpochAnalyzer] = {}

    def analyzer_of(i: int) -> EpochAnalyzer:
        st = per_stim[i]
        if id(st) not in analyzers:
            analyzers[id(st)] = EpochAnalyzer(st)
        return analyzers[id(st)]

    measurements = measure_recording(recording, analyzer_of, lambda: stimuli) if stimuli else []
    for i in plan.cautery:
        if i < len(measurements) and measurements[i].valid:
            m = measurements[i]  # the monitor detected electrocautery: never a response, never a loss
            measurements[i] = Measurement(m.stimulus, m.channel, False, InvalidReason.CAUTERY, False, None, None, None)
    replay = _Replay(settings, plan, measurements)
    events = replay.run()
    used = [*SETTINGS_USED, *(k for k in settings if k.startswith("analysis."))]
    fs = float(recording.sample_rate_hz)
    proc = replay.rules.procedure
    return {
        "format": FORMAT,
        "recording": {
            "path": recording.source,
            "duration_s": round(recording.duration_s, 6),
            "sample_rate_hz": int(fs) if fs.is_integer() else fs,
            "channels": recording.channels,
            "conventions": recording.conventions,
            "case_t0_s": _case_t0(recording),
        },
        "settings": settings_section(settings, used),
        "context": {"applied": replay.applied, "used": use, "problems": replay.problems,
                    "cautery_stimuli": len([i for i in plan.cautery if i < len(stimuli)])},
        "stimuli": [m.to_json() for m in measurements],
        "events": [e.to_json() for e in events],
        "steps": _steps(replay.rules),
        "troubleshooting": proc.records(),
        "mapping": {side.value: proc.mapping(side) for side in Side},
    }


__all__ = ["analyze_recording", "configure", "measure_recording", "run", "settings_section"]
