"""The EDF+ export byte by byte, as the EDF+ specification and an independent reader see it.

Small files written into ``tmp_path`` and read back as bytes: the 256-byte header and the
per-signal headers (field widths, space padding, ``EDF+C``, numbers within 8 characters),
the choice of the data-record duration, the data records (samples, padding, clipping), the
annotation signal (time-keeping TALs, onsets ``+x.xxx``, durations, ``\\x14``/``\\x15``/``\\x00``),
and what the reader refuses, with the whole one-line message naming the file and the problem.
Fast on purpose: a mutation run executes this file thousands of times.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest

from edf_files import assert_refused
from app.analysis.edf import (
    CONVENTIONS_MARK,
    Annotation,
    Context,
    EdfSignalData,
    Recording,
    RecordingError,
    _annotation_records,
    _clipped_stretches,
    _number_field,
    _onset_text,
    _record_duration,
    is_stim,
    open_edf,
    read_edf,
    write_edf,
)
from app.model import Site

START = dt.datetime(2026, 3, 4, 5, 6, 7)
SIG_WIDTHS = (16, 80, 8, 8, 8, 8, 8, 80, 8, 32)  # label .. reserved, per signal


def _f(value: str, width: int) -> bytes:
    return value.encode("ascii").ljust(width, b" ")


def _rec(fs: float = 10.0, n: int = 25, signals: dict | None = None, **kw) -> Recording:
    sigs = signals if signals is not None else {"EMG L": np.arange(float(n)), "EMG R": np.zeros(n)}
    return Recording(fs, sigs, start=kw.pop("start", START), patient_code=kw.pop("patient_code", "p q"), **kw)


def _write(tmp_path, rec: Recording, name: str = "x.edf", **kw) -> bytes:
    path = tmp_path / name
    write_edf(path, rec, **kw)
    return path.read_bytes()


def _ns(data: bytes) -> int:
    return int(data[252:256])


def _sig_field(data: bytes, k: int, i: int) -> bytes:
    """Field ``k`` (0 = label .. 9 = reserved) of signal ``i``."""
    ns = _ns(data)
    off = 256 + ns * sum(SIG_WIDTHS[:k]) + SIG_WIDTHS[k] * i
    return data[off: off + SIG_WIDTHS[k]]


def _records(data: bytes) -> list[bytes]:
    ns = _ns(data)
    spr = [int(_sig_field(data, 8, i)) for i in range(ns)]
    size = 2 * sum(spr)
    body = data[256 * (ns + 1):]
    return [body[i: i + size] for i in range(0, len(body), size)]


def _samples(data: bytes, i: int) -> np.ndarray:
    """Signal ``i``'s digital samples, all records joined."""
    ns = _ns(data)
    spr = [int(_sig_field(data, 8, k)) for k in range(ns)]
    a = 2 * sum(spr[:i])
    return np.concatenate([np.frombuffer(r[a: a + 2 * spr[i]], dtype="<i2") for r in _records(data)])


def _ann(data: bytes) -> list[bytes]:
    """The annotation signal's bytes of each record, trailing zeros removed."""
    ns = _ns(data)
    spr = [int(_sig_field(data, 8, k)) for k in range(ns)]
    a = 2 * sum(spr[:-1])
    return [r[a:].rstrip(b"\x00") + b"\x00" for r in _records(data)]


# ----------------------------------------------------------------------------- header bytes


def test_header_is_byte_exact(tmp_path):
    data = _write(tmp_path, _rec())
    main = b"".join([
        _f("0", 8), _f("p_q X X X", 80), _f("Startdate 04-MAR-2026 X X LNM", 80), _f("04.03.26", 8),
        _f("05.06.07", 8), _f("1024", 8), _f("EDF+C", 44), _f("3", 8), _f("1", 8), _f("3", 4),
    ])
    assert data[:256] == main
    per_signal = [
        ["EMG L", "EMG R", "EDF Annotations"],
        ["tube surface electrodes", "tube surface electrodes", ""],
        ["uV", "uV", ""],
        ["-32768", "-32768", "-1"],
        ["32767", "32767", "1"],
        ["-32768"] * 3,
        ["32767"] * 3,
        [""] * 3,
        ["10", "10", "30"],
        [""] * 3,
    ]
    expected = b"".join(_f(v, w) for values, w in zip(per_signal, SIG_WIDTHS, strict=True) for v in values)
    assert data[256:1024] == expected
    assert len(data) == 1024 + 3 * (2 * 10 + 2 * 10 + 2 * 30)


def test_header_text_fields_are_ascii_cut_to_width(tmp_path):
    sigs = {"EMG µ": np.zeros(10), "a very long label that is cut": np.zeros(10)}
    data = _write(tmp_path, _rec(signals=sigs))
    assert _sig_field(data, 0, 0) == b"EMG ?           "
    assert _sig_field(data, 0, 1) == b"a very long labe"


@pytest.mark.parametrize("code, field", [
    ("a b", "a_b"), ("!x~", "!x~"), ("a\x7fb", "a_b"), ("  ", "X"), ("", "X"), ("Ω1", "_1"),
])
def test_patient_code_is_one_printable_subfield(tmp_path, code, field):
    data = _write(tmp_path, _rec(patient_code=code))
    assert data[8:88] == _f(f"{field} X X X", 80)


def test_annotation_signal_gets_room_for_its_longest_record(tmp_path):
    rec = _rec(annotations=[Annotation(0.5, None, "x" * 70)])
    data = _write(tmp_path, rec)
    tal = b"+0\x14\x14\x00" + b"+0.5\x14" + b"x" * 70 + b"\x14\x00"
    assert _sig_field(data, 8, 2) == _f(str(-(-len(tal) // 2)), 8)
    assert _ann(data)[0] == tal


# ----------------------------------------------------------------------------- numbers and durations


@pytest.mark.parametrize("x, text", [
    (12345678.0, "12345678"), (-1234567.0, "-1234567"), (0.5, "0.5"), (1.00000001, "1"),
    (0.1234567, "0.123457"), (123456.25, "123456.2"), (2.0, "2"), (-0.1, "-0.1"),
])
def test_number_field_fits_eight_characters(x, text):
    assert _number_field(x) == text


def test_number_field_refuses_what_does_not_fit():
    with pytest.raises(ValueError) as e:
        _number_field(123456789.0)
    assert str(e.value) == "123456789.0 does not fit an EDF header field"


@pytest.mark.parametrize("t, text", [(1.5, "+1.5"), (0.0, "+0"), (10.25, "+10.25"), (100.0, "+100"),
                                      (0.0000001, "+0.0000001")])
def test_onset_text(t, text):
    assert _onset_text(t) == text


@pytest.mark.parametrize("fs, n, expected", [
    (20000.0, 1, (1.0, 20000)),
    (25000.0, 1, (1.0, 25000)),
    (30520.0, 1, (1.0, 30520)),  # 61,440 bytes exactly: still one second
    (30600.0, 1, (0.5, 15300)),
    (40000.0, 2, (0.25, 10000)),
    (130000.0, 1, (0.2, 26000)),
    (200000.0, 1, (0.1, 20000)),
    (400000.0, 1, (0.05, 20000)),
    (700000.0, 1, (0.04, 28000)),
    (1000000.0, 1, (0.02, 20000)),
    (2000000.0, 1, (0.01, 20000)),
    (4000000.0, 1, (0.01, 40000)),  # nothing within 61,440 bytes: the shortest record
    (1.0, 1, (1.0, 1)),
    (1.0000001, 1, (1.0, 1)),
    (2.5, 1, (2.0, 5)),
    (0.5, 1, (2.0, 1)),
    (10000000.333333334, 1, (3.0, 30000001)),
])
def test_record_duration(fs, n, expected):
    assert _record_duration(fs, n) == expected


def test_record_duration_of_an_odd_rate_and_its_message(tmp_path):
    with pytest.raises(ValueError) as e:
        _record_duration(1 / 1001, 1)
    assert str(e.value) == "sample rate 0.000999000999000999 Hz cannot be represented in EDF"
    path = tmp_path / "odd.edf"
    with pytest.raises(RecordingError) as e:
        write_edf(path, _rec(fs=1 / 1001))
    assert str(e.value) == f"{path}: sample rate 0.000999000999000999 Hz cannot be represented in EDF"


def test_slow_rate_gets_long_records(tmp_path):
    data = _write(tmp_path, _rec(fs=0.5, n=3))
    assert data[236:252] == _f("3", 8) + _f("2", 8)
    assert _ann(data) == [b"+0\x14\x14\x00", b"+2\x14\x14\x00", b"+4\x14\x14\x00"]


# ----------------------------------------------------------------------------- writer refusals


@pytest.mark.parametrize("rec_kw, problem", [
    ({"signals": {}}, "a recording needs at least one signal"),
    ({"fs": 0.0}, "sample rate 0.0 Hz is not a positive number"),
    ({"fs": -1.0}, "sample rate -1.0 Hz is not a positive number"),
    ({"fs": float("inf")}, "sample rate inf Hz is not a positive number"),
    ({"signals": {"EMG L": np.zeros(3), "EMG R": np.zeros(2)}}, "signals have different lengths [2, 3]"),
    ({"signals": {"EMG L": np.zeros(0)}}, "the signals are empty"),
    ({"annotations": [Annotation(-1.0, None, "early")]}, "annotation 'early' has onset -1.0 s before the start"),
])
def test_writer_refusals_name_the_file(tmp_path, rec_kw, problem):
    path = tmp_path / "w.edf"
    with pytest.raises(RecordingError) as e:
        write_edf(path, _rec(**rec_kw))
    assert str(e.value) == f"{path}: {problem}"


@pytest.mark.parametrize("pmax", [0.0, -5.0, float("inf"), float("nan")])
def test_physical_range_must_be_positive(tmp_path, pmax):
    path = tmp_path / "p.edf"
    with pytest.raises(RecordingError) as e:
        write_edf(path, _rec(), physical_max_uV=pmax)
    assert str(e.value) == f"{path}: physical range +-{pmax!r} uV is not a positive number"


@pytest.mark.parametrize("pmax", [1e9, 123456789.0])
def test_a_physical_range_too_wide_for_the_header_is_refused_naming_the_file(tmp_path, pmax):
    path = tmp_path / "p.edf"
    with pytest.raises(RecordingError) as e:
        write_edf(path, _rec(), physical_max_uV=pmax)
    assert str(e.value) == f"{path}: physical range +-{pmax!r} uV does not fit the 8-character EDF header field"
    assert not path.exists()


def test_write_error_gives_the_system_reason(tmp_path):
    path = tmp_path / "no" / "x.edf"
    with pytest.raises(RecordingError) as e:
        write_edf(path, _rec())
    assert str(e.value) == f"{path}: cannot be written (No such file or directory)"


def test_a_single_sample_is_a_recording(tmp_path):
    data = _write(tmp_path, _rec(signals={"EMG L": np.array([5.0])}))
    assert list(_samples(data, 0)) == [5] * 10


# ----------------------------------------------------------------------------- data records


def test_samples_padding_and_clipping(tmp_path):
    x = np.array([1.0, -2.0, np.nan, 1e6, -1e6, np.inf, -np.inf, 3.0, 7.0, 9.0, 11.0, 13.0])
    data = _write(tmp_path, _rec(signals={"EMG L": x}))
    assert list(_samples(data, 0)) == [1, -2, 0, 32767, -32768, 32767, -32768, 3, 7, 9, 11, 13] + [13] * 8


def test_padding_in_a_later_chunk(tmp_path):
    x = np.arange(25.0) * 3
    data = _write(tmp_path, _rec(signals={"EMG L": x}), chunk_s=1.0)
    assert list(_samples(data, 0)) == list(range(0, 75, 3)) + [72] * 5


def test_small_range_and_float32_samples(tmp_path):
    """+-0.5 uV: 65535 steps across 1 uV; float32 samples are scaled in float64."""
    x = np.array([0.5, -0.5, 0.0, 0.25], dtype=np.float32)
    data = _write(tmp_path, _rec(signals={"EMG L": x}), physical_max_uV=0.5)
    assert _sig_field(data, 3, 0) == _f("-0.5", 8) and _sig_field(data, 4, 0) == _f("0.5", 8)
    assert list(_samples(data, 0))[:4] == [32767, -32768, 0, 16383]
    y = np.array([0.50000012], dtype=np.float32)  # 32768.50000012 rounds up only in float64
    data = _write(tmp_path, _rec(signals={"EMG L": y}), name="y.edf")
    assert _samples(data, 0)[0] == 1


def test_float32_sample_just_above_a_small_range_is_clipped(tmp_path):
    x = np.array([0.1, 0.0], dtype=np.float32)  # float32(0.1) = 0.10000000149 > 0.1
    data = _write(tmp_path, _rec(signals={"EMG L": x}), physical_max_uV=0.1)
    assert _ann(data)[0] == b"+0\x14\x14\x00+0\x150.1\x14CLIP L max_uV=0\x14\x00"


# ----------------------------------------------------------------------------- clipped stretches


def test_clipped_stretches_across_blocks():
    sig = np.zeros(60)
    for i, v in {0: 200, 5: -300, 8: 150, 9: 150, 11: 400, 20: 120, 29: 500, 30: 110, 55: -130, 56: np.nan}.items():
        sig[i] = v
    assert _clipped_stretches(sig, 60, -100.0, 100.0, 100.0, 10) == [
        (0, 1, 200.0), (5, 6, 300.0), (8, 12, 400.0), (20, 21, 120.0), (29, 31, 500.0), (55, 56, 130.0)]


def test_clipped_stretches_edges():
    assert _clipped_stretches(np.array([100.0, -100.0, 5.0]), 3, -100.0, 100.0, 100.0, 10) == []
    # at 50 Hz samples two apart are two stretches (the merge gap is one sample)
    assert _clipped_stretches(np.array([101.0, 0.0, 102.0]), 3, -100.0, 100.0, 50.0, 10) == [
        (0, 1, 101.0), (2, 3, 102.0)]


def test_the_peak_of_a_clipped_stretch_is_that_of_its_samples_outside_the_range():
    """An unreadable sample (NaN) or a sample back inside the range within a stretch is not its peak."""
    assert _clipped_stretches(np.array([200.0, np.nan, 300.0]), 3, -100.0, 100.0, 1000.0, 10) == [(0, 3, 300.0)]
    assert _clipped_stretches(np.array([120.0, -150.0, 110.0]), 3, -200.0, 100.0, 1000.0, 10) == [(0, 3, 120.0)]


# ----------------------------------------------------------------------------- annotations


def test_annotation_tals_are_byte_exact(tmp_path):
    rec = _rec(n=30, annotations=[
        Annotation(0.0, None, "b"), Annotation(0.0, 0.25, "a"), (1.5, 2.0, "t\x00u\x14v\x15w"),
        Annotation(99.0, None, "late"), (2.0, None, "two"),
    ])
    data = _write(tmp_path, rec)
    assert _ann(data) == [
        b"+0\x14\x14\x00+0\x14b\x14\x00+0\x150.25\x14a\x14\x00",
        b"+1\x14\x14\x00+1.5\x152\x14t u v w\x14\x00",
        b"+2\x14\x14\x00+2\x14two\x14\x00+99\x14late\x14\x00",
    ]


def test_context_annotations_are_written_with_the_mark(tmp_path):
    rec = _rec(n=30, context=[
        Context(0.0, None, "STEP", ("V1", "L"), {"s": "1"}, "hello there", raw=""),
        Context(1.25, 0.5, "CAUTERY", (), {"s": "1", "e": "2"}, "", raw=""),
        Context(2.0, None, "PLAN", ("L",), {}, "", raw="PLAN L R s=0"),
    ])
    data = _write(tmp_path, rec)
    assert _ann(data) == [
        b"+0\x14\x14\x00+0\x14" + CONVENTIONS_MARK.encode() + b"\x14\x00+0\x14STEP V1 L s=1 text=hello there\x14\x00",
        b"+1\x14\x14\x00+1.25\x150.5\x14CAUTERY s=1 e=2\x14\x00",
        b"+2\x14\x14\x00+2\x14PLAN L R s=0\x14\x00",
    ]


@pytest.mark.parametrize("mark", [Annotation(0.5, None, CONVENTIONS_MARK), (0.5, None, CONVENTIONS_MARK + " ")])
def test_the_mark_is_not_written_twice(tmp_path, mark):
    rec = _rec(annotations=[mark, (0.75, None, "x")], context=[Context(1.0, None, "PLAN", ("L",), {}, "", raw="")])
    data = _write(tmp_path, rec)
    assert _ann(data)[:2] == [
        b"+0\x14\x14\x00+0.5\x14" + mark_text(mark).encode() + b"\x14\x00+0.75\x14x\x14\x00",
        b"+1\x14\x14\x00+1\x14PLAN L\x14\x00",
    ]


def mark_text(mark) -> str:
    return mark.text if isinstance(mark, Annotation) else mark[2]


def test_record_of_an_onset_at_short_records():
    """1.0 // 0.1 is 9.0 in floating point: the onset 1.0 s goes to the record starting at 0.9 s."""
    rec = _rec(fs=200000.0, signals={"EMG L": np.zeros(1)}, annotations=[Annotation(1.0, None, "a")])
    ann = _annotation_records(Path("r.edf"), rec, [], 12, 0.1)
    assert ann[9] == b"+0.9\x14\x14\x00+1\x14a\x14\x00"
    assert ann[10] == b"+1\x14\x14\x00"
    assert ann[3] == b"+0.3\x14\x14\x00"


def test_is_stim():
    assert is_stim("STIM") and is_stim("STIM site=VAGUS") and is_stim("STIM\tsite=VAGUS")
    assert not is_stim("stim") and not is_stim("STIMULUS") and not is_stim("XXSTIMXX")


# ----------------------------------------------------------------------------- reading back


def test_stimuli_of_one_onset_keep_the_file_order(tmp_path):
    n = 2500
    stims = [(0.1, 0.1, "STIM site=VAGUS side=L source=APS set_mA=1"),
             (0.1, 0.2, "STIM site=RLN side=L source=APS set_mA=1")]  # edfio orders by duration, then text
    rec = Recording(5000.0, {"EMG L": np.zeros(n)}, annotations=stims,
                    context=[Context(0.2, 0.25, "CAUTERY", (), {"s": "0", "e": "0"}, "", raw="CAUTERY s=0 e=0")])
    path = tmp_path / "s.edf"
    write_edf(path, rec)
    back = read_edf(path)
    assert [s.site for s in back.stimuli] == [Site.VAGUS, Site.RLN]
    assert [(c.keyword, c.duration_s) for c in back.context] == [("CAUTERY", 0.25)]


def test_lazy_signal_slices(tmp_path):
    path = tmp_path / "l.edf"
    write_edf(path, Recording(5000.0, {"EMG L": np.arange(2500.0) - 1000}))
    data = open_edf(path).signals["EMG L"]
    assert isinstance(data, EdfSignalData) and len(data) == 5000
    assert data[5:5].shape == (0,) and data[7:3].shape == (0,)
    x = data[998:1002]
    assert x.dtype == np.float64 and list(x) == [-2.0, -1.0, 0.0, 1.0]
    for bad in (3, slice(0, 10, 2)):
        with pytest.raises(TypeError) as e:
            data[bad]
        assert str(e.value) == "EDF signals are read by contiguous slices"
    assert np.asarray(data, dtype=np.float32).dtype == np.float32


# ----------------------------------------------------------------------------- reader refusals


def _edf(labels, sprs, *, n_records=1, duration="1", phys=("-100", "100"), ns_text=None, dims=None) -> bytes:
    """A hand-made EDF+C file: the signals, then an annotation signal of 30 samples."""
    labels = [*labels, "EDF Annotations"]
    sprs = [*sprs, 30]
    ns = len(labels)
    dims = dims or ["uV"] * (ns - 1)
    head = b"".join([
        _f("0", 8), _f("X X X X", 80), _f("Startdate 04-MAR-2026 X X X", 80), _f("04.03.26", 8),
        _f("05.06.07", 8), _f(str(256 * (ns + 1)), 8), _f("EDF+C", 44), _f(str(n_records), 8),
        _f(duration, 8), _f(ns_text or str(ns), 4),
    ])
    fields = [labels, [""] * ns, [*dims, ""], [phys[0]] * (ns - 1) + ["-1"], [phys[1]] * (ns - 1) + ["1"],
              ["-32768"] * ns, ["32767"] * ns, [""] * ns, [str(s) for s in sprs], [""] * ns]
    head += b"".join(_f(v, w) for values, w in zip(fields, SIG_WIDTHS, strict=True) for v in values)
    body = b""
    for r in range(n_records):
        body += bytes(2 * sum(sprs[:-1])) + f"+{r}\x14\x14\x00".encode().ljust(60, b"\x00")
    return head + body


def _patched(data: bytes, a: int, value: bytes) -> bytes:
    return data[:a] + value + data[a + len(value):]


@pytest.mark.parametrize("labels, sprs, problem", [
    ((), (), "no 'EMG L' or 'EMG R' signal (labels: none)"),
    (("ECG", "EEG"), (5000, 5000), "no 'EMG L' or 'EMG R' signal (labels: ECG, EEG)"),
    (("EMG L", "EMG L"), (5000, 5000), "signal label 'EMG L' appears 2 times"),
    (("EMG L", "EMG R"), (5000, 2500), "the EMG signals have different sampling rates (EMG L 5000 Hz, EMG R 2500 Hz)"),
])
def test_reader_refuses_the_signals(tmp_path, labels, sprs, problem):
    assert_refused(tmp_path, _edf(labels, sprs), problem)


def test_reader_refuses_an_empty_physical_range(tmp_path):
    assert_refused(tmp_path, _edf(("EMG L",), (5000,), phys=("100", "100")),
             "signal 'EMG L' has an empty physical or digital range")


def test_reader_accepts_the_hand_made_file(tmp_path):
    path = tmp_path / "ok.edf"
    path.write_bytes(_edf(("EMG L",), (5000,)))
    assert read_edf(path).n_samples == 5000


@pytest.mark.parametrize("a, value, problem", [
    (252, b"\xff   ", "header field 'number of signals' is '\ufffd', not a number"),
    (252, b"x   ", "header field 'number of signals' is 'x', not a number"),
    (184, b"x       ", "header field 'number of bytes in the header' is 'x', not a number"),
    (184, b"1024    ", "header size 1024 bytes does not match its 2 signals (768 bytes expected)"),
    (244, b"0       ", "data record duration is 0 s; a recording with signals needs records longer than 0 s"),
    (236, b"1.5     ", "header says 1.5 data records"),
    (236, b"-2      ", "header says -2 data records"),
    (236, b"0       ", "10060 bytes after the 0 data records its header announces (not an intact EDF+ file)"),
])
def test_reader_refuses_header_numbers(tmp_path, a, value, problem):
    data = _patched(_edf(("EMG L",), (5000,)), a, value)
    path = tmp_path / "r.edf"
    path.write_bytes(data)
    with pytest.raises(RecordingError) as e:
        read_edf(path)
    assert str(e.value) == f"{path}: {problem}"


def test_reader_accepts_an_unknown_number_of_records(tmp_path):
    path = tmp_path / "u.edf"
    path.write_bytes(_patched(_edf(("EMG L",), (5000,)), 236, b"-1      "))
    assert read_edf(path).n_samples == 5000


def test_reader_reads_an_annotation_only_header_up_to_the_signals(tmp_path):
    assert_refused(tmp_path, _edf((), ()), "no 'EMG L' or 'EMG R' signal (labels: none)")


def test_reader_refuses_a_header_cut_short(tmp_path):
    data = _edf(("EMG L", "EMG R"), (5000, 5000))[:700]
    assert_refused(tmp_path, data, "truncated inside its header (700 bytes, 1024 expected)")
