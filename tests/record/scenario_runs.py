"""Every shipped scenario run once per test session, with its documentation made from the journal.

``scenario_case(name, tmp_path_factory)`` plays the scenario through the real wire protocol
(``app.engine.simulate.run_scenario``), then builds from the journal what a reader gets:
the case document, the EDF+ export, and ``lnm analyze``'s result on that export. Cached:
the parity and the report tests share the runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.analysis.edf import read_edf
from app.commands.analyze import analyze_recording
from app.engine.simulate import format_summary, run_scenario
from app.record import Journal
from app.record.document import build_document
from app.record.edf_export import write_case_edf
from app.record.export import waveform_loader
from app.settings import Settings
from firmware_bridge.sim.scenario import list_scenarios, load_scenario

SCENARIOS = list_scenarios()


@dataclass
class ScenarioCase:
    name: str
    folder: Path
    journal: Journal
    case_id: str
    summary: str
    doc: dict[str, Any]
    edf: Path
    analysis: dict[str, Any]

    def waveforms(self) -> Any:
        return waveform_loader(self.journal, self.case_id)


_CACHE: dict[str, ScenarioCase] = {}


def scenario_case(name: str, tmp_path_factory: Any) -> ScenarioCase:
    if name not in _CACHE:
        d = tmp_path_factory.mktemp(f"scenario-{name}")
        journal = Journal(d / "journal.db")
        res = run_scenario(load_scenario(name), Settings(), journal=journal, out_dir=d, write_documents=False)
        assert res.closed and res.case_id, format_summary(res)
        doc = build_document(journal, res.case_id)
        edf = d / "case.edf"
        write_case_edf(journal, res.case_id, edf)
        analysis = analyze_recording(read_edf(edf, lazy=True), Settings())
        _CACHE[name] = ScenarioCase(name, d, journal, res.case_id, format_summary(res), doc, edf, analysis)
    return _CACHE[name]
