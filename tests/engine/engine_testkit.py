"""Helpers for the engine tests: a stepped system with a real journal, and small waits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from app.engine.core import EngineOptions
from app.engine.outputs import make_outputs
from app.engine.stepped import SteppedSystem
from app.model import Measurement
from app.settings import Settings


class PeakAnalyzer:
    """A deliberately simple stand-in for ``app.analysis.EpochAnalyzer`` (peak-to-peak after
    the artifact), for tests of the engine's plumbing that must not depend on the analysis."""

    def __init__(self, settings: Settings) -> None:
        self.th = float(settings["analysis.event_threshold_uV"])

    def measure_board_epoch(self, e: Any, stim: Any, channel_labels: Any = None, other_onsets: Any = ()) -> Measurement:
        uv = e.microvolts()
        ch = 0 if stim.side.value == "L" else 1
        w = uv[ch, e.pre_samples + int(0.002 * e.sample_rate_hz):]
        w = w - np.median(w)
        amp = float(w.max() - w.min())
        if stim.delivered_mA is not None and stim.delivered_mA < 0.95 * stim.set_mA:
            from app.model import InvalidReason

            return Measurement(stim, stim.side.channel, False, InvalidReason.NO_CURRENT, False, None, None, None)
        resp = amp >= self.th
        lat = float(np.argmax(np.abs(w)) / e.sample_rate_hz * 1000 + 2.0) if resp else None
        return Measurement(stim, stim.side.channel, True, None, resp, amp, lat, lat)


def stepped(tmp_path: Path | None = None, *, scenario: Any = None, seed: int = 3, settings: Settings | None = None,
            fake_analysis: bool = False, journal: Any = None, **kw: Any) -> SteppedSystem:
    from app.record.journal import Journal

    holder: dict[str, Any] = {}
    if journal is None and tmp_path is not None:
        journal = Journal(tmp_path / "journal.db", retry_interval_s=kw.pop("retry_interval_s", 1.0),
                          on_status=lambda st: holder["mon"].storage_status(st.ok, st.message)
                          if "mon" in holder else None)
    mk: dict[str, Any] = dict(kw.pop("monitor_kwargs", {}))
    if fake_analysis:
        mk.update(analyzer_factory=PeakAnalyzer, detector_factory=None)
    events: list[dict[str, Any]] = []
    system = SteppedSystem(settings or Settings(), scenario=scenario, seed=seed, journal=journal,
                           sink=lambda stream, msg, sticky: events.append(dict(msg)) if stream == "events" else None,
                           options=kw.pop("options", EngineOptions()), monitor_kwargs=mk, **kw)
    system.events = events  # type: ignore[attr-defined]
    mon = system.monitor
    holder["mon"] = mon
    if journal is not None and hasattr(journal, "_clock"):
        journal._clock = system.clock  # the journal's retry timing follows the simulated time
    mon.outputs = make_outputs(mon.alarms, system.clock, mon.settings, audio="capture", gpio="sim",
                               on_footswitch=mon.footswitch, keep_samples=False)
    return system


def alarm_raises(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in events if e.get("category") == "alarm" and e.get("kind") in ("raised", "re_raised")
            and (e.get("detail") or {}).get("kind") == kind]


def rule_events(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in events if e.get("category") == "rule" and e.get("kind") == kind]
