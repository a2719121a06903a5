"""The report of several scenarios, looked at: every page rendered to PNG, its words placed.

- no text overflows its cell: the report's own check (``layout_problems``: a word or a
  drawing wider than its column) is empty, no two words printed on one line overlap
  (``pdftotext -bbox``), and nothing is inked in the page margins (the rendered PNG);
- every page has its header (case, patient, page n of m) and the sections come in order;
  page 1 answers how each nerve ended the case;
- no internal key or enum value is printed; numbers agree between table, thumbnail
  caption, JSON and page 1 (one rounding).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pypdf import PdfReader

from app import format as F
from app.record.report import SECTIONS, write_pdf
from scenario_runs import scenario_case

REPORTED = ("transection", "standard_bilateral", "cautery_heavy", "no_current_probe", "traction_recovery")
DPI = 50
MARGIN_MM = 13.0  # the frame starts at 15 mm: nothing may be inked in the outer 13 mm
# words made of internal keys: snake_case, the model's upper-case enum values, raw priorities
INTERNAL = re.compile(r"\b[a-z]+_[a-z_]+\b|\b(?:VAGUS|UNTAGGED|PROBE|APS|EBSLN_)\b|Operator:"
                      r"|\b(?:case|stim|probe|aps|step|baseline|ts|mapping|staging|note|tube|alarm|settings|sim)"
                      r"\.[a-z_]+\b")
NEEDS_PDFTOOLS = pytest.mark.skipif(shutil.which("pdftoppm") is None or shutil.which("pdftotext") is None,
                                    reason="poppler-utils (pdftoppm, pdftotext) not installed")


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    out = {}
    for name in REPORTED:
        case = scenario_case(name, tmp_path_factory)
        pdf = case.folder / "report.pdf"
        problems = write_pdf(case.doc, pdf, case.waveforms())
        out[name] = (case, pdf, problems)
    return out


def _pages_text(pdf: Path) -> list[str]:
    return [" ".join((p.extract_text() or "").split()) for p in PdfReader(pdf).pages]


@pytest.mark.parametrize("name", REPORTED)
def test_no_cell_is_too_narrow_for_its_content(reports, name):
    _case, _pdf, problems = reports[name]
    assert problems == []


@NEEDS_PDFTOOLS
@pytest.mark.parametrize("name", REPORTED)
def test_every_page_rendered_nothing_in_the_margins(reports, name, tmp_path):
    _case, pdf, _ = reports[name]
    n = len(PdfReader(pdf).pages)
    subprocess.run(["pdftoppm", "-r", str(DPI), "-gray", "-png", str(pdf), str(tmp_path / "p")], check=True,
                   capture_output=True, timeout=120)
    pngs = sorted(tmp_path.glob("p-*.png"))
    assert len(pngs) == n >= 3
    margin = int(round(MARGIN_MM / 25.4 * DPI))
    for png in pngs:
        px = np.asarray(Image.open(png).convert("L"))
        ink = px < 160
        assert 0.004 < ink.mean() < 0.5, f"{png.name}: blank or black ({ink.mean():.3f})"
        assert not ink[:, :margin].any(), f"{png.name}: something drawn in the left margin"
        assert not ink[:, -margin:].any(), f"{png.name}: text runs into the right margin"


def _words(pdf: Path, tmp_path: Path) -> list[list[tuple[float, float, float, float, str]]]:
    html = tmp_path / "bbox.html"
    subprocess.run(["pdftotext", "-bbox", str(pdf), str(html)], check=True, capture_output=True, timeout=120)
    pages: list[list[tuple[float, float, float, float, str]]] = []
    for chunk in html.read_text(encoding="utf-8").split("<page ")[1:]:
        words = re.findall(r'<word xMin="([\d.]+)" yMin="([\d.]+)" xMax="([\d.]+)" yMax="([\d.]+)">([^<]*)</word>',
                           chunk)
        pages.append([(float(a), float(b), float(c), float(d), w) for a, b, c, d, w in words])
    return pages


@NEEDS_PDFTOOLS
@pytest.mark.parametrize("name", REPORTED)
def test_no_two_words_overlap(reports, name, tmp_path):
    """Text that overflows its cell runs into the next cell's text: their boxes overlap."""
    _case, pdf, _ = reports[name]
    for page_no, words in enumerate(_words(pdf, tmp_path), start=1):
        words.sort(key=lambda w: (w[1], w[0]))
        for i, a in enumerate(words):
            for b in words[i + 1:]:
                if b[1] > a[3]:
                    break  # below this word: no more candidates on its line
                x_overlap = min(a[2], b[2]) - max(a[0], b[0])
                y_overlap = min(a[3], b[3]) - max(a[1], b[1])
                if x_overlap > 0.8 and y_overlap > 0.5 * min(a[3] - a[1], b[3] - b[1]):
                    pytest.fail(f"{name} page {page_no}: {a[4]!r} and {b[4]!r} overlap")


@pytest.mark.parametrize("name", REPORTED)
def test_pages_and_sections(reports, name):
    case, pdf, _ = reports[name]
    pages = _pages_text(pdf)
    n = len(pages)
    cid, pid = case.doc["case"]["case_id"], case.doc["case"]["patient_id"]
    for i, page in enumerate(pages, start=1):
        assert f"page {i} of {n}" in page and cid in page and pid in page, f"page {i}"
    first = pages[0]
    for section in SECTIONS[:4]:
        assert section in first, section
    for side in case.doc["case"]["planned_sides"]:
        c = case.doc["sides"][side]["conclusion"]
        assert " ".join(c["text"].split())[:40] in first, side
    text = " ".join(pages)
    at = -1
    for section in SECTIONS:
        found = text.find(section, at + 1)
        assert found > at, f"section {section!r} missing or out of order"
        at = found


@pytest.mark.parametrize("name", REPORTED)
def test_no_internal_key_is_printed(reports, name):
    case, pdf, _ = reports[name]
    text = " ".join(_pages_text(pdf))
    text = text.replace(case.doc["case"]["case_id"], "").replace(case.doc["journal"]["last_hash"] or "", "")
    found = sorted(set(INTERNAL.findall(text)))
    assert found == [], found


@pytest.mark.parametrize("name", ("transection", "standard_bilateral"))
def test_numbers_agree_between_json_table_and_thumbnail(reports, name):
    case, pdf, _ = reports[name]
    text = " ".join(_pages_text(pdf))
    for side in "LR":
        for step in ("V1", "R1", "R2", "V2"):
            v = case.doc["sides"][side]["steps"].get(step)
            if not v or not v.get("response"):
                continue
            amp = F.amp_text(v["amplitude_uV"])
            assert isinstance(v["amplitude_uV"], int)  # stored as shown
            assert f"{amp} p-p, {F.lat_text(v['latency_ms'])}" in text, (step, side)  # the thumbnail's caption
            assert text.count(amp) >= 3, (step, side)  # page 1, the step table and the caption


def test_event_counts_cover_every_event(reports):
    case, pdf, _ = reports["no_current_probe"]
    counts = case.doc["events"]
    live = [t for t in case.doc["timeline"] if t["type"] == "rule_event"]
    assert counts["total"] == len(live) and counts["by_kind"].get("no_current", 0) >= 1
    first = _pages_text(pdf)[0]
    assert "no stimulus current" in first and "medium" in first


@pytest.mark.parametrize("name, left, right", [
    ("transection", "lost", "postponed"),
    ("standard_bilateral", "intact", "intact"),
    ("traction_recovery", "recovered", None),
])
def test_how_each_nerve_ended(reports, name, left, right):
    case, pdf, _ = reports[name]
    sides = case.doc["sides"]
    assert sides["L"]["conclusion"]["status"] == left
    if right is not None:
        assert sides["R"]["conclusion"]["status"] == right
    first = _pages_text(pdf)[0]
    words = {"lost": "LOSS OF SIGNAL", "postponed": "NOT OPERATED (POSTPONED)", "intact": "SIGNAL INTACT",
             "recovered": "RECOVERED"}
    assert words[left] in first
    if name == "transection":
        assert "consistent (true positive)" in first and "lesion between 10 mm and 32 mm" in first
    if name == "standard_bilateral":
        assert "consistent (true negative)" in first


def test_trend_markers_at_every_event():
    from reportlab.graphics.shapes import String

    from app.record.report import trend_drawing

    events = [{"t_s": 60.0, "kind": "loss_of_signal", "priority": "high"},
              {"t_s": 90.0, "kind": "signal_recovered", "priority": "info"},
              {"t_s": 500.0, "kind": "no_current", "priority": "medium"}]  # outside the plot: no marker
    d = trend_drawing([{"label": "probe RLN", "t": [10.0, 120.0], "y": [800.0, 790.0], "colour": None,
                        "marker": True}], [], None, "", "amplitude", (0.0, 200.0), events=events)
    letters = [x.text for x in d.contents if isinstance(x, String) and x.text in ("L", "R", "N")]
    assert letters == ["L", "R"]
