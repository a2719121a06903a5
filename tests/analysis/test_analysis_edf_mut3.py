"""EDF+ reading refusals, read fallbacks, STIM parsing details and writer edge cases.

Every refusal is matched whole (``<file>: <problem>``): the operator reads the message and
must learn which file and what is wrong. Files are hand-made byte by byte so that each
header field can be set to exactly what a foreign or damaged file would hold.
"""

from __future__ import annotations

import datetime as dt
import re
import sys
import tracemalloc
import warnings

import edfio
import numpy as np
import pytest

import app.analysis.edf as edf_module
from edf_files import assert_refused
from app.analysis.edf import Recording, RecordingError, open_edf, parse_stim, read_edf, write_edf

SIG_WIDTHS = (16, 80, 8, 8, 8, 8, 8, 80, 8, 32)  # label .. reserved, per signal
ANN_SPR = 30  # samples per record of the hand-made annotation signal
STIM_OK = "STIM site=RLN side=L source=PROBE set_mA=1"


def _f(value: bytes | str, width: int) -> bytes:
    raw = value.encode("ascii") if isinstance(value, str) else value
    return raw.ljust(width, b" ")


def _header(labels, sprs, *, n_records="1", reserved: bytes = b"EDF+C", patient: bytes = b"X X X X",
            recording: bytes = b"Startdate 04-MAR-2026 X X X", startdate: bytes = b"04.03.26") -> bytes:
    ns = len(labels)
    head = b"".join([
        _f("0", 8), _f(patient, 80), _f(recording, 80), _f(startdate, 8), _f("05.06.07", 8),
        _f(str(256 * (ns + 1)), 8), _f(reserved, 44), _f(n_records, 8), _f("1", 8), _f(str(ns), 4),
    ])
    fields = [list(labels), [""] * ns, ["uV" if lab != "EDF Annotations" else "" for lab in labels],
              ["-100"] * ns, ["100"] * ns, ["-32768"] * ns, ["32767"] * ns, [""] * ns,
              [str(s) for s in sprs], [""] * ns]
    return head + b"".join(_f(v, w) for values, w in zip(fields, SIG_WIDTHS, strict=True) for v in values)


def _edf(labels=("EMG L",), sprs=(5000,), *, n_records: int = 1, tal: bytes = b"", **kw) -> bytes:
    """A hand-made EDF+C file: the signals (zeros), then an annotation signal of 30 samples
    holding the time-keeping TAL of each record (and ``tal`` in the first)."""
    labels = [*labels, "EDF Annotations"]
    sprs = [*sprs, ANN_SPR]
    head = _header(labels, sprs, n_records=str(n_records), **kw)
    body = b"".join(bytes(2 * sum(sprs[:-1])) + (f"+{r}\x14\x14\x00".encode() + (tal if r == 0 else b""))
                    .ljust(2 * ANN_SPR, b"\x00") for r in range(n_records))
    return head + body


def _record_bytes(sprs=(5000,)) -> int:
    return 2 * (sum(sprs) + ANN_SPR)


def _read(tmp_path, data: bytes) -> Recording:
    path = tmp_path / "ok.edf"
    path.write_bytes(data)
    return read_edf(path)


# ----------------------------------------------------------------------------- kind of file


@pytest.mark.parametrize("reserved", [b"EDF+D", b"EDF+D.v2"])
def test_a_discontinuous_file_is_refused_as_edf_plus_d(tmp_path, reserved):
    """The kind is the first five characters of the reserved field, whatever follows them."""
    assert_refused(tmp_path, _edf(reserved=reserved),
             "EDF+D (discontinuous) is not supported; EDF+C is required")


@pytest.mark.parametrize("reserved", [b"", b"BIOSEMI", b"\xff\xfeEDF", b"edf+d", b"EDF+X"])
def test_a_file_without_the_edf_plus_mark_is_refused_as_plain_edf(tmp_path, reserved):
    """Also when the reserved field holds bytes that are not ASCII."""
    assert_refused(tmp_path, _edf(reserved=reserved), "not EDF+ (plain EDF has no annotations for the stimuli)")


def test_a_file_that_cannot_be_opened_names_the_system_reason(tmp_path, monkeypatch):
    path = tmp_path / "locked.edf"
    path.write_bytes(_edf())

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(edf_module, "open", refuse, raising=False)
    with pytest.raises(RecordingError) as e:
        read_edf(path)
    assert str(e.value) == f"{path}: cannot be read (Permission denied)"


@pytest.mark.parametrize("exc, reason", [
    (PermissionError(13, "Permission denied"), "Permission denied"),
    (OSError("device went away"), "device went away"),
])
def test_an_io_error_of_the_edf_library_names_the_file_and_the_reason(tmp_path, monkeypatch, exc, reason):
    path = tmp_path / "io.edf"
    path.write_bytes(_edf())

    def fail(*args, **kwargs):
        raise exc

    monkeypatch.setattr(edfio, "read_edf", fail)
    with pytest.raises(RecordingError) as e:
        read_edf(path)
    assert str(e.value) == f"{path}: cannot be read ({reason})"


def test_annotations_the_edf_library_cannot_decode_make_the_file_invalid(tmp_path):
    data = _edf(tal=b"+0.5\x14\xff\xfe\x14\x00")
    assert_refused(tmp_path, data, "not a valid EDF+ file ('utf-8' codec can't decode byte 0xff in position 10: "
                             "invalid start byte)")


def test_without_the_edf_library_reading_is_refused_naming_the_file(tmp_path, monkeypatch):
    path = tmp_path / "x.edf"
    path.write_bytes(_edf())
    monkeypatch.setitem(sys.modules, "edfio", None)  # import edfio raises ImportError
    with pytest.raises(RecordingError) as e:
        read_edf(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: cannot read EDF+ (") and "edfio" in msg and "\n" not in msg


# ----------------------------------------------------------------------------- start and patient


@pytest.mark.parametrize("kw", [
    {"recording": b"Startdate X X X X"},  # anonymised EDF+ start date
    {"startdate": b"99.99.99"},  # a legacy start date that is no date
])
def test_a_start_date_that_cannot_be_read_falls_back_to_1985(tmp_path, kw):
    rec = _read(tmp_path, _edf(**kw))
    assert rec.start == dt.datetime(1985, 1, 1)
    assert rec.n_samples == 5000


def test_a_blank_patient_field_gives_the_code_x(tmp_path):
    assert _read(tmp_path, _edf(patient=b"")).patient_code == "X"


def test_the_patient_code_is_the_first_space_separated_subfield(tmp_path):
    """EDF+ separates the subfields by spaces only; a tab is part of a subfield."""
    assert _read(tmp_path, _edf(patient=b"case\t7 M 01-JAN-1970 X")).patient_code == "case\t7"
    assert _read(tmp_path, _edf(patient=b"case-7 M 01-JAN-1970 X")).patient_code == "case-7"


# ----------------------------------------------------------------------------- samples per record


@pytest.mark.parametrize("value, problem", [
    ("x", "header field 'samples per data record' is 'x', not a number"),
    ("0", "a signal has 0 samples per data record"),
    ("2.5", "a signal has 2.5 samples per data record"),
    ("-3", "a signal has -3 samples per data record"),
])
def test_a_bad_samples_per_record_field_isassert_refused(tmp_path, value, problem):
    data = _header(["EMG L", "Temp", "EDF Annotations"], [5000, value, ANN_SPR]) + bytes(2 * (5000 + 1 + 30))
    assert_refused(tmp_path, data, problem)


def test_a_signal_of_one_sample_per_record_is_accepted(tmp_path):
    rec = _read(tmp_path, _edf(("EMG L", "Temp"), (5000, 1), n_records=2))
    assert rec.channels == ["EMG L"] and rec.n_samples == 10000


# ----------------------------------------------------------------------------- truncation


def test_an_unknown_record_count_with_a_last_record_cut_short_isassert_refused(tmp_path):
    rb = _record_bytes()
    data = _edf(n_records=2)
    data = data[:256 * 3] + data[256 * 3:][: rb + 1000]
    data = data[:236] + _f("-1", 8) + data[244:]
    assert_refused(tmp_path, data, f"truncated: the last data record is cut short (1000 of {rb} bytes)")


def test_a_file_cut_inside_a_record_says_how_much_it_holds(tmp_path):
    rb = _record_bytes()
    data = _edf(n_records=10)
    data = data[: 256 * 3 + 9 * rb + rb // 2]
    assert_refused(tmp_path, data, f"truncated: the header announces 10 data records of 1 s ({10 * rb} bytes) but the "
                             f"file holds {9 * rb + rb // 2} bytes (9 whole records, 95 %)")


def test_a_file_that_ends_with_its_header_holds_no_record(tmp_path):
    """One signal of one sample per record: the 2 bytes announced are missing entirely."""
    data = _header(["EMG L"], [1])
    assert_refused(tmp_path, data, "truncated: the header announces 1 data records of 1 s (2 bytes) but the file holds "
                             "0 bytes (0 whole records, 0 %)")


# ----------------------------------------------------------------------------- lazy reading


def test_open_edf_does_not_load_the_samples(tmp_path):
    """A long recording opened lazily costs memory only for what is sliced from it."""
    n = 20000 * 30
    rec = Recording(20000.0, {"EMG L": np.zeros(n), "EMG R": np.zeros(n)})
    path = tmp_path / "long.edf"
    write_edf(path, rec)
    open_edf(path)  # once before measuring: the first call's one-time costs are not the samples
    tracemalloc.start()
    try:
        back = open_edf(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert back.n_samples == n
    assert peak < 2 * n * 2 / 10, peak  # a tenth of the file's 2.4 MB of 16-bit samples
    assert np.array_equal(back.signals["EMG R"][100:105], np.zeros(5))


# ----------------------------------------------------------------------------- STIM text


def test_parse_stim_numbers_the_stimulus_0_by_default():
    assert parse_stim(STIM_OK, 1.0).index == 0
    assert parse_stim(STIM_OK, 1.0, 7).index == 7


@pytest.mark.parametrize("text, problem", [
    ("STIM site=X side=L source=PROBE set_mA=1", "unknown site 'X' (allowed: VAGUS, RLN, EBSLN, UNTAGGED)"),
    ("STIM site=RLN side=M source=PROBE set_mA=1", "unknown side 'M' (allowed: L, R)"),
    ("STIM site=RLN=x side=L source=PROBE set_mA=1",
     "unknown site 'RLN=x' (allowed: VAGUS, RLN, EBSLN, UNTAGGED)"),
    ("STIM site=RLN side=L source=PROBE set_mA=1=2", "set_mA='1=2' is not a number"),
    ("STIM site=RLN side=L source=PROBE set_mA=1 pw_us=0", "pw_us='0' is not a positive integer"),
    ("STIM site=RLN side=L source=PROBE set_mA=1 pw_us=-5", "pw_us='-5' is not a positive integer"),
])
def test_a_stim_annotation_is_refused_with_the_whole_message(text, problem):
    where = f"STIM annotation at 2.5000 s ({text!r})"
    with pytest.raises(ValueError, match=f"^{re.escape(where)}: {re.escape(problem)}$"):
        parse_stim(text, 2.5)


def test_a_value_holding_an_equals_sign_belongs_to_the_first_key():
    s = parse_stim("STIM site=RLN side=L source=PROBE set_mA=1 note=a=b pw_us=150", 0.0)
    assert (s.site.value, s.pw_us) == ("RLN", 150)


# ----------------------------------------------------------------------------- writer edge cases


class _ShortSignal:
    """A signal whose slices hold fewer samples than its length announces."""

    def __init__(self, n: int, available: int) -> None:
        self._n, self._data = n, np.full(available, 7.0)

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, index: slice) -> np.ndarray:
        return self._data[index]


def _digital(path, n: int) -> np.ndarray:
    """The first signal's digital samples of a file of 10 Hz records of 10 samples."""
    data = path.read_bytes()
    ns = int(data[252:256])
    spr = [int(data[256 + ns * 216 + 8 * k: 256 + ns * 216 + 8 * k + 8]) for k in range(ns)]
    body = data[256 * (ns + 1):]
    rb = 2 * sum(spr)
    return np.concatenate([np.frombuffer(body[r: r + 2 * spr[0]], dtype="<i2")
                           for r in range(0, len(body), rb)])[:n]


def test_a_chunk_a_signal_yields_no_samples_for_is_written_as_zeros(tmp_path):
    """Chunks of one 1 s record: the second chunk's slice of the signal comes back empty."""
    path = tmp_path / "short.edf"
    write_edf(path, Recording(10.0, {"EMG L": _ShortSignal(20, 10)}), chunk_s=1.0)
    assert _digital(path, 20).tolist() == [7] * 10 + [0] * 10


def test_a_chunk_cut_short_is_padded_with_its_last_sample(tmp_path):
    path = tmp_path / "short.edf"
    write_edf(path, Recording(10.0, {"EMG L": _ShortSignal(20, 14)}), chunk_s=1.0)
    assert _digital(path, 20).tolist() == [7] * 20


def test_infinite_samples_are_written_as_the_ends_of_a_small_range_without_warnings(tmp_path):
    path = tmp_path / "inf.edf"
    x = np.array([0.0, np.inf, -np.inf, np.nan, 50.0, -50.0, 1e9, -1e9, 0.0, 0.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        write_edf(path, Recording(10.0, {"EMG L": x}), physical_max_uV=100.0)
    dig = _digital(path, 10)
    assert dig[1] == 32767 and dig[2] == -32768 and dig[6] == 32767 and dig[7] == -32768
    assert abs(int(dig[3])) <= 1 and dig[4] > 16000 and dig[5] < -16000
