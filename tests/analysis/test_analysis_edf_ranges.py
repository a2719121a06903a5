"""An EDF+ file whose signal header holds a physical or digital minimum or maximum that is
not a (finite, for digital ones whole) number is refused naming the file, the field and the
signal, before the EDF library trips over it with a message that names neither."""

from __future__ import annotations

import numpy as np
import pytest

from app.analysis.edf import RecordingError, read_edf, recording_from_arrays, write_edf

_RANGE_OFFSETS = {"physical minimum": 104, "physical maximum": 112, "digital minimum": 120, "digital maximum": 128}


def _written(tmp_path):
    path = tmp_path / "case.edf"
    write_edf(path, recording_from_arrays(20000.0, {"EMG L": np.zeros(20000), "EMG R": np.zeros(20000)}))
    return path


def _patched(path, field: str, signal: int, text: bytes):
    data = bytearray(path.read_bytes())
    ns = int(data[252:256].decode().strip())
    at = 256 + _RANGE_OFFSETS[field] * ns + 8 * signal
    data[at: at + 8] = text.ljust(8)
    path.write_bytes(bytes(data))
    return path


def test_the_written_file_reads_back(tmp_path):
    assert read_edf(_written(tmp_path)).sample_rate_hz == 20000.0


@pytest.mark.parametrize("field", sorted(_RANGE_OFFSETS))
@pytest.mark.parametrize("text", [b"abc", b"nan", b"inf", b""])
def test_a_range_field_that_is_not_a_number_is_refused(tmp_path, field, text):
    path = _patched(_written(tmp_path), field, 1, text)
    kind = "a whole number" if field.startswith("digital") else "a number"
    with pytest.raises(RecordingError) as e:
        read_edf(path)
    assert str(e.value) == f"{path}: header field '{field}' of signal 'EMG R' is {text.decode()!r}, not {kind}"


@pytest.mark.parametrize("field", ["digital minimum", "digital maximum"])
def test_a_digital_limit_with_a_fraction_is_refused(tmp_path, field):
    path = _patched(_written(tmp_path), field, 0, b"-3276.5" if field == "digital minimum" else b"3276.5")
    with pytest.raises(RecordingError, match=f"header field '{field}' of signal 'EMG L' is .*not a whole number"):
        read_edf(path)


def test_a_physical_limit_with_a_fraction_is_a_number(tmp_path):
    path = _patched(_written(tmp_path), "physical maximum", 0, b"3276.5")
    assert read_edf(path).sample_rate_hz == 20000.0


def test_a_patient_field_that_starts_with_a_space_has_no_code(tmp_path):
    """EDF+ subfields are separated by single spaces, the code first: a leading space leaves
    the code subfield empty, which EDF+ writes as X (never the next subfield, the sex)."""
    path = _written(tmp_path)
    data = bytearray(path.read_bytes())
    data[8:88] = b" M 01-JAN-1970 X".ljust(80)
    path.write_bytes(bytes(data))
    assert read_edf(path).patient_code == "X"


def test_a_range_field_with_bytes_outside_ascii_is_refused_naming_them_readably(tmp_path):
    path = _patched(_written(tmp_path), "physical maximum", 0, b"\xb5100")
    with pytest.raises(RecordingError) as e:
        read_edf(path)
    assert str(e.value) == f"{path}: header field 'physical maximum' of signal 'EMG L' is '\ufffd100', not a number"


def test_a_signal_label_outside_ascii_is_named_readably(tmp_path):
    path = _patched(_written(tmp_path), "digital minimum", 1, b"x")
    data = bytearray(path.read_bytes())
    data[256 + 16: 256 + 32] = b"EMG \xd8".ljust(16)  # the second signal's label
    path.write_bytes(bytes(data))
    with pytest.raises(RecordingError) as e:
        read_edf(path)
    assert str(e.value) == f"{path}: header field 'digital minimum' of signal 'EMG \ufffd' is 'x', not a whole number"
