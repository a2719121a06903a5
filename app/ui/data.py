"""Display buffers fed by the engine's stream (pure: numpy, no Kivy, no I/O, no clock).

Owns: the bounded stores the screens draw from and the reduction of each to what a plot
of a given pixel width can show:

- ``EmgRing``: the free-running EMG min/max envelope per channel (``emg`` messages),
  reduced to one min/max pair per pixel column;
- ``EpochStore``: the last stimulus epoch per side (``waveform`` messages) and the
  scale that would fit its response (not the stimulus artifact): the display scale
  itself is the nurse's choice, this one is only used when asked to fit once;
- ``References``: the reference waveform of each side (the waveform of the stimulus that
  became V1, R1 or S1, or the mean of the continuous vagal stimuli that made the
  baseline), kept from the ``waveform`` stream as the state names the reference;
- ``TrendStore``: the continuous vagal (APS) amplitude and latency, in % of baseline,
  over the case per side (``trend.get`` then ``measurement`` messages);
- ``SiteHistory``: recent responses per nerve site and side (recovery trend after a
  loss of signal);
- ``EventLog``: the recent events, and the alarm history derived from them.

May import: numpy, the standard library and ``app.model`` (the sides, sites and steps).
"""

from __future__ import annotations

import collections
import math
from typing import Any
from collections.abc import Iterable, Mapping

import numpy as np

from app.model import SIDES, Site, Step
CHANNEL = {"L": "EMG L", "R": "EMG R"}
# display scales (half range, µV): a scale is chosen so the response fills the plot
SCALES_UV = (50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0)


def _num(x: Any) -> float | None:
    if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x):
        return float(x)
    return None


class EmgRing:
    """Free-running EMG envelope, ``seconds`` long at ``bin_hz`` bins per second."""

    def __init__(self, seconds: float = 10.0, bin_hz: float = 1000.0, channels: Iterable[str] = ("EMG L", "EMG R")):
        self._start(seconds, bin_hz, channels)

    def _start(self, seconds: float, bin_hz: float, channels: Iterable[str]) -> None:
        """An empty buffer of ``seconds`` at ``bin_hz``."""
        self.bin_hz = float(bin_hz)
        self.capacity = int(seconds * bin_hz)
        self.channels = tuple(channels)
        self._min = {c: np.zeros(self.capacity, dtype=np.float32) for c in self.channels}
        self._max = {c: np.zeros(self.capacity, dtype=np.float32) for c in self.channels}
        self.count = 0  # bins ever written
        self.t_end: float | None = None
        self.cautery = False
        self.version = 0

    def add(self, msg: Mapping[str, Any]) -> None:
        chans = msg.get("channels") or {}
        bin_hz = _num(msg.get("bin_hz"))
        if bin_hz and abs(bin_hz - self.bin_hz) > 1e-6:
            # another stream rate: start over at that rate (the buffer is only a display)
            self._start(self.capacity / self.bin_hz, bin_hz, self.channels)
        n = 0
        for c in self.channels:
            ch = chans.get(c) or {}
            lo = np.asarray(ch.get("min") or [], dtype=np.float32)
            hi = np.asarray(ch.get("max") or [], dtype=np.float32)
            n = max(n, min(len(lo), len(hi)))
        if n == 0:
            return
        n = min(n, self.capacity)
        start = self.count % self.capacity
        idx = (start + np.arange(n)) % self.capacity
        for c in self.channels:
            ch = chans.get(c) or {}
            lo = np.nan_to_num(np.asarray((ch.get("min") or [0.0] * n)[-n:], dtype=np.float32))
            hi = np.nan_to_num(np.asarray((ch.get("max") or [0.0] * n)[-n:], dtype=np.float32))
            if len(lo) < n or len(hi) < n:
                lo = np.resize(lo, n) if len(lo) else np.zeros(n, np.float32)
                hi = np.resize(hi, n) if len(hi) else np.zeros(n, np.float32)
            self._min[c][idx] = lo
            self._max[c][idx] = hi
        self.count += n
        t = _num(msg.get("t_s"))
        if t is not None:
            self.t_end = t + n / self.bin_hz
        self.cautery = bool(msg.get("cautery"))
        self.version += 1

    def window(self, channel: str, seconds: float, columns: int) -> tuple[np.ndarray, np.ndarray]:
        """(min, max) per column for the last ``seconds``; older-than-data columns are 0."""
        columns = max(1, int(columns))
        want = min(self.capacity, max(columns, int(seconds * self.bin_hz)))
        have = min(self.count, want)
        lo = np.zeros(want, dtype=np.float32)
        hi = np.zeros(want, dtype=np.float32)
        if have:
            end = self.count % self.capacity
            idx = (end - have + np.arange(have)) % self.capacity
            lo[want - have:] = self._min[channel][idx]
            hi[want - have:] = self._max[channel][idx]
        per = want // columns
        usable = per * columns
        lo = lo[want - usable:].reshape(columns, per).min(axis=1)
        hi = hi[want - usable:].reshape(columns, per).max(axis=1)
        return lo, hi


def choose_scale(peak_uV: float, current: float | None = None) -> float:
    """Smallest display half-range holding ``peak_uV``; keeps ``current`` unless the
    peak leaves it or shrinks below a third of it (hysteresis: no flicker)."""
    peak = abs(peak_uV) if math.isfinite(peak_uV) else 0.0
    fit = next((s for s in SCALES_UV if peak <= s * 0.95), SCALES_UV[-1])
    if current is not None and current in SCALES_UV:
        if peak <= current * 0.95 and peak >= current / 3.0:
            return current
    return fit


class EpochStore:
    """The last stimulus epoch shown per side (its own channel)."""

    def __init__(self, artifact_ms: float = 2.0) -> None:
        self.artifact_ms = artifact_ms
        self.epochs: dict[str, dict[str, Any]] = {}
        self.scale: dict[str, float] = {s: 500.0 for s in SIDES}  # what would fit each side's response
        self.peak: dict[str, float] = {s: 0.0 for s in SIDES}
        self.version = 0
        self.side_version: dict[str, int] = {s: 0 for s in SIDES}

    def add(self, msg: Mapping[str, Any]) -> None:
        """Keep a ``waveform`` message's epoch (its own side's channel)."""
        side = msg.get("side")
        if side not in SIDES:
            return
        ep = epoch_of(msg, self.artifact_ms)
        if ep is None:
            return
        t_ms, y = ep
        after = y[t_ms >= self.artifact_ms]
        peak = float(np.max(np.abs(after))) if len(after) else 0.0
        self.scale[side] = choose_scale(peak, self.scale.get(side))
        self.peak[side] = peak
        self.epochs[side] = {"t_ms": t_ms, "uV": y, "index": msg.get("index"), "t_s": _num(msg.get("t_s")),
                             "source": msg.get("source"), "site": msg.get("site")}
        self.version += 1
        self.side_version[side] += 1

    def get(self, side: str) -> dict[str, Any] | None:
        return self.epochs.get(side)


def epoch_of(msg: Mapping[str, Any], artifact_ms: float = 2.0) -> tuple[np.ndarray, np.ndarray] | None:
    """(t_ms, µV about the median after the artifact) of a ``waveform`` message's own side."""
    side = msg.get("side")
    values = (msg.get("channels") or {}).get(CHANNEL.get(str(side), ""))
    rate = _num(msg.get("sample_rate_hz"))
    t0 = _num(msg.get("t0_ms"))
    if not values or not rate or t0 is None:
        return None
    y = np.nan_to_num(np.asarray(values, dtype=np.float32))
    t_ms = t0 + 1000.0 * np.arange(len(y), dtype=np.float32) / rate
    after = y[t_ms >= artifact_ms]
    return t_ms, y - (float(np.median(after)) if len(after) else 0.0)


# the step whose waveform is the reference of a probe stimulus at each site
REFERENCE_STEP = {Site.VAGUS.value: Step.V1.value, Site.RLN.value: Step.R1.value, Site.EBSLN.value: Step.S1.value}


class References:
    """The reference waveform of each side (see the module docstring).

    ``add(waveform)`` keeps the last ``cache`` waveforms by stimulus index; ``update(state)``
    pins a step's waveform when the state shows the step with its ``stimulus_index``, and
    the continuous vagal baseline's (the mean of the side's last ``baseline_count`` vagal
    electrode waveforms) when the baseline is set. A reference recorded before this screen
    started (its waveform was never received) is known by its values only.
    ``for_epoch(side, site, source)`` says which reference applies to a live epoch.
    """

    def __init__(self, cache: int = 1500) -> None:
        self.cache_size = cache
        self._cache: collections.OrderedDict[int, dict[str, Any]] = collections.OrderedDict()
        self.refs: dict[tuple[str, str], dict[str, Any]] = {}
        self.case_id: Any = None
        self.version = 0

    def add(self, msg: Mapping[str, Any]) -> None:
        index = msg.get("index")
        side = msg.get("side")
        if not isinstance(index, int) or side not in SIDES:
            return
        ep = epoch_of(msg)
        if ep is None:
            return
        self._cache[index] = {"side": side, "site": msg.get("site"), "source": msg.get("source"),
                              "t_ms": ep[0], "uV": ep[1]}
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def update(self, state: Mapping[str, Any]) -> None:
        case = (state.get("case") or {}).get("case_id")
        if case != self.case_id:  # a new case (or none): its references start empty
            self.case_id = case
            if self.refs:
                self.refs = {}
                self.version += 1
        steps = state.get("steps") or {}
        for side in SIDES:
            for step in REFERENCE_STEP.values():
                v = (steps.get(side) or {}).get(step)
                if not isinstance(v, Mapping) or _num(v.get("amplitude_uV")) is None:
                    if self.refs.pop((side, step), None) is not None:
                        self.version += 1
                    continue
                index = v.get("stimulus_index", v.get("index"))
                old = self.refs.get((side, step))
                if old is not None and old.get("index") == index and old.get("amplitude_uV") == v.get("amplitude_uV"):
                    continue
                wave = self._cache.get(index) if isinstance(index, int) else None
                self.refs[(side, step)] = {"label": step, "index": index, "amplitude_uV": _num(v.get("amplitude_uV")),
                                           "t_ms": None if wave is None else wave["t_ms"],
                                           "uV": None if wave is None else wave["uV"]}
                self.version += 1
            self._update_baseline(side, (state.get("aps") or {}).get(side) or {})

    def _update_baseline(self, side: str, aps: Mapping[str, Any]) -> None:
        base = _num(aps.get("baseline_uV"))
        if base is None or aps.get("collecting"):
            return
        old = self.refs.get((side, "APS"))
        if old is not None and old.get("amplitude_uV") == base:
            return
        n = int(_num(aps.get("baseline_count")) or 20)
        waves = [w for w in reversed(self._cache.values()) if w["side"] == side and w["source"] == "APS"][:n]
        t_ms = uV = None
        if waves:
            shortest = min(len(w["uV"]) for w in waves)
            t_ms = waves[0]["t_ms"][:shortest]
            uV = np.mean([w["uV"][:shortest] for w in waves], axis=0).astype(np.float32)
        self.refs[(side, "APS")] = {"label": "baseline", "index": None, "amplitude_uV": base, "t_ms": t_ms, "uV": uV}
        self.version += 1

    def for_epoch(self, side: str, site: Any, source: Any) -> tuple[str, dict[str, Any] | None]:
        """(name of the reference, the reference or None) for a live epoch."""
        if source == "APS":
            return "vagal baseline", self.refs.get((side, "APS"))
        step = REFERENCE_STEP.get(str(site))
        if step is None:
            return "", None
        return step, self.refs.get((side, step))


class TrendStore:
    """Continuous vagal (APS) trend per side: amplitude and latency in % of baseline."""

    def __init__(self, capacity: int = 20000) -> None:
        self.capacity = capacity
        self.series: dict[str, dict[str, collections.deque]] = {s: self._empty() for s in SIDES}
        self.version = 0

    def _empty(self) -> dict[str, collections.deque]:
        return {k: collections.deque(maxlen=self.capacity) for k in ("t", "amp_pct", "lat_pct", "amp_uV", "lat_ms")}

    def load(self, result: Mapping[str, Any]) -> None:
        """Replace with the engine's ``trend.get`` result (APS series only)."""
        for s in SIDES:
            self.series[s] = self._empty()
        for ser in result.get("series") or []:
            if ser.get("source") != "APS" or ser.get("side") not in SIDES:
                continue
            d = self.series[ser["side"]]
            t = ser.get("t_s") or []
            cols = [ser.get("amplitude_pct") or [], ser.get("latency_pct") or [],
                    ser.get("amplitude_uV") or [], ser.get("latency_ms") or []]
            for i, ti in enumerate(t):
                vals = [c[i] if i < len(c) else None for c in cols]
                self._append(d, ti, *vals)
        self.version += 1

    def add(self, msg: Mapping[str, Any]) -> None:
        if msg.get("source") != "APS" or msg.get("side") not in SIDES:
            return
        valid = msg.get("valid", True)
        self._append(self.series[msg["side"]], msg.get("t_s"),
                     msg.get("amplitude_pct") if valid else None, msg.get("latency_pct") if valid else None,
                     msg.get("amplitude_uV") if valid else None, msg.get("latency_ms") if valid else None)
        self.version += 1

    @staticmethod
    def _append(d: Mapping[str, collections.deque], t: Any, amp_pct: Any, lat_pct: Any, amp: Any, lat: Any) -> None:
        tt = _num(t)
        if tt is None:
            return
        d["t"].append(tt)
        for key, v in (("amp_pct", amp_pct), ("lat_pct", lat_pct), ("amp_uV", amp), ("lat_ms", lat)):
            x = _num(v)
            d[key].append(math.nan if x is None else x)

    def arrays(self, side: str) -> dict[str, np.ndarray]:
        d = self.series[side]
        return {k: np.fromiter(v, dtype=np.float64, count=len(v)) for k, v in d.items()}

    def has_data(self, side: str) -> bool:
        """Whether the side has any continuous vagal point."""
        return len(self.series[side]["t"]) > 0

    def last(self, side: str) -> tuple[float, float, float] | None:
        """(t_s, amplitude %, latency %) of the side's last vagal electrode stimulus with a
        percentage of baseline, or None."""
        d = self.series[side]
        for i in range(len(d["t"]) - 1, max(-1, len(d["t"]) - 50), -1):
            if not math.isnan(d["amp_pct"][i]):
                return d["t"][i], d["amp_pct"][i], d["lat_pct"][i]
        return None


def decimate_xy(x: np.ndarray, y: np.ndarray, columns: int) -> tuple[np.ndarray, np.ndarray]:
    """At most 2 points per column (the column's min and max, in time order), NaNs dropped.

    ``x`` must be ascending (time). Vectorised: no Python loop over columns."""
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(x) <= 2 * columns or columns <= 0:
        return x, y
    span = x[-1] - x[0]
    col = np.minimum(((x - x[0]) / (span if span > 0 else 1.0) * columns).astype(np.int64), columns - 1)
    idx = np.arange(len(y))
    # index of the min and of the max in each column (ties: the first)
    order_min = np.lexsort((idx, y, col))  # by column, then value, then index
    first_in_col = np.r_[True, col[order_min][1:] != col[order_min][:-1]]
    i_min = order_min[first_in_col]
    order_max = np.lexsort((idx, -y, col))
    first_in_col = np.r_[True, col[order_max][1:] != col[order_max][:-1]]
    i_max = order_max[first_in_col]
    pick = np.unique(np.concatenate([i_min, i_max]))
    return x[pick], y[pick]


class SiteHistory:
    """Recent measurements per site and side: (t_s, amplitude_uV or nan, response)."""

    def __init__(self, per_site: int = 3000) -> None:
        self.per_site = per_site
        self.data: dict[str, collections.deque] = {}
        self.version = 0

    def add(self, msg: Mapping[str, Any]) -> None:
        site, side = msg.get("site"), msg.get("side")
        t = _num(msg.get("t_s"))
        if site in (None, "UNTAGGED") or side not in SIDES or t is None or not msg.get("valid", False):
            return
        key = f"{site}-{side}"
        d = self.data.setdefault(key, collections.deque(maxlen=self.per_site))
        amp = _num(msg.get("amplitude_uV"))
        d.append((t, math.nan if amp is None else amp, bool(msg.get("response"))))
        self.version += 1

    def since(self, key: str, t0: float) -> list[tuple[float, float, bool]]:
        return [p for p in self.data.get(key, ()) if p[0] >= t0]


class EventLog:
    """The last ``capacity`` events (engine ``event`` messages), oldest first."""

    ALARM_KINDS = {"raised", "acknowledged", "audio_paused", "audio_off", "reset", "escalated", "cleared"}

    def __init__(self, capacity: int = 1000) -> None:
        self.events: collections.deque[dict[str, Any]] = collections.deque(maxlen=capacity)
        self.last_seq = -1
        self.version = 0

    def reset(self) -> None:
        """Forget everything (a new connection: the engine may have restarted and numbers its
        events from the start again; ``load`` brings its list back)."""
        self.events.clear()
        self.last_seq = -1
        self.version += 1

    def add(self, msg: Mapping[str, Any]) -> None:
        seq = msg.get("seq")
        if isinstance(seq, int):
            if seq <= self.last_seq:
                return
            self.last_seq = seq
        self.events.append(dict(msg))
        self.version += 1

    def load(self, events: Iterable[Mapping[str, Any]]) -> None:
        """Merge the engine's ``events.list`` (older events may arrive after newer stream ones)."""
        merged: dict[Any, dict[str, Any]] = {}
        for ev in list(self.events) + [dict(e) for e in events]:
            seq = ev.get("seq")
            merged[seq if isinstance(seq, int) else ("no-seq", id(ev))] = ev
        def order(e: dict[str, Any]) -> int:
            seq = e.get("seq")
            return seq if isinstance(seq, int) else -1

        ordered = sorted(merged.values(), key=order)
        self.events.clear()
        self.events.extend(ordered[-(self.events.maxlen or len(ordered)):])
        seqs = [e["seq"] for e in ordered if isinstance(e.get("seq"), int)]
        self.last_seq = max(seqs + [self.last_seq])
        self.version += 1

    def of_case(self) -> list[dict[str, Any]]:
        """The events from the last case's opening on, oldest first: a new case's list starts
        empty (a case brought back after a restart keeps its own); everything, if none opened."""
        events = list(self.events)
        for i in range(len(events) - 1, -1, -1):
            if events[i].get("category") == "case" and events[i].get("kind") == "opened":
                return events[i:]
        return events

    def alarm_history(self) -> list[dict[str, Any]]:
        """Alarm and adverse-event history of the case, newest first."""
        out = [e for e in self.of_case()
               if e.get("category") == "alarm" or (e.get("category") in ("rule", "technical") and e.get("priority"))]
        return list(reversed(out))
