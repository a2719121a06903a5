"""The case document (lnm-case/1) and the PDF report, from journal entries only."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess

import numpy as np
import pytest
from pypdf import PdfReader

from app import format as F
from app.cli import main
from app.model import Measurement, Side, Site, Source, Step, Stimulus
from app.record import Journal
from app.record import entries as E
from app.record.document import build_document
from app.record.export import write_documents


@pytest.fixture(scope="module")
def doc(synthetic_journal):
    path, cid = synthetic_journal
    with Journal(path, readonly=True) as j:
        return build_document(j, cid)


def test_header_and_journal_fields(doc, synthetic_journal):
    _, cid = synthetic_journal
    assert doc["format"] == "lnm-case/1"
    c = doc["case"]
    assert c["case_id"] == cid and c["patient_id"] == "PSN-2026-0042"
    assert c["planned_sides"] == ["R", "L"] and c["tube"]["depth_cm"] == 20.5
    assert c["software_version"] and c["closed"] and c["close_reason"] == "end of surgery"
    assert c["surgeon"] is None and doc["generated"]["pseudonymised"] is True  # pseudonymised by default
    j = doc["journal"]
    assert j["verified"] is True and len(j["last_hash"]) == 64 and j["open"] is False
    assert doc["settings"]["values"]["analysis.event_threshold_uV"] == 100.0
    assert "ui.settings_pin" not in doc["settings"]["values"]
    assert doc["settings"]["changes"][0]["key"] == "analysis.event_threshold_uV"
    assert doc["tube_check"][0]["passed"] is True


def test_steps_per_side_come_from_the_journal(doc, synthetic_journal):
    path, cid = synthetic_journal
    with Journal(path, readonly=True) as j:
        steps = {(e.payload["side"], e.payload["step"]): e.payload for e in j.entries(cid, kinds=["step"])}
        stim = {e.payload["index"]: e for e in j.entries(cid, kinds=["stimulus"], blobs=False)}
    for side in "LR":
        s = doc["sides"][side]
        assert s["planned"]
        for step in ("V1", "R1", "R2", "V2"):
            v = s["steps"][step]
            p = steps[(side, step)]
            assert v["amplitude_uV"] == F.amplitude_uV(p["amplitude_uV"])  # rounded once, as everywhere
            assert v["set_mA"] == p["set_mA"] and v["delivered_mA"] == p["delivered_mA"]
            assert stim[v["stimulus_index"]].seq == v["stimulus_seq"]  # the waveform reference
        assert s["steps"]["S1"] is None and s["steps"]["R2P"] is None
    assert doc["sides"]["R"]["steps"]["R2"]["response"] is False
    assert doc["sides"]["R"]["steps"]["L2"]["finding"] == "paresis"
    assert doc["sides"]["L"]["steps"]["L1"]["finding"] == "normal"
    v1, v2 = doc["sides"]["L"]["steps"]["V1"], doc["sides"]["L"]["steps"]["V2"]
    assert doc["sides"]["L"]["v2_of_v1_pct"] == F.percent(v2["amplitude_uV"] / v1["amplitude_uV"] * 100)


def test_adverse_events_with_what_was_done(doc):
    eps = {e["kind"]: e for e in doc["adverse_events"]}
    los = eps["loss_of_signal"]
    assert los["side"] == "R" and los["site"] == "RLN"
    assert los["acknowledged"]["who"] == "surgeon" and los["acknowledged"]["after_s"] == pytest.approx(6.0, abs=0.1)
    assert [t["check"] for t in los["troubleshooting"]][:3] == ["current_delivered", "leads_ok", "field_dry"]
    assert los["los_type"]["type"] == 1 and len(los["mapping"]) == 4
    assert los["recovered_t_s"] is None
    assert los["staging"][-1]["decision"] == "proceed_second_side" and los["staging"][-1]["reason"]
    comb = eps["combined_event"]
    assert comb["side"] == "L" and comb["recovery_s"] is not None and 0 < comb["recovery_s"] < 600
    assert comb["acknowledged"]["who"] == "surgeon"
    times = [it["t_s"] for it in doc["timeline"]]
    assert times == sorted(times)
    kinds = {it["type"] for it in doc["timeline"]}
    assert {"rule_event", "alarm", "troubleshooting", "los_type", "staging", "step"} <= kinds
    assert len(doc["irritation"]) == 6 and doc["cautery"]["episodes"] == 20
    assert doc["notes"][0]["text"].startswith("Right upper pole")
    aps = doc["trends"]["L"]["aps"]
    assert len(aps["t_s"]) == len(aps["amplitude_uV"]) > 500
    assert doc["trends"]["L"]["baselines"][0]["amplitude_uV"] == pytest.approx(560, rel=0.1)
    assert doc["trends"]["R"]["aps"] is None and "RLN" in doc["trends"]["R"]["probe"]
    assert doc["emg_stream"]["blocks"] == 60
    json.dumps(doc, allow_nan=False)  # plain JSON


def test_identified_keeps_the_surgeon(synthetic_journal):
    path, cid = synthetic_journal
    with Journal(path, readonly=True) as j:
        d = build_document(j, cid, identified=True, verify=False)
    assert d["case"]["surgeon"] == "Dr. A. Example" and d["journal"]["verified"] is None


def test_minimal_and_one_sided_cases_are_documented(tmp_path):
    path = tmp_path / "j.db"
    with Journal(path, durable=False) as j:
        empty = j.open_case({"patient_id": "PSN-E", "planned_sides": ["L"]})
        one = j.open_case({"patient_id": "PSN-1", "planned_sides": ["L"]})
        stim = Stimulus(0, 5.0, Site.VAGUS, Side.L, Source.PROBE, 1.0, None, 100, Step.V1)
        m = Measurement(stim, "EMG L", True, None, True, 480.0, 7.7, 6.9)
        j.append(one, "stimulus", *E.stimulus(m, np.zeros((2, 1200)), 20000, 200), t_s=5.0)  # tagged only
        j.append(one, "note", {"text": "<b>&amp; nothing else"})
    with Journal(path, readonly=True) as j:
        for cid in (empty, one):
            d = build_document(j, cid)
            assert d["journal"]["open"] is True and d["trends"]["L"]["aps"] is None
            r = write_documents(j, cid, {"pdf": tmp_path / f"{cid}.pdf", "json": tmp_path / f"{cid}.json"})
            assert r.exit_code == 0, r.messages
            text = "".join(p.extract_text() for p in PdfReader(tmp_path / f"{cid}.pdf").pages)
            assert cid in text and "not recorded" in text
        d = build_document(j, one)
        v1 = d["sides"]["L"]["steps"]["V1"]
        assert v1["how"] == "tagged" and v1["amplitude_uV"] == 480.0 and v1["delivered_mA"] is None
        assert d["sides"]["R"]["planned"] is False and d["sides"]["R"]["has_data"] is False
        assert "<b>&amp; nothing else" in "".join(p.extract_text() for p in PdfReader(tmp_path / f"{one}.pdf").pages)


def _pgm_pixels(data: bytes) -> np.ndarray:
    # binary PGM: P5\n<w> <h>\n<max>\n<pixels>
    parts = data.split(b"\n", 3)
    w, h = map(int, parts[1].split())
    return np.frombuffer(parts[3][: w * h], dtype=np.uint8).reshape(h, w)


def test_pdf_renders_and_says_what_the_journal_says(doc, synthetic_journal, tmp_path):
    path, cid = synthetic_journal
    out = tmp_path / "report.pdf"
    assert main(["report", cid, "--journal", str(path), "--out", str(out), "--json", str(tmp_path / "c.json")]) == 0
    reader = PdfReader(out)
    pages = [p.extract_text() for p in reader.pages]
    text = "\n".join(pages)
    for needle in ("PSN-2026-0042", cid, "Loss of signal", "Combined event", "Signal recovered", "type 1",
                   "proceed to the second side", "hash chain intact", "Troubleshooting", "Signature", "paresis",
                   doc["journal"]["last_hash"][:16]):
        assert needle in text, needle
    for side in "LR":
        for step in ("V1", "R1", "V2"):
            assert f"{doc['sides'][side]['steps'][step]['amplitude_uV']:.0f}" in text
    assert "Dr. A. Example" not in text  # pseudonymised
    n = len(pages)
    for i, page in enumerate(pages, start=1):
        assert f"page {i} of {n}" in page and cid in page
    assert json.loads((tmp_path / "c.json").read_text())["format"] == "lnm-case/1"
    if shutil.which("pdftoppm") is None:
        pytest.skip("pdftoppm (poppler-utils) is not installed: the PDF was checked by its text only")
    png = subprocess.run(["pdftoppm", "-gray", "-r", "40", "-f", "1", "-l", "2", str(out)], capture_output=True,
                         check=True).stdout
    pages_px = []
    while png:
        px = _pgm_pixels(png)
        pages_px.append(px)
        header_len = len(b"\n".join(png.split(b"\n", 3)[:3])) + 1
        png = png[header_len + px.size:]
    assert len(pages_px) == 2
    for px in pages_px:
        dark = np.mean(px < 128)
        assert 0.004 < dark < 0.5, f"page looks blank or black ({dark:.3f} dark)"
        assert px.std() > 20


def test_altered_case_is_documented_as_altered(tmp_path, synthetic_journal):
    src, cid = synthetic_journal
    path = tmp_path / "j.db"
    with Journal(src, readonly=True):
        pass
    s = sqlite3.connect(src)
    d = sqlite3.connect(path)
    s.backup(d)
    s.close()
    d.execute("DROP TRIGGER entries_no_update")
    d.execute("UPDATE entries SET payload = replace(payload, 'EBSLN not identified', 'EBSLN identified') "
              "WHERE kind = 'note' AND case_id = ?", (cid,))
    d.commit()
    d.close()
    out = tmp_path / "r.pdf"
    assert main(["report", cid, "--journal", str(path), "--out", str(out)]) == 1
    text = "".join(p.extract_text() for p in PdfReader(out).pages)
    assert "ALTERED" in text


def test_report_out_dir_and_errors(tmp_path, synthetic_journal, capsys):
    path, cid = synthetic_journal
    assert main(["report", cid[:10], "--journal", str(path)]) == 2
    assert "say what to write" in capsys.readouterr().err
    ro = tmp_path / "ro"
    ro.write_text("a file, not a folder")
    assert main(["report", cid, "--journal", str(path), "--out", str(ro / "x.pdf")]) == 2
    assert "cannot write" in capsys.readouterr().out


def test_engine_state_snapshots_feed_steps_and_mapping_but_not_the_timeline(tmp_path):
    from app.rules.procedure import Procedure

    proc = Procedure()
    proc.set_plan(["L"], 0.0)
    stim = Stimulus(4, 30.0, Site.VAGUS, Side.L, Source.PROBE, 1.0, 0.97, 100, Step.V1)
    m = Measurement(stim, "EMG L", True, None, True, 640.0, 7.8, 7.0)
    proc.capture_step(Step.V1, m, True, 31.0)
    proc.set_laryngoscopy("L1", "L", "normal", 5.0)
    proc.add_mapping_point("L", 0.0, True, 80.0)
    path = tmp_path / "j.db"
    with Journal(path, durable=False) as j:
        cid = j.open_case({"patient_id": "PSN-ENG", "planned_sides": ["L"]})
        j.append(cid, "stimulus", *E.stimulus(m, np.zeros((2, 1200)), 20000, 200), t_s=30.0)
        from app.model import EventKind, Priority, RuleEvent

        j.append(cid, "rule_event", E.rule_event(RuleEvent(60.0, EventKind.LOSS_OF_SIGNAL, Side.L, Site.VAGUS,
                                                          Priority.HIGH, 9)), t_s=60.0)
        for t in (40.0, 90.0):
            j.append(cid, "engine", {"event": "state", "detail": {"rules": {"procedure": proc.to_dict()}}}, t_s=t)
        d = build_document(j, cid)
    v1 = d["sides"]["L"]["steps"]["V1"]
    assert v1["amplitude_uV"] == 640.0 and v1["how"].startswith("procedure") and v1["stimulus_seq"] == 1
    assert d["sides"]["L"]["steps"]["L1"]["finding"] == "normal"
    assert d["adverse_events"][0]["mapping"][0]["position_mm"] == 0.0
    assert not any(it["type"] == "engine" for it in d["timeline"])
