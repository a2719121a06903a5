"""EDF+ read/write (recording-exchange.md), checked against two independent readers."""

from __future__ import annotations

import datetime as dt
import tracemalloc

import edfio
import numpy as np
import pyedflib
import pytest

from app.analysis.edf import (
    Annotation,
    Recording,
    RecordingError,
    open_edf,
    parse_stim,
    read_edf,
    recording_from_arrays,
    stim_text,
    write_edf,
)
from app.model import Side, Site, Source, Step, Stimulus

START = dt.datetime(2026, 3, 14, 9, 26, 53)


def _stimuli():
    return [
        Stimulus(0, 0.0123456, Site.VAGUS, Side.L, Source.APS, 1.0, 0.98, 100, Step.V1),
        Stimulus(1, 1.25, Site.RLN, Side.R, Source.PROBE, 2.0, None, 200, None),
        Stimulus(2, 2.0001, Site.EBSLN, Side.L, Source.PROBE, 1.0, 1.01, 100, Step.S1),
        Stimulus(3, 3.5, Site.UNTAGGED, Side.R, Source.PROBE, 0.5, 0.0, 100, Step.R2P),
    ]


def _recording(fs=20000.0, seconds=4.0, labels=("EMG L", "EMG R"), seed=0):
    rng = np.random.default_rng(seed)
    n = int(round(fs * seconds))
    signals = {label: rng.normal(0, 40, n) + 300 * np.sin(np.arange(n) / fs * 2 * np.pi * (3 + i))
               for i, label in enumerate(labels)}
    return recording_from_arrays(
        fs, signals, _stimuli(), start=START, patient_code="case-0042",
        annotations=[Annotation(0.5, 2.0, "tube repositioned"), Annotation(3.9, None, "note: dry field")],
    )


STEP_UV = 1.0  # the fixed physical range: 1 µV per digital step, whatever the data


@pytest.mark.parametrize("fs", [5000.0, 10000.0, 12000.0, 20000.0, 44100.0, 7777.0])
def test_round_trip(tmp_path, fs):
    rec = _recording(fs)
    path = tmp_path / "r.edf"
    write_edf(path, rec)
    back = read_edf(path)
    assert back.sample_rate_hz == fs
    assert back.channels == ["EMG L", "EMG R"]
    assert back.start == START and back.patient_code == "case-0042"
    assert back.n_samples == rec.n_samples
    for label in ("EMG L", "EMG R"):
        np.testing.assert_allclose(back.signals[label], rec.signals[label], atol=STEP_UV / 2 + 1e-9)
    assert back.stimuli == rec.stimuli  # onsets exact to 0.1 µs, every field
    assert back.annotations == rec.annotations
    lazy = open_edf(path)
    np.testing.assert_array_equal(lazy.signals["EMG R"][123:4567], back.signals["EMG R"][123:4567])
    assert back.source == str(path)


def test_pyedflib_reads_what_the_product_writes(tmp_path):
    rec = _recording(20000.0)
    path = tmp_path / "r.edf"
    write_edf(path, rec)
    with pyedflib.EdfReader(str(path)) as f:
        assert f.filetype == pyedflib.FILETYPE_EDFPLUS
        assert f.getSignalLabels() == ["EMG L", "EMG R"]
        assert list(f.getSampleFrequencies()) == [20000.0, 20000.0]
        assert f.getPhysicalDimension(0) == "uV"
        step = (f.getPhysicalMaximum(0) - f.getPhysicalMinimum(0)) / 65535
        np.testing.assert_allclose(f.readSignal(0), rec.signals["EMG L"], atol=step / 2 + 1e-9)
        np.testing.assert_allclose(f.readSignal(1), rec.signals["EMG R"], atol=step / 2 + 1e-9)
        onsets, durations, texts = f.readAnnotations()
        assert f.getStartdatetime() == START
    expected = sorted([(s.t_s, stim_text(s)) for s in rec.stimuli] + [(a.onset_s, a.text) for a in rec.annotations])
    assert list(texts) == [t for _o, t in expected]
    np.testing.assert_allclose(onsets, [o for o, _t in expected], atol=1e-7)
    assert list(durations) == [-1.0, 2.0, -1.0, -1.0, -1.0, -1.0]


def test_edfio_reads_what_the_product_writes(tmp_path):
    rec = _recording(12000.0)
    path = tmp_path / "r.edf"
    write_edf(path, rec)
    edf = edfio.read_edf(path, lazy_load_data=False)
    assert edf.labels == ("EMG L", "EMG R") and edf.is_continuous and edf.reserved == "EDF+C"
    assert edf.signals[0].sampling_frequency == 12000.0
    assert [a.text for a in edf.annotations if a.text.startswith("STIM")] == [stim_text(s) for s in rec.stimuli]
    np.testing.assert_allclose(edf.signals[1].data, rec.signals["EMG R"], atol=STEP_UV / 2 + 1e-9)


def test_product_reads_what_pyedflib_writes(tmp_path):
    fs = 20000
    n = fs * 3
    rng = np.random.default_rng(1)
    left, right, eeg = rng.normal(0, 50, n), rng.normal(0, 50, n), rng.normal(0, 5, n // 10)
    path = tmp_path / "other.edf"
    w = pyedflib.EdfWriter(str(path), 3, file_type=pyedflib.FILETYPE_EDFPLUS)
    headers = [
        {"label": "EMG R", "dimension": "uV", "sample_frequency": fs, "physical_max": 2000.0, "physical_min": -2000.0,
         "digital_max": 32767, "digital_min": -32768, "transducer": "", "prefilter": ""},
        {"label": "EEG Fz", "dimension": "uV", "sample_frequency": fs // 10, "physical_max": 500.0,
         "physical_min": -500.0, "digital_max": 32767, "digital_min": -32768, "transducer": "", "prefilter": ""},
        {"label": "EMG L", "dimension": "mV", "sample_frequency": fs, "physical_max": 2.0, "physical_min": -2.0,
         "digital_max": 32767, "digital_min": -32768, "transducer": "", "prefilter": ""},
    ]
    w.setSignalHeaders(headers)
    w.writeSamples([right, eeg, left / 1000.0])
    # (edflib-based writers such as pyEDFlib cut annotation texts at 40 characters)
    w.writeAnnotation(0.5, -1, "STIM site=RLN side=R source=APS set_mA=1")
    w.writeAnnotation(1.2345, -1, "STIM set_mA=2 side=L source=APS site=RLN")
    w.writeAnnotation(2.0, 0.5, "patient moved")
    w.close()
    rec = read_edf(path)
    assert rec.sample_rate_hz == fs and rec.channels == ["EMG L", "EMG R"]
    assert set(rec.signals) == {"EMG L", "EMG R"}  # the EEG signal is ignored
    np.testing.assert_allclose(rec.signals["EMG R"], right, atol=4000 / 65535)
    np.testing.assert_allclose(rec.signals["EMG L"], left, atol=4000 / 65535)  # mV converted
    s0, s1 = rec.stimuli
    assert (s0.site, s0.side, s0.source, s0.set_mA, s0.delivered_mA, s0.pw_us, s0.step) == (
        Site.RLN, Side.R, Source.APS, 1.0, None, 100, None)
    assert (s1.site, s1.side, s1.source, s1.set_mA) == (Site.RLN, Side.L, Source.APS, 2.0)
    assert s0.t_s == pytest.approx(0.5, abs=1e-4) and s1.t_s == pytest.approx(1.2345, abs=1e-4)
    assert [s.index for s in rec.stimuli] == [0, 1]
    assert rec.annotations == [Annotation(2.0, 0.5, "patient moved")]


def test_one_channel_recording(tmp_path):
    rec = _recording(labels=("EMG R",))
    write_edf(tmp_path / "r.edf", rec)
    back = read_edf(tmp_path / "r.edf")
    assert back.channels == ["EMG R"] and list(back.signals) == ["EMG R"]


def test_large_values_and_padding(tmp_path):
    fs = 10000.0
    n = 12345  # not a whole number of records
    x = np.zeros(n)
    x[100] = 99999.0
    x[200] = -250000.0  # beyond the range given: clipped
    rec = recording_from_arrays(fs, {"EMG L": x}, [])
    write_edf(tmp_path / "a.edf", rec, physical_max_uV=100000.0)
    back = read_edf(tmp_path / "a.edf")
    assert back.n_samples >= n and back.n_samples % 5000 == 0
    assert back.signals["EMG L"][100] == pytest.approx(99999.0, abs=2.0)
    assert back.signals["EMG L"][200] == pytest.approx(-100000.0, abs=2.0)
    assert [a.text for a in back.annotations] == ["CLIP L max_uV=250000"]


def test_fixed_range_one_microvolt_per_step_and_clipping_annotated(tmp_path):
    """The range never follows the data: a cautery burst is clipped and annotated, the
    1 µV resolution of the rest of the case is kept."""
    fs = 20000.0
    n = int(fs * 3)
    rng = np.random.default_rng(3)
    x = rng.normal(0, 20, n)
    burst = slice(int(1.0 * fs), int(1.5 * fs))
    x[burst] = rng.normal(0, 60000, burst.stop - burst.start)  # saturating electrocautery
    rec = recording_from_arrays(fs, {"EMG L": x, "EMG R": rng.normal(0, 20, n)}, [])
    write_edf(tmp_path / "c.edf", rec)
    with pyedflib.EdfReader(str(tmp_path / "c.edf")) as f:
        assert (f.getPhysicalMinimum(0), f.getPhysicalMaximum(0)) == (-32768.0, 32767.0)
        assert (f.getDigitalMinimum(0), f.getDigitalMaximum(0)) == (-32768, 32767)
    back = read_edf(tmp_path / "c.edf")
    quiet = np.r_[0:burst.start, burst.stop:n]
    np.testing.assert_allclose(back.signals["EMG L"][quiet], x[quiet], atol=0.5 + 1e-9)
    assert np.max(np.abs(back.signals["EMG L"])) <= 32768.0
    clips = [a for a in back.annotations if a.text.startswith("CLIP ")]
    assert len(clips) == 1 and clips[0].text.startswith("CLIP L max_uV=")
    assert clips[0].onset_s == pytest.approx(1.0, abs=0.01) and clips[0].duration_s == pytest.approx(0.5, abs=0.01)
    assert int(clips[0].text.split("=")[1]) > 32768
    assert not any(a.text.startswith("CLIP R") for a in back.annotations)


class _Generated:
    """A long signal produced slice by slice; records the largest slice asked for."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.largest = 0

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, s: slice) -> np.ndarray:
        a, b, _ = s.indices(self.n)
        self.largest = max(self.largest, b - a)
        return np.sin(np.arange(a, b) * 0.001) * 500.0


def test_writing_hours_streams_in_bounded_memory(tmp_path):
    fs = 20000.0
    n = int(fs * 600)  # 10 minutes x 2 channels = 24 M samples (192 MB as float64)
    sigs = {"EMG L": _Generated(n), "EMG R": _Generated(n)}
    stims = [Stimulus(i, 0.5 + i, Site.VAGUS, Side.L, Source.APS, 1.0, 1.0) for i in range(599)]
    rec = Recording(fs, sigs, stims, START)
    tracemalloc.start()
    write_edf(tmp_path / "long.edf", rec, physical_max_uV=1000.0)
    _cur, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 40e6, peak
    assert max(s.largest for s in sigs.values()) <= 30 * fs
    back = open_edf(tmp_path / "long.edf")
    assert back.duration_s == 600.0 and len(back.stimuli) == 599
    np.testing.assert_allclose(back.signals["EMG L"][n - 100 : n], sigs["EMG L"][n - 100 : n], atol=0.02)


# ----------------------------------------------------------------------------- STIM text


def test_stim_text_round_trip():
    for s in _stimuli():
        assert parse_stim(stim_text(s), s.t_s, s.index) == s
    assert stim_text(_stimuli()[0]) == ("STIM site=VAGUS side=L source=APS set_mA=1.000 delivered_mA=0.980 pw_us=100 "
                                        "step=V1")


@pytest.mark.parametrize(
    "text, problem",
    [
        ("STIM site=VAGUS side=L source=APS", "missing required key 'set_mA'"),
        ("STIM side=L source=APS set_mA=1", "missing required key 'site'"),
        ("STIM site=NECK side=L source=APS set_mA=1", "unknown site 'NECK'"),
        ("STIM site=VAGUS side=X source=APS set_mA=1", "unknown side 'X'"),
        ("STIM site=VAGUS side=L source=HAND set_mA=1", "unknown source 'HAND'"),
        ("STIM site=vagus side=L source=APS set_mA=1", "unknown site 'vagus'"),
        ("STIM site=VAGUS side=L source=APS set_mA=1 step=R9", "unknown step 'R9'"),
        ("STIM site=VAGUS side=L source=APS set_mA 1", "field 'set_mA' has no '='"),
        ("STIM site=VAGUS side=L source=APS set_mA=one", "set_mA='one' is not a number"),
        ("STIM site=VAGUS side=L source=APS set_mA=1 delivered_mA=0,9", "delivered_mA='0,9' is not a number"),
        ("STIM site=VAGUS side=L source=APS set_mA=nan", "not a non-negative number"),
        ("STIM site=VAGUS side=L source=APS set_mA=1 pw_us=1.5", "pw_us='1.5' is not an integer"),
        ("STIM site=VAGUS side=L site=RLN source=APS set_mA=1", "key 'site' given twice"),
    ],
)
def test_stim_parse_errors(text, problem):
    with pytest.raises(ValueError) as e:
        parse_stim(text, 12.3456)
    msg = str(e.value)
    assert problem in msg and "12.3456 s" in msg and text in msg


def test_unknown_keys_are_ignored():
    s = parse_stim("STIM site=RLN side=R source=PROBE set_mA=1.5 operator=JS  colour=red", 1.0)
    assert (s.site, s.set_mA, s.pw_us) == (Site.RLN, 1.5, 100)


# ----------------------------------------------------------------------------- errors


def _write_pyedflib(path, labels=("EMG L", "EMG R"), fs=20000, texts=("STIM site=VAGUS side=L source=APS set_mA=1",),
                    file_type=pyedflib.FILETYPE_EDFPLUS, dims=None):
    w = pyedflib.EdfWriter(str(path), len(labels), file_type=file_type)
    w.setSignalHeaders([
        {"label": lab, "dimension": (dims or {}).get(lab, "uV"), "sample_frequency": fs, "physical_max": 1000.0,
         "physical_min": -1000.0, "digital_max": 32767, "digital_min": -32768, "transducer": "", "prefilter": ""}
        for lab in labels
    ])
    w.writeSamples([np.zeros(fs * 2) for _ in labels])
    if file_type == pyedflib.FILETYPE_EDFPLUS:
        for i, t in enumerate(texts):
            w.writeAnnotation(0.5 + i * 0.1, -1, t)
    w.close()
    return path


def _texts(*texts):
    return lambda p: _write_pyedflib(p, texts=texts)


def test_reading_errors_name_the_file(tmp_path):
    cases = {
        "missing.edf": (None, "no such file"),
        "garbage.edf": (lambda p: p.write_bytes(b"hello, this is not EDF" * 40), "not an EDF file"),
        "short.edf": (lambda p: p.write_bytes(b"0       "), "not an EDF file"),
        "plain.edf": (lambda p: _write_pyedflib(p, file_type=pyedflib.FILETYPE_EDF), "not EDF+"),
        "eeg.edf": (lambda p: _write_pyedflib(p, labels=("EEG Fz", "EEG Cz")), "no 'EMG L' or 'EMG R' signal"),
        "slow.edf": (lambda p: _write_pyedflib(p, fs=4000), "4000 Hz is below the minimum of 5000 Hz"),
        "volts.edf": (lambda p: _write_pyedflib(p, dims={"EMG L": "degC"}), "is not a voltage"),
        "nokey.edf": (_texts("STIM site=VAGUS side=L set_mA=1"), "missing required key 'source'"),
        "badsite.edf": (_texts("STIM site=X side=L source=APS set_mA=1"), "unknown site 'X'"),
        "noeq.edf": (_texts("STIM site=RLN side=L source=APS set_mA"), "field 'set_mA' has no '='"),
        "nonum.edf": (_texts("STIM site=RLN side=L source=APS set_mA=x"), "set_mA='x' is not a number"),
    }
    for name, (make, problem) in cases.items():
        path = tmp_path / name
        if make:
            make(path)
        with pytest.raises(RecordingError) as e:
            read_edf(path)
        msg = str(e.value)
        assert msg.startswith(str(path)) and problem in msg and "\n" not in msg, msg
    with pytest.raises(RecordingError, match="not a file"):
        read_edf(tmp_path)


def test_truncated_file_is_refused_with_its_size(tmp_path):
    """A file cut short (a copy that did not finish) is refused: analysing a third of the
    stimuli without a word would be worse than no analysis."""
    path = tmp_path / "cut.edf"
    write_edf(path, _recording(20000.0))
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.4)])
    with pytest.raises(RecordingError) as e:
        read_edf(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: truncated: the header announces 8 data records") and "\n" not in msg
    assert "%" in msg
    path.write_bytes(data + b"\x00" * 10)
    with pytest.raises(RecordingError, match="10 bytes after the 8 data records"):
        read_edf(path)


@pytest.mark.parametrize("field, value, problem", [
    ((244, 252), b"0       ", "data record duration is 0 s"),
    ((244, 252), b"-1      ", "data record duration is -1 s"),
    ((244, 252), b"abc     ", "'duration of a data record' is 'abc'"),
    ((236, 244), b"x       ", "'number of data records' is 'x'"),
    ((252, 256), b"0   ", "header says 0 signals"),
    ((184, 192), b"999     ", "header size 999 bytes"),
])
def test_broken_header_fields_are_refused(tmp_path, field, value, problem):
    path = tmp_path / "h.edf"
    write_edf(path, _recording(20000.0))
    data = bytearray(path.read_bytes())
    data[field[0]:field[1]] = value
    path.write_bytes(bytes(data))
    with pytest.raises(RecordingError) as e:
        read_edf(path)
    assert str(e.value).startswith(str(path)) and problem in str(e.value), str(e.value)


def test_write_errors(tmp_path):
    with pytest.raises(RecordingError, match="cannot be written"):
        write_edf(tmp_path / "no" / "dir.edf", _recording())
    bad = _recording()
    bad.stimuli.append(Stimulus(9, -1.0, Site.RLN, Side.L, Source.PROBE, 1.0))
    with pytest.raises(RecordingError, match="before the start"):
        write_edf(tmp_path / "x.edf", bad)


def test_plain_tuple_annotations_and_aware_start(tmp_path):
    """The case record hands annotations as (onset, duration, text) and a UTC start."""
    start = dt.datetime(2026, 5, 1, 7, 8, 9, tzinfo=dt.UTC)
    rec = Recording(20000.0, {"EMG L": np.zeros(40000, dtype=np.float32)}, [], start, "p-1",
                    [(0.0, 0.0, "LNM start case_t_s=12.0000"), (1.5, None, "EVENT loss_of_signal side=L")])
    write_edf(tmp_path / "c.edf", rec)
    back = read_edf(tmp_path / "c.edf")
    assert back.start == dt.datetime(2026, 5, 1, 7, 8, 9)
    assert back.annotations == [Annotation(0.0, 0.0, "LNM start case_t_s=12.0000"),
                                Annotation(1.5, None, "EVENT loss_of_signal side=L")]


# ----------------------------------------------------------------------------- properties

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_stimuli_st = st.builds(
    Stimulus,
    index=st.integers(0, 100),
    t_s=st.floats(0, 1e5),
    site=st.sampled_from(list(Site)),
    side=st.sampled_from(list(Side)),
    source=st.sampled_from(list(Source)),
    set_mA=st.integers(0, 15000).map(lambda ua: ua / 1000.0),
    delivered_mA=st.one_of(st.none(), st.integers(0, 15000).map(lambda ua: ua / 1000.0)),
    pw_us=st.integers(1, 1000),
    step=st.one_of(st.none(), st.sampled_from(list(Step))),
)


@settings(max_examples=200, deadline=None)
@given(_stimuli_st)
def test_stim_text_round_trips_every_stimulus(s):
    assert parse_stim(stim_text(s), s.t_s, s.index) == s


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.text(max_size=12), st.sampled_from(
    ["site=VAGUS", "side=L", "source=APS", "set_mA=1", "delivered_mA=x", "pw_us=-3", "step=V1", "=", "a=b=c"])),
    max_size=8))
def test_stim_parser_never_crashes(tokens):
    text = "STIM " + " ".join(tokens)
    try:
        s = parse_stim(text, 1.5)
    except ValueError as exc:
        assert "1.5000 s" in str(exc)
    else:
        assert isinstance(s, Stimulus) and s.set_mA >= 0


# ----------------------------------------------------------------------------- operator context (version 2)

from app.analysis.edf import CONVENTIONS_MARK, Context, context_text, parse_context  # noqa: E402


@pytest.mark.parametrize("text, keyword, args, fields, free", [
    ("STEP V1 L by=button s=12", "STEP", ("V1", "L"), {"by": "button", "s": "12"}, ""),
    ("STEP L2 R finding=palsy s=3 text=after extubation", "STEP", ("L2", "R"), {"finding": "palsy", "s": "3"},
     "after extubation"),
    ("STEP R2 L clear s=9", "STEP", ("R2", "L", "clear"), {"s": "9"}, ""),
    ("TS L contralateral_vagus=yes s=54", "TS", ("L",), {"contralateral_vagus": "yes", "s": "54"}, ""),
    ("TS R verdict=not_true_los s=5 text=tube rotated", "TS", ("R",), {"verdict": "not_true_los", "s": "5"},
     "tube rotated"),
    ("MAP L pos_mm=16.5 resp=no uV=12 s=98 text=proximal", "MAP", ("L",),
     {"pos_mm": "16.5", "resp": "no", "uV": "12", "s": "98"}, "proximal"),
    ("PLAN R L s=0", "PLAN", ("R", "L"), {"s": "0"}, ""),
    ("CAPTURE RLN L i=14 s=15", "CAPTURE", ("RLN", "L"), {"i": "14", "s": "15"}, ""),
    ("SET event_threshold_uV=200 s=40", "SET", (), {"event_threshold_uV": "200", "s": "40"}, ""),
    ("CAUTERY s=10 e=14", "CAUTERY", (), {"s": "10", "e": "14"}, ""),
])
def test_context_annotations_parse(text, keyword, args, fields, free):
    c = parse_context(text, 3.25, 0.5)
    assert (c.keyword, c.args, c.fields, c.text, c.onset_s) == (keyword, args, fields, free, 3.25)
    assert c.order == (int(fields["s"]) if "s" in fields else None)
    assert context_text(c.keyword, *c.args, text=c.text or None, **c.fields) == text


@pytest.mark.parametrize("text, problem", [
    ("STEP V9 L", "unknown step 'V9'"),
    ("STEP V1", "needs the side"),
    ("STEP L1 L", "needs finding="),
    ("STEP V1 L by=hand", "by= must be probe or button"),
    ("TS L", "exactly one check=answer"),
    ("TS L nmb_ok=maybe", "must be one of yes, no"),
    ("TS L verdict=yes", "must be one of true_los, not_true_los"),
    ("MAP L resp=yes", "missing required key 'pos_mm'"),
    ("MAP L pos_mm=-3 resp=yes", "not a non-negative number"),
    ("MAP L pos_mm=3", "missing required key 'resp'"),
    ("PLAN L L", "PLAN takes one side"),
    ("CAPTURE EBSLN L", "unknown site 'EBSLN'"),
    ("SET s=3", "at least one setting"),
    ("CAUTERY s=4", "both s= and e="),
    ("CAUTERY s=4 e=2", "e= is before s="),
    ("CAUTERY", "needs a duration"),
    ("TS L nmb_ok=yes s=x", "s='x' is not an integer"),
    ("TS L nmb_ok=yes s=1 L", "field 'L' has no '='"),
    ("LOS L type=3", "type=1 or type=2"),
])
def test_context_parse_errors(text, problem):
    with pytest.raises(ValueError) as e:
        parse_context(text, 7.5)
    assert problem in str(e.value) and "7.5000 s" in str(e.value) and text in str(e.value)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["STEP", "TS", "MAP", "PLAN", "REBASELINE", "CAPTURE", "SET", "CAUTERY", "CLIP", "LOS",
                        "STAGING", "PROBE", "OUTPUT"]),
       st.lists(st.one_of(st.text(max_size=10), st.sampled_from(
           ["L", "R", "V1", "L1", "RLN", "s=3", "e=1", "by=button", "pos_mm=2", "resp=yes", "finding=normal",
            "nmb_ok=no", "verdict=true_los", "text=a b", "=", "a=b=c", "clear"])), max_size=6))
def test_context_parser_never_crashes(keyword, tokens):
    text = " ".join([keyword, *tokens])
    try:
        c = parse_context(text, 1.5, None)
    except ValueError as exc:
        assert "1.5000 s" in str(exc)
    else:
        assert c.keyword == keyword


def test_version_1_files_keep_their_annotations_uninterpreted(tmp_path):
    """Without the conventions mark, a 'STEP ...' is a plain annotation (older exports wrote
    'STEP V1 side=L', which is not version-2 grammar): never an input error."""
    rec = _recording()
    rec.annotations = [Annotation(1.0, None, "STEP V1 side=L"), Annotation(2.0, None, "TS whatever")]
    write_edf(tmp_path / "v1.edf", rec)
    back = read_edf(tmp_path / "v1.edf")
    assert back.conventions == 1 and back.context == []
    assert [a.text for a in back.annotations] == ["STEP V1 side=L", "TS whatever"]


def test_version_2_context_and_recorded_steps_round_trip(tmp_path):
    rec = _recording()
    rec.recorded_steps = {1: Step.R1}  # stimulus 1 (untagged RLN) recorded as R1 with the step button
    rec.context = [parse_context("PLAN L R s=0", 0.0), parse_context("STEP R1 R by=button s=2", 1.25),
                   parse_context("TS L current_delivered=yes s=3", 2.5)]
    write_edf(tmp_path / "v2.edf", rec)
    back = read_edf(tmp_path / "v2.edf")
    assert back.conventions == 2
    assert back.stimuli == rec.stimuli  # the stimulus as delivered: untagged
    assert back.recorded_steps == {1: Step.R1}
    assert [c.raw for c in back.context] == ["PLAN L R s=0", "STEP R1 R by=button s=2",
                                             "TS L current_delivered=yes s=3"]
    assert all(isinstance(c, Context) for c in back.context)
    with pyedflib.EdfReader(str(tmp_path / "v2.edf")) as f:  # an independent reader sees it all
        _onsets, _d, texts = f.readAnnotations()
    assert CONVENTIONS_MARK in texts
    assert any(t.startswith("STIM site=RLN side=R") and t.endswith("step=R1 by=button") for t in texts)


def test_a_malformed_context_annotation_names_the_file(tmp_path):
    path = _write_pyedflib(tmp_path / "bad.edf", texts=(CONVENTIONS_MARK, "MAP L pos_mm=x resp=yes"))
    with pytest.raises(RecordingError) as e:
        read_edf(path)
    assert str(e.value).startswith(str(path)) and "pos_mm='x' is not a number" in str(e.value)
