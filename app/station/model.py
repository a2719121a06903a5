"""The live model of one OR at the reading station (pure: no sockets, no threads, time passed in).

Owns: ``OrModel``: what the appliance published (status, state, alarms, health, reader
messages), the case so far (every event by its journal sequence number, every stimulus's
measurement with its percentage of the baseline in force, the last epochs per side, the
free-running EMG of the last seconds), gap detection on the events' ``prev`` chain, the
merging of backfill answers, and the views the browser gets (``tile``, ``case_view``).
May import: the standard library, ``app.remote.protocol``.

A day, not a case: when the appliance's case changes, everything case-scoped starts empty.
Every payload is checked before it touches the model (``apply`` returns no deltas and
counts the message as refused when a payload is not what ``docs/remote.md`` says).
"""

from __future__ import annotations

import collections
from typing import Any
from collections.abc import Mapping

from app.remote import protocol as rp

MAX_MEASUREMENTS = 50000
MAX_EVENTS = 20000
TREND_POINTS = 600  # per side in a tile
EMG_SECONDS = 10.0
SIDES = ("L", "R")


def _is_obj(x: Any) -> bool:
    return isinstance(x, Mapping)


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


class OrModel:
    """One OR as one reader's station sees it (see the module docstring)."""

    def __init__(self, appliance: str) -> None:
        self.appliance = appliance
        self.status: dict[str, Any] | None = None
        self.state: dict[str, Any] | None = None
        self.alarms: dict[str, Any] | None = None
        self.health: dict[str, Any] | None = None
        self.last_seen: float | None = None  # wall time of the last message from the appliance
        self.refused = 0
        self._reset_case(None)

    def _reset_case(self, case_id: str | None) -> None:
        self.case_id = case_id
        # the reader messages are the case's too; an inbox that came before its case's first
        # state or event (the appliance publishes them in no fixed order) is kept for it
        pending: dict[str, Any] | None = getattr(self, "_pending_messages", None)
        self.messages = pending if pending is not None and pending.get("case_id") == case_id else None
        self._pending_messages: dict[str, Any] | None = None
        self.events: dict[int, dict[str, Any]] = {}
        self._next: dict[int, int] = {}  # prev -> seq
        self.contiguous = -1  # every event up to this seq is here
        self.measurements: dict[int, dict[str, Any]] = {}
        self.baselines: list[dict[str, Any]] = []  # baseline_set events, in seq order
        self.waveforms: dict[str, dict[str, Any]] = {}  # side -> last epoch
        self.emg: collections.deque[dict[str, Any]] = collections.deque(maxlen=int(EMG_SECONDS * 10))
        self.backfilled = False

    # ------------------------------------------------------------------ input

    def apply(self, kind: str, payload: Any, now: float) -> list[dict[str, Any]]:
        """One message from the appliance; returns the deltas for the browsers."""
        if not _is_obj(payload) or payload.get("v") != rp.VERSION:
            self.refused += 1
            return []
        self.last_seen = now
        handler = getattr(self, "_on_" + kind, None)
        if handler is None:
            return []
        try:
            return handler(payload)
        except (KeyError, TypeError, ValueError, AttributeError):
            self.refused += 1
            return []

    def _delta(self, kind: str, data: Any) -> dict[str, Any]:
        return {"or": self.appliance, "kind": kind, "data": data}

    def _follow(self, case_id: Any) -> list[dict[str, Any]]:
        """The appliance is on another case (or none): the case-scoped part starts empty."""
        if case_id is not None and not isinstance(case_id, str):
            raise ValueError("case_id")
        if case_id == self.case_id:
            return []
        self._reset_case(case_id)
        out = [self._delta("case", {"case_id": case_id})]
        if self.messages is not None:
            out.append(self._delta("messages", self.messages))
        state_case = (self.state or {}).get("case") or {}
        if self.state is not None and state_case.get("case_id") != case_id:
            self.state = None  # the last case's steps and values: gone until the appliance's next state
            out.append(self._delta("state", None))
        return out

    def _on_status(self, p: Mapping[str, Any]) -> list[dict[str, Any]]:
        if p.get("status") not in ("online", "offline"):
            raise ValueError("status")
        self.status = dict(p)
        return [self._delta("status", self.status)]

    def _on_state(self, p: Mapping[str, Any]) -> list[dict[str, Any]]:
        if not _is_obj(p["state"]):
            raise ValueError("state")
        out = self._follow(p.get("case_id"))
        self.state = dict(p["state"])
        return out + [self._delta("state", self.state)]

    def _on_alarm(self, p: Mapping[str, Any]) -> list[dict[str, Any]]:
        if not isinstance(p.get("active"), list):
            raise ValueError("active")
        self.alarms = dict(p)
        return [self._delta("alarm", self.alarms)]

    def _on_health(self, p: Mapping[str, Any]) -> list[dict[str, Any]]:
        self.health = dict(p)
        return [self._delta("health", self.health)]

    def _on_messages(self, p: Mapping[str, Any]) -> list[dict[str, Any]]:
        if not isinstance(p.get("messages"), list):
            raise ValueError("messages")
        case_id = p.get("case_id")
        if case_id is not None and not isinstance(case_id, str):
            raise ValueError("case_id")
        if case_id not in (None, self.case_id):
            self._pending_messages = dict(p)  # a case this station does not follow yet
            return []
        self.messages = dict(p)
        return [self._delta("messages", self.messages)]

    def _on_event(self, p: Mapping[str, Any]) -> list[dict[str, Any]]:
        ev = self._check_event(p)
        out: list[dict[str, Any]] = []
        if ev["case_id"] != self.case_id:
            if ev["kind"] != "case_opened" and self.case_id is not None:
                return []  # a late event of a case this station has left
            out = self._follow(ev["case_id"])
        if self._add_event(ev):
            out.append(self._delta("event", ev))
        return out

    @staticmethod
    def _check_event(p: Mapping[str, Any]) -> dict[str, Any]:
        seq, prev = p["seq"], p["prev"]
        if not isinstance(seq, int) or not isinstance(prev, int) or isinstance(seq, bool) or not -1 <= prev < seq:
            raise ValueError("seq")
        if not isinstance(p["case_id"], str) or not isinstance(p["kind"], str) or not isinstance(p["text"], str):
            raise ValueError("event")
        return dict(p)

    def _add_event(self, ev: dict[str, Any]) -> bool:
        seq = ev["seq"]
        if seq in self.events:
            return False
        if len(self.events) >= MAX_EVENTS:
            return False
        self.events[seq] = ev
        self._next[ev["prev"]] = seq
        while self.contiguous in self._next:
            self.contiguous = self._next[self.contiguous]
        if ev["kind"] == "rule_event" and (ev.get("detail") or {}).get("kind") == "baseline_set":
            self.baselines.append(ev)
            self.baselines.sort(key=lambda e: e["seq"])
        return True

    def _on_measurement(self, p: Mapping[str, Any]) -> list[dict[str, Any]]:
        if p.get("case_id") != self.case_id:
            return []
        m = self._add_measurement(p)
        return [self._delta("measurement", m)] if m is not None else []

    def _add_measurement(self, p: Mapping[str, Any]) -> dict[str, Any] | None:
        index = p["index"]
        if not isinstance(index, int) or isinstance(index, bool) or p.get("side") not in SIDES:
            raise ValueError("index")
        m = {k: p.get(k) for k in ("index", "t_s", "site", "side", "source", "set_mA", "delivered_mA", "step",
                                   "valid", "invalid_reason", "response", "amplitude_uV", "latency_ms",
                                   "amplitude_pct", "latency_pct")}
        if m["amplitude_pct"] is None:
            m["amplitude_pct"], m["latency_pct"] = self._percent(m)
        if index not in self.measurements and len(self.measurements) >= MAX_MEASUREMENTS:
            oldest = min(self.measurements)
            del self.measurements[oldest]
        self.measurements[index] = m
        return m

    def _percent(self, m: Mapping[str, Any]) -> tuple[float | None, float | None]:
        """% of the baseline in force at this stimulus (same side, site and source)."""
        amp, lat = _num(m.get("amplitude_uV")), _num(m.get("latency_ms"))
        if amp is None or not m.get("valid"):
            return None, None
        base = None
        for ev in self.baselines:
            d = ev.get("detail") or {}
            if (ev.get("side") == m.get("side") and ev.get("site") == m.get("site")
                    and (d.get("detail") or {}).get("source") == m.get("source")
                    and (d.get("stimulus_index") is None or d["stimulus_index"] <= m["index"])):
                base = d.get("detail") or {}
        if not base or not _num(base.get("amplitude_uV")):
            return None, None
        amp_pct = round(amp / float(base["amplitude_uV"]) * 100.0, 1)
        lat_pct = round(lat / float(base["latency_ms"]) * 100.0, 1) if lat is not None and _num(
            base.get("latency_ms")) else None
        return amp_pct, lat_pct

    def _on_waveform(self, p: Mapping[str, Any]) -> list[dict[str, Any]]:
        if p.get("case_id") != self.case_id or p.get("side") not in SIDES or not _is_obj(p.get("channels")):
            return []
        self.waveforms[p["side"]] = dict(p)
        return [self._delta("waveform", self.waveforms[p["side"]])]

    def _on_emg(self, p: Mapping[str, Any]) -> list[dict[str, Any]]:
        if not _is_obj(p.get("channels")):
            raise ValueError("channels")
        self.emg.append(dict(p))
        return [self._delta("emg", dict(p))]

    def apply_history(self, p: Mapping[str, Any], now: float) -> list[dict[str, Any]]:
        """A backfill answer (one part): events and measurements of the case so far."""
        if not _is_obj(p) or p.get("v") != rp.VERSION or p.get("type") != "backfill":
            self.refused += 1
            return []
        out: list[dict[str, Any]] = []
        if p.get("case_id") != self.case_id:
            if self.case_id is not None or p.get("case_id") is None:
                return []
            out = self._follow(p.get("case_id"))
        added: list[dict[str, Any]] = []
        for raw in p.get("events") or []:
            try:
                ev = self._check_event(raw)
            except (KeyError, TypeError, ValueError):
                self.refused += 1
                continue
            if ev["case_id"] == self.case_id and self._add_event(ev):
                added.append(ev)
        # an event only the backfill brought is news for the tiles as much as a live one (a part
        # holds at most a few hundred; the browser keeps them in sequence order)
        out.extend(self._delta("event", ev) for ev in sorted(added, key=lambda e: e["seq"]))
        for raw in p.get("measurements") or []:
            try:
                self._add_measurement(raw)
            except (KeyError, TypeError, ValueError):
                self.refused += 1
        if p.get("measurements") is not None:
            self.backfilled = True
        self.last_seen = now
        out.append(self._delta("backfilled", {"events": len(added), "last": bool(p.get("last")),
                                              "contiguous": self.contiguous}))
        return out

    # ------------------------------------------------------------------ questions

    @property
    def newest_seq(self) -> int:
        return max(self.events) if self.events else -1

    def has_gap(self) -> bool:
        return self.newest_seq > self.contiguous

    def missing(self) -> list[tuple[int, int]]:
        """Where events are known to be missing: ``(after, before)`` pairs of sequence numbers
        (the event ``before`` names ``after`` as its predecessor, and ``after`` is not here)."""
        return [(ev["prev"], seq) for seq, ev in sorted(self.events.items())
                if ev["prev"] != -1 and ev["prev"] not in self.events]

    # ------------------------------------------------------------------ views

    def _trend(self, side: str, limit: int | None) -> dict[str, list[Any]]:
        ms = [m for m in self.measurements.values() if m["side"] == side and m.get("source") == "APS"]
        ms.sort(key=lambda m: m["index"])
        if limit is not None:
            ms = ms[-limit:]
        return {"index": [m["index"] for m in ms], "t_s": [m["t_s"] for m in ms],
                "amplitude_pct": [m["amplitude_pct"] for m in ms], "latency_pct": [m["latency_pct"] for m in ms],
                "amplitude_uV": [m["amplitude_uV"] for m in ms], "latency_ms": [m["latency_ms"] for m in ms]}

    def tile(self, now: float) -> dict[str, Any]:
        """What a tile shows (and the browser keeps updating from the deltas)."""
        return {"appliance": self.appliance, "case_id": self.case_id, "status": self.status, "state": self.state,
                "alarms": self.alarms, "health": self.health, "messages": self.messages,
                "last_seen": self.last_seen, "now": now,
                "events": [self.events[s] for s in sorted(self.events)[-50:]],
                "trend": {side: self._trend(side, TREND_POINTS) for side in SIDES},
                "waveforms": self.waveforms, "gap": self.has_gap(), "contiguous": self.contiguous}

    def case_view(self) -> dict[str, Any]:
        """The whole case so far, for the focus view."""
        ms = sorted(self.measurements.values(), key=lambda m: m["index"])
        return {"appliance": self.appliance, "case_id": self.case_id, "state": self.state, "alarms": self.alarms,
                "messages": self.messages, "events": [self.events[s] for s in sorted(self.events)],
                "measurements": ms, "trend": {side: self._trend(side, None) for side in SIDES},
                "missing": self.missing(), "contiguous": self.contiguous, "backfilled": self.backfilled,
                "emg": list(self.emg)}
