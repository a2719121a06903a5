"""EDF+ recordings as ``shared/specs/recording-exchange.md`` defines them.

Owns: ``Recording`` (EMG signals in µV, stimuli, other annotations, start, patient code),
``read_edf``/``open_edf`` (via the ``edfio`` library, lazily memory-mapped),
``write_edf`` (streamed), ``stim_text``/``parse_stim`` for STIM annotations, and
``RecordingError``.
May import: numpy, edfio, ``app.model``.

Reading uses edfio, which memory-maps the data records, so a two-hour recording is not
loaded whole: ``read_edf(path, lazy=True)`` gives signals that read only the samples
sliced from them. Writing is done here, record by record in bounded chunks, because
edfio's writer assembles the whole file in memory (hours of 20 kHz EMG would need
gigabytes); every file written is read back by edfio and by pyEDFlib in the tests.

File layout written: EDF+C, one signal per EMG channel (label ``EMG L``/``EMG R``,
dimension ``uV``, 16-bit, symmetric physical range), then ``EDF Annotations`` holding the
time-keeping annotation of each data record and the annotations whose onset falls in it,
onsets to 0.1 µs. Data records last 1 s or less (at most 61,440 bytes where the sample rate
allows, as EDF recommends). The start time is kept to the second.

Every error is a ``RecordingError`` whose one-line message names the file and the problem.
"""

from __future__ import annotations

import datetime as _dt
import math
import warnings
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterable, Protocol, Sequence

import numpy as np

from app.model import Side, Site, Source, Step, Stimulus

EMG_LABELS = ("EMG L", "EMG R")
MIN_RATE_HZ = 5000.0
STIM_REQUIRED = ("site", "side", "source", "set_mA")
_DIGITAL_MIN = -32768
_DIGITAL_MAX = 32767
_MAX_RECORD_BYTES = 61440
_UNIT_SCALE = {"uV": 1.0, "µV": 1.0, "mV": 1000.0, "V": 1e6, "nV": 1e-3}
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")


class RecordingError(ValueError):
    """A recording could not be read or written; the message names the file and why."""


class SignalData(Protocol):
    """What ``write_edf`` needs of a signal: a length and slices in µV."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: slice) -> np.ndarray: ...


@dataclass(frozen=True)
class Annotation:
    """An EDF+ annotation other than a stimulus (kept, not interpreted)."""

    onset_s: float
    duration_s: float | None
    text: str


@dataclass
class Recording:
    """EMG signals (µV) at one sample rate, with the stimuli and other annotations.

    ``signals`` maps a label (``EMG L``, ``EMG R``) to a 1-D array of µV, or to any
    object with ``len()`` and slicing (a memory map, ``EdfSignalData``), so hours of data
    need not be in memory.
    """

    sample_rate_hz: float
    signals: dict[str, Any]
    stimuli: list[Stimulus] = field(default_factory=list)
    start: _dt.datetime = field(default_factory=lambda: _dt.datetime(2000, 1, 1))
    patient_code: str = "X"
    annotations: list[Annotation] = field(default_factory=list)  # or (onset_s, duration_s, text)
    source: str = ""  # the file it was read from, if any

    @property
    def n_samples(self) -> int:
        return min((len(s) for s in self.signals.values()), default=0)

    @property
    def duration_s(self) -> float:
        return self.n_samples / self.sample_rate_hz

    @property
    def channels(self) -> list[str]:
        return [label for label in EMG_LABELS if label in self.signals]


class EdfSignalData:
    """One EDF signal read lazily: ``len()``, and slices in µV (float64)."""

    def __init__(self, signal: Any, n: int, scale: float) -> None:
        self._signal = signal
        self._n = n
        self._fs = float(signal.sampling_frequency)
        pmin, pmax = float(signal.physical_min), float(signal.physical_max)
        dmin, dmax = int(signal.digital_min), int(signal.digital_max)
        self.gain = (pmax - pmin) / (dmax - dmin) * scale  # µV per digital step
        self.offset = (pmin - dmin * (pmax - pmin) / (dmax - dmin)) * scale

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, index: slice) -> np.ndarray:
        if not isinstance(index, slice) or index.step not in (None, 1):
            raise TypeError("EDF signals are read by contiguous slices")
        start, stop, _ = index.indices(self._n)
        if stop <= start:
            return np.zeros(0)
        digital = self._signal.get_digital_slice(start / self._fs, stop / self._fs)
        return digital.astype(np.float64) * self.gain + self.offset

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        data = self[0 : self._n]
        return data if dtype is None else data.astype(dtype)


# ----------------------------------------------------------------------------- STIM text


def _num(x: float) -> str:
    return f"{x:.3f}"


def stim_text(s: Stimulus) -> str:
    """The STIM annotation text of a stimulus (recording-exchange.md)."""
    parts = [
        "STIM",
        f"site={s.site.value}",
        f"side={s.side.value}",
        f"source={s.source.value}",
        f"set_mA={_num(s.set_mA)}",
    ]
    if s.delivered_mA is not None:
        parts.append(f"delivered_mA={_num(s.delivered_mA)}")
    parts.append(f"pw_us={int(s.pw_us)}")
    if s.step is not None:
        parts.append(f"step={s.step.value}")
    return " ".join(parts)


def is_stim(text: str) -> bool:
    return text == "STIM" or text.startswith("STIM ") or text.startswith("STIM\t")


def parse_stim(text: str, onset_s: float, index: int = 0) -> Stimulus:
    """Parse a STIM annotation; ``ValueError`` says what is wrong (without the file)."""
    where = f"STIM annotation at {onset_s:.4f} s ({text.strip()!r})"
    fields: dict[str, str] = {}
    for token in text.split()[1:]:
        key, sep, value = token.partition("=")
        if not sep:
            raise ValueError(f"{where}: field {token!r} has no '='")
        if key in fields:
            raise ValueError(f"{where}: key {key!r} given twice")
        fields[key] = value
    missing = [k for k in STIM_REQUIRED if k not in fields]
    if missing:
        raise ValueError(f"{where}: missing required key {missing[0]!r}")

    def enum(cls, key):
        try:
            return cls(fields[key])
        except ValueError:
            allowed = ", ".join(m.value for m in cls)
            raise ValueError(f"{where}: unknown {key} {fields[key]!r} (allowed: {allowed})") from None

    def number(key):
        try:
            x = float(fields[key])
        except ValueError:
            raise ValueError(f"{where}: {key}={fields[key]!r} is not a number") from None
        if not math.isfinite(x) or x < 0:
            raise ValueError(f"{where}: {key}={fields[key]!r} is not a non-negative number")
        return x

    pw = 100
    if "pw_us" in fields:
        try:
            pw = int(fields["pw_us"])
        except ValueError:
            raise ValueError(f"{where}: pw_us={fields['pw_us']!r} is not an integer") from None
        if pw <= 0:
            raise ValueError(f"{where}: pw_us={fields['pw_us']!r} is not a positive integer")
    return Stimulus(
        index=index,
        t_s=float(onset_s),
        site=enum(Site, "site"),
        side=enum(Side, "side"),
        source=enum(Source, "source"),
        set_mA=number("set_mA"),
        delivered_mA=number("delivered_mA") if "delivered_mA" in fields else None,
        pw_us=pw,
        step=enum(Step, "step") if "step" in fields else None,
    )


# ----------------------------------------------------------------------------- reading


def read_edf(path: str | Path, *, lazy: bool = False) -> Recording:
    """Read an EDF+ recording. ``lazy=True`` reads samples only when sliced."""
    path = Path(path)
    try:
        import edfio
    except ImportError as exc:  # pragma: no cover - edfio is a pinned dependency
        raise RecordingError(f"{path}: cannot read EDF+ ({exc})") from None
    if not path.exists():
        raise RecordingError(f"{path}: no such file")
    if not path.is_file():
        raise RecordingError(f"{path}: not a file")
    try:
        with open(path, "rb") as f:
            head = f.read(256)
    except OSError as exc:
        raise RecordingError(f"{path}: cannot be read ({exc.strerror})") from None
    if len(head) < 256 or not head[:8].strip() == b"0":
        raise RecordingError(f"{path}: not an EDF file")
    if not head[192:197] == b"EDF+C":
        kind = head[192:197].decode("ascii", "replace").strip()
        if kind == "EDF+D":
            raise RecordingError(f"{path}: EDF+D (discontinuous) is not supported; EDF+C is required")
        raise RecordingError(f"{path}: not EDF+ (plain EDF has no annotations for the stimuli)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            edf = edfio.read_edf(path, lazy_load_data=True)
            labels = list(edf.labels)
            raw_annotations = edf.annotations
    except OSError as exc:
        raise RecordingError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    except (ValueError, IndexError, UnicodeDecodeError, ArithmeticError) as exc:
        raise RecordingError(f"{path}: not a valid EDF+ file ({_first_line(exc)})") from None

    present = [label for label in EMG_LABELS if label in labels]
    if not present:
        raise RecordingError(f"{path}: no 'EMG L' or 'EMG R' signal (labels: {', '.join(labels) or 'none'})")
    for label in present:
        if labels.count(label) > 1:
            raise RecordingError(f"{path}: signal label {label!r} appears {labels.count(label)} times")
    sigs = {label: edf.signals[labels.index(label)] for label in present}
    rates = {label: float(s.sampling_frequency) for label, s in sigs.items()}
    fs = rates[present[0]]
    if len(set(rates.values())) > 1:
        desc = ", ".join(f"{k} {v:g} Hz" for k, v in rates.items())
        raise RecordingError(f"{path}: the EMG signals have different sampling rates ({desc})")
    if fs < MIN_RATE_HZ:
        raise RecordingError(f"{path}: EMG sampling rate {fs:g} Hz is below the minimum of {MIN_RATE_HZ:g} Hz")
    n = int(edf.num_data_records) * int(sigs[present[0]].samples_per_data_record)
    signals: dict[str, Any] = {}
    for label, s in sigs.items():
        unit = s.physical_dimension.strip()
        if unit not in _UNIT_SCALE:
            raise RecordingError(f"{path}: physical dimension {unit!r} of {label!r} is not a voltage (uV expected)")
        if s.physical_max == s.physical_min or s.digital_max == s.digital_min:
            raise RecordingError(f"{path}: signal {label!r} has an empty physical or digital range")
        data = EdfSignalData(s, n, _UNIT_SCALE[unit])
        signals[label] = data if lazy else data[0:n]

    stims: list[tuple[float, str]] = []
    others: list[Annotation] = []
    for ann in raw_annotations:
        if is_stim(ann.text):
            stims.append((float(ann.onset), ann.text))
        else:
            others.append(Annotation(float(ann.onset), ann.duration, ann.text))
    stims.sort(key=lambda t: t[0])
    stimuli = []
    for i, (onset, text) in enumerate(stims):
        try:
            stimuli.append(parse_stim(text, onset, i))
        except ValueError as exc:
            raise RecordingError(f"{path}: {exc}") from None

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            start = edf.startdatetime
    except (ValueError, TypeError, ArithmeticError, edfio.AnonymizedDateError):
        start = _dt.datetime(1985, 1, 1)
    code = edf.local_patient_identification.split(" ")[0] if edf.local_patient_identification.strip() else "X"
    return Recording(
        sample_rate_hz=fs,
        signals=signals,
        stimuli=stimuli,
        start=start,
        patient_code=code,
        annotations=others,
        source=str(path),
    )


def open_edf(path: str | Path) -> Recording:
    """``read_edf(path, lazy=True)``: samples are read only where sliced."""
    return read_edf(path, lazy=True)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


# ----------------------------------------------------------------------------- writing


def _field(value: str, width: int) -> bytes:
    raw = value.encode("ascii", "replace")
    if len(raw) > width:
        raw = raw[:width]
    return raw.ljust(width, b" ")


def _number_field(x: float) -> str:
    """A number that fits the 8-character EDF header field."""
    if float(x).is_integer() and len(str(int(x))) <= 8:
        return str(int(x))
    for digits in range(7, 0, -1):
        s = f"{x:.{digits}f}".rstrip("0").rstrip(".")
        if len(s) <= 8:
            return s
    raise ValueError(f"{x!r} does not fit an EDF header field")


def _subfield(text: str) -> str:
    cleaned = "".join(c if 33 <= ord(c) <= 126 else "_" for c in text.strip())
    return cleaned or "X"


def _record_duration(fs: float, n_signals: int) -> tuple[float, int]:
    """(data-record duration in s, samples per record) for sample rate ``fs``."""
    candidates = (1.0, 0.5, 0.25, 0.2, 0.1, 0.05, 0.04, 0.02, 0.01)
    fits = []
    for d in candidates:
        spr = fs * d
        if abs(spr - round(spr)) < 1e-6 and round(spr) >= 1:
            fits.append((d, int(round(spr))))
    for d, spr in fits:
        if 2 * spr * n_signals + 400 <= _MAX_RECORD_BYTES:
            return d, spr
    if fits:
        return fits[-1]
    frac = Fraction(fs).limit_denominator(1000)
    if abs(float(frac) - fs) > 1e-9 * fs:
        raise ValueError(f"sample rate {fs!r} Hz cannot be represented in EDF")
    return float(frac.denominator), int(frac.numerator)


def _nice_range(peak: float) -> float:
    peak = max(peak, 1000.0)
    for exp in range(3, 8):
        for m in (1, 2, 5):
            v = m * 10.0**exp
            if v >= peak:
                return v
    return 1e8


def _onset_text(t: float) -> str:
    s = f"{t:+.7f}".rstrip("0")
    return s.rstrip(".") if s.endswith(".") else s


def _tal(onset: float, duration: float | None, text: str) -> bytes:
    clean = text.replace("\x00", " ").replace("\x14", " ").replace("\x15", " ")
    timing = _onset_text(onset)
    if duration is not None:
        timing += "\x15" + _onset_text(duration).lstrip("+")
    return (timing + "\x14" + clean + "\x14\x00").encode("utf-8")


def write_edf(
    path: str | Path,
    recording: Recording,
    *,
    physical_max_uV: float | None = None,
    chunk_s: float = 30.0,
) -> None:
    """Write ``recording`` as EDF+C, streamed in chunks of ``chunk_s`` seconds.

    The physical range is +-``physical_max_uV`` (default: the smallest of 1, 2, 5 x 10^k
    µV, at least 1 mV, that holds the largest sample), quantised to 16 bits; samples
    beyond it are clipped. The signal is padded with its last value to a whole number of
    data records. Memory use is bounded by the chunk, whatever the length.
    """
    path = Path(path)
    labels = [label for label in recording.signals]
    if not labels:
        raise RecordingError(f"{path}: a recording needs at least one signal")
    fs = float(recording.sample_rate_hz)
    if not (fs > 0 and math.isfinite(fs)):
        raise RecordingError(f"{path}: sample rate {fs!r} Hz is not a positive number")
    lengths = {len(recording.signals[label]) for label in labels}
    if len(lengths) != 1:
        raise RecordingError(f"{path}: signals have different lengths {sorted(lengths)}")
    n = lengths.pop()
    if n == 0:
        raise RecordingError(f"{path}: the signals are empty")
    try:
        d, spr = _record_duration(fs, len(labels))
    except ValueError as exc:
        raise RecordingError(f"{path}: {exc}") from None
    n_records = -(-n // spr)
    rec_chunk = max(1, int(chunk_s / d))

    if physical_max_uV is None:
        peak = 0.0
        for label in labels:
            sig = recording.signals[label]
            for a in range(0, n, rec_chunk * spr):
                block = np.asarray(sig[a : min(n, a + rec_chunk * spr)], dtype=np.float64)
                finite = block[np.isfinite(block)]
                if finite.size:
                    peak = max(peak, float(np.max(np.abs(finite))))
        pmax = _nice_range(peak)
    else:
        pmax = float(physical_max_uV)
    pmin = -pmax
    gain = (pmax - pmin) / (_DIGITAL_MAX - _DIGITAL_MIN)

    # annotations, assigned to the data record their onset falls in
    entries: list[tuple[float, float | None, str]] = [(s.t_s, None, stim_text(s)) for s in recording.stimuli]
    for a in recording.annotations:  # Annotation, or a plain (onset_s, duration_s, text)
        onset, duration, text = (a.onset_s, a.duration_s, a.text) if isinstance(a, Annotation) else a
        entries.append((float(onset), None if duration is None else float(duration), str(text)))
    per_record: list[list[bytes]] = [[] for _ in range(n_records)]
    for onset, duration, text in sorted(entries, key=lambda e: e[0]):
        if not math.isfinite(onset) or onset < 0:
            raise RecordingError(f"{path}: annotation {text!r} has onset {onset!r} s before the start")
        i = min(n_records - 1, int(onset // d))
        per_record[i].append(_tal(onset, duration, text))
    ann_bytes = []
    for i in range(n_records):
        start = _number_field(i * d) if float(i * d).is_integer() else _onset_text(i * d).lstrip("+")
        ann_bytes.append(b"".join([f"+{start}\x14\x14\x00".encode("ascii"), *per_record[i]]))
    ann_len = max(len(b) for b in ann_bytes)
    ann_spr = max(30, -(-ann_len // 2))  # 2-byte samples, a little room

    ns = len(labels) + 1
    start_dt = recording.start
    header = b"".join(
        [
            _field("0", 8),
            _field(f"{_subfield(recording.patient_code)} X X X", 80),
            _field(
                f"Startdate {start_dt.day:02d}-{_MONTHS[start_dt.month - 1]}-{start_dt.year:04d} X X LNM", 80
            ),
            _field(f"{start_dt.day:02d}.{start_dt.month:02d}.{start_dt.year % 100:02d}", 8),
            _field(f"{start_dt.hour:02d}.{start_dt.minute:02d}.{start_dt.second:02d}", 8),
            _field(str(256 * (ns + 1)), 8),
            _field("EDF+C", 44),
            _field(str(n_records), 8),
            _field(_number_field(d), 8),
            _field(str(ns), 4),
        ]
    )
    sig_fields: list[list[str]] = [
        [*labels, "EDF Annotations"],
        ["tube surface electrodes"] * len(labels) + [""],
        ["uV"] * len(labels) + [""],
        [_number_field(pmin)] * len(labels) + ["-1"],
        [_number_field(pmax)] * len(labels) + ["1"],
        [str(_DIGITAL_MIN)] * ns,
        [str(_DIGITAL_MAX)] * ns,
        [""] * ns,
        [str(spr)] * len(labels) + [str(ann_spr)],
        [""] * ns,
    ]
    widths = (16, 80, 8, 8, 8, 8, 8, 80, 8, 32)
    for values, width in zip(sig_fields, widths):
        header += b"".join(_field(v, width) for v in values)

    rec_len = spr * len(labels) + ann_spr
    try:
        with open(path, "wb") as f:
            f.write(header)
            for r0 in range(0, n_records, rec_chunk):
                r1 = min(n_records, r0 + rec_chunk)
                block = np.zeros((r1 - r0, rec_len), dtype="<i2")
                a, b = r0 * spr, min(n, r1 * spr)
                for j, label in enumerate(labels):
                    x = np.asarray(recording.signals[label][a:b], dtype=np.float64)
                    if len(x) < (r1 - r0) * spr:
                        last = x[-1] if len(x) else 0.0
                        x = np.concatenate([x, np.full((r1 - r0) * spr - len(x), last)])
                    x = np.nan_to_num(x, nan=0.0, posinf=pmax, neginf=pmin)
                    dig = np.clip(np.round((x - pmin) / gain + _DIGITAL_MIN), _DIGITAL_MIN, _DIGITAL_MAX)
                    block[:, j * spr : (j + 1) * spr] = dig.reshape(r1 - r0, spr)
                ann = np.zeros((r1 - r0, ann_spr * 2), dtype=np.uint8)
                for k in range(r0, r1):
                    raw = ann_bytes[k]
                    ann[k - r0, : len(raw)] = np.frombuffer(raw, dtype=np.uint8)
                block[:, len(labels) * spr :] = ann.view("<i2")
                f.write(block.tobytes())
    except OSError as exc:
        raise RecordingError(f"{path}: cannot be written ({exc.strerror or exc})") from None


def recording_from_arrays(
    sample_rate_hz: float,
    signals: dict[str, np.ndarray],
    stimuli: Sequence[Stimulus] = (),
    *,
    start: _dt.datetime | None = None,
    patient_code: str = "X",
    annotations: Iterable[Annotation] = (),
) -> Recording:
    """Convenience constructor; stimuli are re-indexed in time order."""
    ordered = sorted(stimuli, key=lambda s: s.t_s)
    stims = [
        Stimulus(i, s.t_s, s.site, s.side, s.source, s.set_mA, s.delivered_mA, s.pw_us, s.step)
        for i, s in enumerate(ordered)
    ]
    return Recording(
        sample_rate_hz=float(sample_rate_hz),
        signals=dict(signals),
        stimuli=stims,
        start=start or _dt.datetime(2000, 1, 1),
        patient_code=patient_code,
        annotations=list(annotations),
    )

