"""The storage life cycle in the engine: retention pruning runs by itself at start-up when no
case is open (in the documents worker, never in monitoring's way), journals a summary, and
leaves alone what is open, not exported or changed since its export."""

from __future__ import annotations

import queue
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import numpy as np

from app.engine.service import EngineService
from app.model import Measurement, Side, Site, Source, Stimulus
from app.record import entries as E
from app.record.journal import Journal
from app.record.usb import export_case
from app.settings import Settings
from engine_testkit import stepped


def _case(j: Journal, cid: str, close: bool = True) -> None:
    rng = np.random.default_rng(1)
    j.open_case({"patient_id": cid, "planned_sides": ["L"], "case_id": cid})
    for i in range(4):
        m = Measurement(Stimulus(i, float(i), Site.VAGUS, Side.L, Source.APS, 1.0, 1.0), "EMG L", True, None, True,
                        500.0, 7.9, 7.0)
        j.append(cid, "stimulus", *E.stimulus(m, rng.normal(0, 30, (2, 1200)), 20000, 200), t_s=float(i))
    if close:
        j.close_case(cid)


class _Later(datetime):
    """Forty days from now (the cases were closed "long ago")."""

    @classmethod
    def now(cls, tz=None):  # noqa: D102 - datetime's own
        return datetime.now(tz or UTC) + timedelta(days=40)


def _service(j: Journal, days: int):
    svc = EngineService.__new__(EngineService)  # the start-up step alone, on a stepped engine
    svc.config = SimpleNamespace(settings=Settings().with_changes({"record.retention_days": days}))
    svc.system = stepped(journal=j)
    svc.monitor = svc.system.monitor
    svc.journal = j
    svc.worker = ThreadPoolExecutor(max_workers=1)
    svc.queue = queue.Queue()
    return svc


def test_retention_prunes_at_start_what_was_exported_and_verified_and_journals_it(tmp_path, monkeypatch):
    media = tmp_path / "media"
    (media / "stick").mkdir(parents=True)
    with Journal(tmp_path / "journal.db") as j:
        for cid in ("OLD-EXPORTED", "OLD-NOT-EXPORTED"):
            _case(j, cid)
        export_case(j, "OLD-EXPORTED", target=media / "stick", roots=[media], env={})
        monkeypatch.setattr("app.record.storage.datetime", _Later)
        svc = _service(j, 30)
        try:
            svc._retention()
            item = svc.queue.get(timeout=60)
        finally:
            svc.worker.shutdown(wait=True)
        assert item[0] == "retention" and item[1] == 30
        svc._retention_done(*item[1:])
        states = {r.case_id: r.event for r in j.index_rows()[0] if r.event in ("closed", "pruned")}
        assert states == {"OLD-EXPORTED": "pruned", "OLD-NOT-EXPORTED": "closed"}
        assert j.conn.execute("SELECT count(*) FROM entries WHERE case_id='OLD-EXPORTED'").fetchone()[0] == 0
        assert j.verify("OLD-NOT-EXPORTED").ok
        svc.system.run_for(0.5)
        said = [e for e in svc.system.events if e.get("kind") == "retention"]
        assert said and "1 case(s) older than 30 days, exported and verified" in said[0]["message"], said


def test_retention_waits_while_a_case_is_open_and_is_off_at_zero(tmp_path, monkeypatch):
    media = tmp_path / "media"
    (media / "stick").mkdir(parents=True)
    monkeypatch.setattr("app.record.storage.datetime", _Later)
    with Journal(tmp_path / "journal.db") as j:
        _case(j, "OLD")
        export_case(j, "OLD", target=media / "stick", roots=[media], env={})
        for days, open_case in ((0, False), (30, True)):
            svc = _service(j, days)
            if open_case:
                svc.system.run_for(0.5)
                svc.system.must("case.start", patient_id="NOW", planned_sides=["L"])
            try:
                svc._retention()
            finally:
                svc.worker.shutdown(wait=True)
            assert svc.queue.empty()
        assert {r.event for r in j.index_rows()[0] if r.case_id == "OLD"} >= {"closed"}
        assert "pruned" not in {r.event for r in j.index_rows()[0] if r.case_id == "OLD"}
