"""Operator-context annotations (conventions version 2), checked one rule at a time.

A rejected line gives one message: the annotation (onset and text), then the problem, naming the
keyword, the field and what is allowed; every message is matched whole, since the operator reads
it. Accepted lines parse to the right ``Context``. Also the small public helpers of
``app.analysis.edf`` (context text, CLIP text, the convenience constructor, lazy reading).
"""

from __future__ import annotations

import datetime as dt
import re

import numpy as np
import pytest

from app.analysis.edf import (
    EdfSignalData,
    _first_line,
    clip_text,
    context_text,
    is_context,
    open_edf,
    parse_context,
    recording_from_arrays,
    write_edf,
)
from app.model import Side, Site, Source, Step, Stimulus

ONSET = 1.25


def _rejects(text: str, problem: str, duration: float | None = None) -> None:
    """``text`` is refused with exactly ``annotation at <onset> (<text>): <problem>``."""
    where = f"annotation at {ONSET:.4f} s ({text.strip()!r})"
    with pytest.raises(ValueError, match=f"^{re.escape(where)}: {re.escape(problem)}$"):
        parse_context(text, ONSET, duration)


@pytest.mark.parametrize("text, problem", [
    # STEP
    ("STEP", "STEP needs the step (V1, S1, R1, R2, S2, V2, R2P, R2D, L1, L2)"),
    ("STEP V9 L", "unknown step 'V9' (allowed: V1, S1, R1, R2, S2, V2, R2P, R2D, L1, L2)"),
    ("STEP V1", "STEP needs the side (L, R)"),
    ("STEP V1 X", "unknown side 'X' (allowed: L, R)"),
    ("STEP V1 L R", "STEP takes a step, a side and optionally 'clear'"),
    ("STEP V1 L clear R", "STEP takes a step, a side and optionally 'clear'"),
    ("STEP L1 L", "laryngoscopy L1 needs finding= one of normal, paresis, palsy, not_examined"),
    ("STEP L2 R finding=bad", "laryngoscopy L2 needs finding= one of normal, paresis, palsy, not_examined"),
    ("STEP V1 L by=hand", "by= must be probe or button"),
    # TS
    ("TS", "TS needs the side (L, R)"),
    ("TS X nmb_ok=yes", "unknown side 'X' (allowed: L, R)"),
    ("TS L", "TS needs exactly one check=answer (or verdict=...)"),
    ("TS L nmb_ok=yes leads_ok=no", "TS needs exactly one check=answer (or verdict=...)"),
    ("TS L nmb_ok=maybe", "nmb_ok='maybe' must be one of yes, no"),
    ("TS L verdict=yes", "verdict='yes' must be one of true_los, not_true_los"),
    ("TS L nmb_ok=yes by=surgeon", "by= must be operator or monitor"),
    ("TS L nmb_ok=yes s=1.5", "s='1.5' is not an integer"),
    ("TS L nmb_ok=yes s=-1", "s='-1' is not a non-negative number"),
    # MAP
    ("MAP", "MAP needs the side (L, R)"),
    ("MAP X pos_mm=1 resp=yes", "unknown side 'X' (allowed: L, R)"),
    ("MAP L R pos_mm=1 resp=yes", "MAP takes a side (and optionally 'clear')"),
    ("MAP L clear R", "MAP takes a side (and optionally 'clear')"),
    ("MAP L resp=yes", "missing required key 'pos_mm'"),
    ("MAP L pos_mm=x resp=yes", "pos_mm='x' is not a number"),
    ("MAP L pos_mm=-3 resp=yes", "pos_mm='-3' is not a non-negative number"),
    ("MAP L pos_mm=3", "missing required key 'resp'"),
    ("MAP L pos_mm=3 resp=maybe", "resp='maybe' must be yes or no"),
    ("MAP L pos_mm=3 resp=yes uV=-2", "uV='-2' is not a non-negative number"),
    ("MAP L pos_mm=3 resp=yes uV=big", "uV='big' is not a number"),
    # PLAN
    ("PLAN", "PLAN takes one side, or both in operating order (L R / R L)"),
    ("PLAN L L", "PLAN takes one side, or both in operating order (L R / R L)"),
    ("PLAN X", "PLAN takes one side, or both in operating order (L R / R L)"),
    ("PLAN L R L", "PLAN takes one side, or both in operating order (L R / R L)"),
    # REBASELINE
    ("REBASELINE", "REBASELINE needs the side (L, R)"),
    ("REBASELINE X", "unknown side 'X' (allowed: L, R)"),
    # CAPTURE
    ("CAPTURE", "CAPTURE needs the site (VAGUS, RLN)"),
    ("CAPTURE EBSLN L", "unknown site 'EBSLN' (allowed: VAGUS, RLN)"),
    ("CAPTURE RLN", "CAPTURE needs the side (L, R)"),
    ("CAPTURE RLN X", "unknown side 'X' (allowed: L, R)"),
    ("CAPTURE RLN L i=-1", "i='-1' is not a non-negative number"),
    ("CAPTURE RLN L i=1.5", "i='1.5' is not an integer"),
    # SET
    ("SET", "SET needs at least one setting=value"),
    ("SET s=3", "SET needs at least one setting=value"),
    # CAUTERY
    ("CAUTERY s=0 e=-1", "e='-1' is not a non-negative number"),
    ("CAUTERY s=0 e=1.5", "e='1.5' is not an integer"),
    ("CAUTERY s=0 e=x", "e='x' is not an integer"),
    ("CAUTERY s=4", "CAUTERY needs both s= and e=, or neither"),
    ("CAUTERY e=4", "CAUTERY needs both s= and e=, or neither"),
    ("CAUTERY s=4 e=2", "CAUTERY e= is before s="),
    ("CAUTERY", "CAUTERY needs a duration or s= and e="),
    # CLIP
    ("CLIP", "CLIP takes the side of its channel"),
    ("CLIP L R", "CLIP takes the side of its channel"),
    # STAGING
    ("STAGING decision=maybe", "decision='maybe' must be one of postpone_second_side, proceed_second_side"),
    # LOS
    ("LOS", "LOS needs the side (L, R)"),
    ("LOS X type=1", "unknown side 'X' (allowed: L, R)"),
    ("LOS L", "LOS needs type=1 or type=2"),
    ("LOS L type=3", "LOS needs type=1 or type=2"),
    # the grammar
    ("", "not an operator-context annotation"),
    ("   ", "not an operator-context annotation"),
    ("NOTE dry field", "not an operator-context annotation"),
    ("step V1 L", "not an operator-context annotation"),
    ("text=free words only", "not an operator-context annotation"),
    ("text=a text=b", "not an operator-context annotation"),
    ("SET a=1 b", "field 'b' has no '='"),
    ("SET =1", "field '=1' has no name"),
    ("SET a=1 a=2", "key 'a' given twice"),
])
def test_a_rejected_line_says_what_is_wrong_and_what_is_allowed(text, problem):
    _rejects(text, problem)


@pytest.mark.parametrize("duration", [None, 0.0, -1.0])
def test_cautery_without_s_and_e_needs_a_positive_duration(duration):
    _rejects("CAUTERY", "CAUTERY needs a duration or s= and e=", duration)


@pytest.mark.parametrize("text, args, fields, free", [
    ("STEP V1 L", ("V1", "L"), {}, ""),
    ("STEP R2 R clear", ("R2", "R", "clear"), {}, ""),
    ("STEP L1 L clear", ("L1", "L", "clear"), {}, ""),
    ("STEP L1 L finding=not_examined by=probe", ("L1", "L"), {"finding": "not_examined", "by": "probe"}, ""),
    ("TS R leads_ok=no by=monitor", ("R",), {"leads_ok": "no", "by": "monitor"}, ""),
    ("TS R verdict=true_los by=operator", ("R",), {"verdict": "true_los", "by": "operator"}, ""),
    ("MAP L clear", ("L", "clear"), {}, ""),
    ("MAP R pos_mm=0 resp=no uV=0", ("R",), {"pos_mm": "0", "resp": "no", "uV": "0"}, ""),
    ("PLAN L", ("L",), {}, ""),
    ("PLAN R", ("R",), {}, ""),
    ("PLAN L R", ("L", "R"), {}, ""),
    ("REBASELINE L", ("L",), {}, ""),
    ("REBASELINE R s=4", ("R",), {"s": "4"}, ""),
    ("CAPTURE VAGUS R i=0", ("VAGUS", "R"), {"i": "0"}, ""),
    ("SET a=b=c", (), {"a": "b=c"}, ""),
    ("SET x= s=2", (), {"x": "", "s": "2"}, ""),
    ("CAUTERY s=4 e=4", (), {"s": "4", "e": "4"}, ""),
    ("CLIP L max_uV=40000", ("L",), {"max_uV": "40000"}, ""),
    ("CLIP Chan_3", ("Chan_3",), {}, ""),
    ("STAGING", (), {}, ""),
    ("STAGING recommend=postpone_second_side", (), {"recommend": "postpone_second_side"}, ""),
    ("STAGING decision=postpone_second_side", (), {"decision": "postpone_second_side"}, ""),
    ("STAGING decision=proceed_second_side text=both nerves fine", (), {"decision": "proceed_second_side"},
     "both nerves fine"),
    ("LOS L type=1", ("L",), {"type": "1"}, ""),
    ("LOS R type=2 s=7", ("R",), {"type": "2", "s": "7"}, ""),
    ("PROBE thyroid", ("thyroid",), {}, ""),
    ("OUTPUT APS on", ("APS", "on"), {}, ""),
])
def test_an_accepted_line_parses_to_its_context(text, args, fields, free):
    c = parse_context(text, ONSET, 0.5)
    assert (c.onset_s, c.duration_s, c.keyword) == (ONSET, 0.5, text.split()[0])
    assert (c.args, c.fields, c.text, c.raw) == (args, fields, free, text)


def test_cautery_with_a_duration_keeps_it():
    c = parse_context("CAUTERY", 2.0, 1.5)
    assert (c.keyword, c.duration_s, c.order) == ("CAUTERY", 1.5, None)
    assert parse_context("CAUTERY", 2.0, 0.25).duration_s == 0.25


def test_context_get_gives_the_default_for_a_missing_key():
    c = parse_context("SET gain=2", 0.0)
    assert c.get("gain") == "2" and c.get("gain", "x") == "2"
    assert c.get("other", "fallback") == "fallback" and c.get("other") is None


@pytest.mark.parametrize("text, expected", [
    ("STEP V1 L", True), ("CLIP", True), ("  LOS L type=1", True), ("STEP\tV1 L", True),
    ("STIM site=RLN", False), ("", False), ("   ", False), ("step V1", False), ("STEPS V1", False),
])
def test_is_context(text, expected):
    assert is_context(text) is expected


def test_context_text_joins_words_and_marks_empty_values():
    assert context_text("SET", "two words", "", note="a  b", none=None, text="free   text") == \
        "SET two_words - note=a_b text=free text"


@pytest.mark.parametrize("label, expected", [
    ("EMG L", "CLIP L max_uV=40000"),
    ("EMG R", "CLIP R max_uV=40000"),
    ("Chan 7", "CLIP Chan_7 max_uV=40000"),
    ("", "CLIP - max_uV=40000"),
])
def test_clip_text_names_the_side_or_the_label(label, expected):
    assert clip_text(label, 40000.2) == expected


def test_recording_from_arrays_reindexes_in_time_order_and_keeps_each_stimulus():
    late = Stimulus(0, 2.0, Site.VAGUS, Side.L, Source.APS, 1.0, 0.98, 100, Step.V1)
    early = Stimulus(1, 0.5, Site.RLN, Side.R, Source.PROBE, 2.0, 1.5, 200, Step.R1)
    rec = recording_from_arrays(5000, {"EMG L": np.zeros(10)}, [late, early])
    assert rec.stimuli == [Stimulus(0, 0.5, Site.RLN, Side.R, Source.PROBE, 2.0, 1.5, 200, Step.R1),
                           Stimulus(1, 2.0, Site.VAGUS, Side.L, Source.APS, 1.0, 0.98, 100, Step.V1)]
    assert rec.patient_code == "X" and rec.start == dt.datetime(2000, 1, 1)
    assert rec.sample_rate_hz == 5000.0 and rec.annotations == []


@pytest.mark.parametrize("exc, expected", [
    (ValueError("first line\nsecond line"), "first line"),
    (ValueError("\n  only line  \n"), "only line"),
    (ValueError("x" * 300), "x" * 200),
    (ValueError(""), "ValueError"),
    (IndexError(), "IndexError"),
])
def test_first_line_of_an_error(exc, expected):
    assert _first_line(exc) == expected


def test_open_edf_reads_lazily_and_a_signal_converts_to_an_array(tmp_path):
    fs, n = 5000, 5000
    x = np.round(np.sin(np.arange(n) / 50.0) * 300.0)
    path = tmp_path / "lazy.edf"
    write_edf(path, recording_from_arrays(fs, {"EMG L": x}))
    rec = open_edf(path)
    sig = rec.signals["EMG L"]
    assert isinstance(sig, EdfSignalData) and len(sig) == n
    whole = np.asarray(sig)
    assert whole.dtype == np.float64 and whole.shape == (n,)
    np.testing.assert_allclose(whole, x, atol=1e-9)
    as32 = np.asarray(sig, dtype=np.float32)
    assert as32.dtype == np.float32
    np.testing.assert_allclose(as32, x, atol=1e-3)
    # the array protocol itself gives the dtype asked for (numpy would cast a wrong one silently)
    assert sig.__array__().dtype == np.float64
    direct = sig.__array__(np.float32)
    assert direct.dtype == np.float32
    np.testing.assert_allclose(direct, x, atol=1e-3)
