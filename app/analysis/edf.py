"""EDF+ recordings as ``shared/specs/recording-exchange.md`` and ``docs/recording-format.md`` define them.

Owns: ``Recording`` (EMG signals in µV, stimuli, operator context, other annotations,
start, patient code), ``read_edf``/``open_edf`` (via the ``edfio`` library, lazily
memory-mapped), ``write_edf`` (streamed), ``stim_text``/``parse_stim`` for STIM
annotations, the operator-context annotations of conventions version 2 (``Context``,
``context_text``, ``parse_context``), and ``RecordingError``.
May import: numpy, edfio, ``app.model``, ``app.format``.

Reading uses edfio, which memory-maps the data records, so a two-hour recording is not
loaded whole: ``read_edf(path, lazy=True)`` gives signals that read only the samples
sliced from them. Before edfio sees a file, its header is checked against the file: a
record duration that is not a positive number, a header size or signal count that does
not add up, and a file shorter (truncated) or longer than the data records its header
announces are refused with one line naming the file and the problem. Writing is done
here, record by record in bounded chunks, because edfio's writer assembles the whole file
in memory (hours of 20 kHz EMG would need gigabytes); every file written is read back by
edfio and by pyEDFlib in the tests.

File layout written: EDF+C, one signal per EMG channel (label ``EMG L``/``EMG R``,
dimension ``uV``, 16-bit), then ``EDF Annotations`` holding the time-keeping annotation of
each data record and the annotations whose onset falls in it, onsets to 0.1 µs. Data
records last 1 s or less (at most 61,440 bytes where the sample rate allows, as EDF
recommends). The start time is kept to the second.

Physical range: fixed, never chosen from the data (one cautery burst must not coarsen a
whole case): ``PHYSICAL_MIN_UV`` .. ``PHYSICAL_MAX_UV`` (-32768 .. 32767 µV), 1 µV per
digital step, so digital value = µV. It is the part of the amplifier's input range
(+-104.9 mV at gain 1, ``firmware_bridge/sim/board.py``) that 16 bits can hold at 1 µV
per bit; evoked responses, irritation and stimulus artifacts after the blank stay far
inside it. Samples beyond it are clipped, and every clipped stretch of a channel is a
``CLIP`` annotation (onset, duration, the largest magnitude) instead of a rescaled file.

Conventions version 2 (``docs/recording-format.md``): a file that holds the annotation
``RECORDING-EXCHANGE 2`` carries the operator context as annotations (steps, laryngoscopy,
troubleshooting answers and verdicts, mapping points, re-baselines, captured baselines,
setting changes, electrocautery stretches, ...); ``read_edf`` parses them into
``Recording.context`` and refuses a malformed one with the file and the annotation.
Files without that annotation are version 1: their other annotations are kept, not
interpreted.

Every error is a ``RecordingError`` whose one-line message names the file and the problem.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import math
import warnings
from dataclasses import dataclass, field
from enum import Enum
from fractions import Fraction
from pathlib import Path
from collections.abc import Iterable, Sequence
from typing import Any, Protocol, TypeVar

import numpy as np

from app import format as F
from app.model import Side, Site, Source, Step, Stimulus

EMG_LABELS = ("EMG L", "EMG R")
MIN_RATE_HZ = 5000.0
STIM_REQUIRED = ("site", "side", "source", "set_mA")
_DIGITAL_MIN = -32768
_DIGITAL_MAX = 32767
_MAX_RECORD_BYTES = 61440
# the fixed physical range: 1 µV per digital step (docs/recording-format.md, "Resolution")
PHYSICAL_MIN_UV = -32768.0
PHYSICAL_MAX_UV = 32767.0
CLIP_MERGE_S = 0.020  # clipped samples closer than this form one CLIP stretch
_UNIT_SCALE = {"uV": 1.0, "µV": 1.0, "mV": 1000.0, "V": 1e6, "nV": 1e-3}
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_E = TypeVar("_E", bound=Enum)  # the enums of a STIM annotation's fields


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
    context: list[Context] = field(default_factory=list)  # conventions version 2 only
    conventions: int = 1  # 2 when the file holds ``CONVENTIONS_MARK``
    # steps recorded afterwards with the step button, by position in ``stimuli`` (their STIM
    # annotation says ``step=X by=button``; the stimulus itself was delivered untagged)
    recorded_steps: dict[int, Step] = field(default_factory=dict)

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
        digital: np.ndarray = self._signal.get_digital_slice(start / self._fs, stop / self._fs)
        return digital.astype(np.float64) * self.gain + self.offset

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        data = self[0 : self._n]
        return data if dtype is None else data.astype(dtype)


# ----------------------------------------------------------------------------- STIM text


def _num(x: float) -> str:
    return F.exact_ma_text(x)  # the stimulator's 1 µA, rounded as everywhere (app.format)


def stim_text(s: Stimulus, recorded_step: Step | None = None) -> str:
    """The STIM annotation text of a stimulus (recording-exchange.md). ``recorded_step``:
    the step the step button recorded it as afterwards (``step=X by=button``)."""
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
    elif recorded_step is not None:
        parts.append(f"step={Step(recorded_step).value} by=button")
    return " ".join(parts)


def is_stim(text: str) -> bool:
    """Whether an annotation text is a STIM annotation."""
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

    def enum(cls: type[_E], key: str) -> _E:
        try:
            return cls(fields[key])
        except ValueError:
            allowed = ", ".join(m.value for m in cls)
            raise ValueError(f"{where}: unknown {key} {fields[key]!r} (allowed: {allowed})") from None

    def number(key: str) -> float:
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


# ----------------------------------------------------------------------------- operator context

CONVENTIONS_MARK = "RECORDING-EXCHANGE 2"
LARYNGOSCOPY_STEPS = ("L1", "L2")
TS_CHECKS = ("current_delivered", "leads_ok", "field_dry", "laryngeal_twitch", "contralateral_vagus",
             "tube_position_ok", "secretions_ok", "nmb_ok", "nonrecurrent")
VERDICTS = ("true_los", "not_true_los")
FINDINGS = ("normal", "paresis", "palsy", "not_examined")
STAGING_DECISIONS = ("postpone_second_side", "proceed_second_side")
# keyword -> what it records (docs/recording-format.md, "Operator context")
CONTEXT_KEYWORDS: dict[str, str] = {
    "STEP": "an INMSG step documented by a stimulus (or L1/L2 laryngoscopy), or a step cleared",
    "TS": "a loss-of-signal troubleshooting answer or the surgeon's verdict",
    "MAP": "a nerve mapping point (or the mapping of a side cleared)",
    "LOS": "the loss-of-signal type found by mapping",
    "PLAN": "the planned sides in operating order",
    "REBASELINE": "a new continuous (APS) baseline requested",
    "CAPTURE": "a probe response captured as the baseline of its site",
    "SET": "settings changed",
    "CAUTERY": "the stretch during which the monitor detected electrocautery",
    "CLIP": "samples of a channel beyond the physical range (clipped)",
    "PROBE": "what the probe was placed on",
    "OUTPUT": "a stimulator output set, switched or moved",
    "STAGING": "the staging recommendation, or the surgeon's decision",
}


@dataclass(frozen=True)
class Context:
    """One operator-context annotation (conventions version 2).

    ``args`` are the bare tokens after the keyword, ``fields`` the ``key=value`` tokens,
    ``text`` the free text after ``text=`` (to the end). ``order`` (key ``s``) is the
    number of the file's stimuli (STIM annotations in time order) the monitor had measured
    when it applied this; ``None`` when the writer did not say.
    """

    onset_s: float
    duration_s: float | None
    keyword: str
    args: tuple[str, ...] = ()
    fields: dict[str, str] = field(default_factory=dict)
    text: str = ""
    raw: str = ""

    @property
    def order(self) -> int | None:
        v = self.fields.get("s")
        return None if v is None else int(v)

    def get(self, key: str, default: Any = None) -> Any:
        return self.fields.get(key, default)


def _token(value: Any) -> str:
    text = str(value)
    return "_".join(text.split()) or "-"


def context_text(keyword: str, *args: Any, text: str | None = None, **fields: Any) -> str:
    """The annotation text of a context item: ``KEYWORD arg ... key=value ... [text=free text]``.
    Fields whose value is None are left out; numbers should come formatted (``app.format``)."""
    parts = [keyword, *(_token(a) for a in args)]
    parts += [f"{k}={_token(v)}" for k, v in fields.items() if v is not None]
    if text:
        parts.append("text=" + " ".join(str(text).split()))
    return " ".join(parts)


def is_context(text: str) -> bool:
    """Whether an annotation text starts with an operator-context keyword."""
    head = text.split(None, 1)
    return bool(head) and head[0] in CONTEXT_KEYWORDS


def parse_context(text: str, onset_s: float, duration_s: float | None = None) -> Context:
    """Parse a context annotation; ``ValueError`` says what is wrong (without the file)."""
    where = f"annotation at {onset_s:.4f} s ({text.strip()!r})"
    body, sep, free = text.partition(" text=")
    if not sep and body.startswith("text="):
        body, free = "", body[5:]
    tokens = body.split()
    if not tokens or tokens[0] not in CONTEXT_KEYWORDS:
        raise ValueError(f"{where}: not an operator-context annotation")
    keyword = tokens[0]
    args: list[str] = []
    fields: dict[str, str] = {}
    for tok in tokens[1:]:
        key, eq, value = tok.partition("=")
        if not eq:
            if fields:
                raise ValueError(f"{where}: field {tok!r} has no '='")
            args.append(tok)
            continue
        if not key:
            raise ValueError(f"{where}: field {tok!r} has no name")
        if key in fields:
            raise ValueError(f"{where}: key {key!r} given twice")
        fields[key] = value
    ctx = Context(float(onset_s), duration_s, keyword, tuple(args), fields, free.strip(), text)
    _check_context(ctx, where)
    return ctx


def _need(cond: bool, where: str, problem: str) -> None:
    if not cond:
        raise ValueError(f"{where}: {problem}")


def _arg(ctx: Context, i: int, allowed: Sequence[str], name: str, where: str) -> str:
    _need(len(ctx.args) > i, where, f"{ctx.keyword} needs the {name} ({', '.join(allowed)})")
    _need(ctx.args[i] in allowed, where, f"unknown {name} {ctx.args[i]!r} (allowed: {', '.join(allowed)})")
    return ctx.args[i]


def _nonneg(ctx: Context, key: str, where: str, integer: bool = False) -> None:
    if key not in ctx.fields:
        return
    v = ctx.fields[key]
    try:
        x = int(v) if integer else float(v)
    except ValueError:
        raise ValueError(f"{where}: {key}={v!r} is not {'an integer' if integer else 'a number'}") from None
    _need(math.isfinite(x) and x >= 0, where, f"{key}={v!r} is not a non-negative number")


def _yes_no(ctx: Context, key: str, where: str, required: bool = True) -> None:
    if key not in ctx.fields:
        _need(not required, where, f"missing required key {key!r}")
        return
    _need(ctx.fields[key] in ("yes", "no"), where, f"{key}={ctx.fields[key]!r} must be yes or no")


def _check_context(ctx: Context, where: str) -> None:  # noqa: C901 (one branch per keyword)
    _nonneg(ctx, "s", where, integer=True)
    sides = tuple(s.value for s in Side)
    k = ctx.keyword
    if k == "STEP":
        step = _arg(ctx, 0, tuple(s.value for s in Step) + LARYNGOSCOPY_STEPS, "step", where)
        _arg(ctx, 1, sides, "side", where)
        clear = len(ctx.args) > 2 and ctx.args[2] == "clear"
        _need(len(ctx.args) == 2 or (len(ctx.args) == 3 and clear), where, "STEP takes a step, a side and "
              "optionally 'clear'")
        if step in LARYNGOSCOPY_STEPS and not clear:
            _need(ctx.fields.get("finding") in FINDINGS, where,
                  f"laryngoscopy {step} needs finding= one of {', '.join(FINDINGS)}")
        _need(ctx.fields.get("by", "probe") in ("probe", "button"), where, "by= must be probe or button")
    elif k == "TS":
        _arg(ctx, 0, sides, "side", where)
        answers = [key for key in ctx.fields if key in TS_CHECKS or key == "verdict"]
        _need(len(answers) == 1, where, "TS needs exactly one check=answer (or verdict=...)")
        key = answers[0]
        allowed = VERDICTS if key == "verdict" else ("yes", "no")
        _need(ctx.fields[key] in allowed, where, f"{key}={ctx.fields[key]!r} must be one of {', '.join(allowed)}")
        _need(ctx.fields.get("by", "operator") in ("operator", "monitor"), where, "by= must be operator or monitor")
    elif k == "MAP":
        _arg(ctx, 0, sides, "side", where)
        if ctx.args[1:] != ("clear",):
            _need(len(ctx.args) == 1, where, "MAP takes a side (and optionally 'clear')")
            _need("pos_mm" in ctx.fields, where, "missing required key 'pos_mm'")
            _nonneg(ctx, "pos_mm", where)
            _yes_no(ctx, "resp", where)
            _nonneg(ctx, "uV", where)
    elif k == "PLAN":
        _need(1 <= len(ctx.args) <= 2 and len(set(ctx.args)) == len(ctx.args) and all(a in sides for a in ctx.args),
              where, "PLAN takes one side, or both in operating order (L R / R L)")
    elif k == "REBASELINE":
        _arg(ctx, 0, sides, "side", where)
    elif k == "CAPTURE":
        _arg(ctx, 0, (Site.VAGUS.value, Site.RLN.value), "site", where)
        _arg(ctx, 1, sides, "side", where)
        _nonneg(ctx, "i", where, integer=True)
    elif k == "SET":
        _need(any(key != "s" for key in ctx.fields), where, "SET needs at least one setting=value")
    elif k == "CAUTERY":
        _nonneg(ctx, "e", where, integer=True)
        _need(("s" in ctx.fields) == ("e" in ctx.fields), where, "CAUTERY needs both s= and e=, or neither")
        if "e" in ctx.fields:
            _need(int(ctx.fields["e"]) >= int(ctx.fields["s"]), where, "CAUTERY e= is before s=")
        else:
            _need(ctx.duration_s is not None and ctx.duration_s > 0, where, "CAUTERY needs a duration or s= and e=")
    elif k == "CLIP":
        _need(len(ctx.args) == 1, where, "CLIP takes the side of its channel")
    elif k == "STAGING":
        if "decision" in ctx.fields:
            _need(ctx.fields["decision"] in STAGING_DECISIONS, where,
                  f"decision={ctx.fields['decision']!r} must be one of {', '.join(STAGING_DECISIONS)}")
    elif k == "LOS":
        _arg(ctx, 0, sides, "side", where)
        _need(ctx.fields.get("type") in ("1", "2"), where, "LOS needs type=1 or type=2")


# ----------------------------------------------------------------------------- reading


def read_edf(path: str | Path, *, lazy: bool = False) -> Recording:
    """Read an EDF+ recording. ``lazy=True`` reads samples only when sliced."""
    path = Path(path)
    try:
        import edfio
    except ImportError as exc:  # pragma: no cover - edfio is a pinned dependency
        raise RecordingError(f"{path}: cannot read EDF+ ({exc})") from None
    _check_file(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            edf = edfio.read_edf(path, lazy_load_data=True)
            labels = list(edf.labels)
            raw_annotations = edf.annotations
    except OSError as exc:
        raise RecordingError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    except (ValueError, IndexError, UnicodeDecodeError, ArithmeticError, UnboundLocalError) as exc:
        raise RecordingError(f"{path}: not a valid EDF+ file ({_first_line(exc)})") from None
    fs, signals = _emg_signals(path, edf, labels, lazy)
    stimuli, context, others, conventions, recorded = _annotations(path, raw_annotations)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            start = edf.startdatetime
    except (ValueError, TypeError, ArithmeticError, edfio.AnonymizedDateError):
        start = _dt.datetime(1985, 1, 1)
    code = edf.local_patient_identification.split(" ")[0] or "X"  # EDF+: X for a subfield not known
    return Recording(
        sample_rate_hz=fs,
        signals=signals,
        stimuli=stimuli,
        start=start,
        patient_code=code,
        annotations=others,
        source=str(path),
        context=context,
        conventions=conventions,
        recorded_steps=recorded,
    )


def _check_file(path: Path) -> None:
    """The file exists, is EDF+C, and its header agrees with itself and with the file size."""
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
    _check_header(path, head)


def _emg_signals(path: Path, edf: Any, labels: list[str], lazy: bool) -> tuple[float, dict[str, Any]]:
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
    return fs, signals


def _annotations(path: Path, raw_annotations: Iterable[Any]
                 ) -> tuple[list[Stimulus], list[Context], list[Annotation], int, dict[int, Step]]:
    """STIM annotations as stimuli (in time order, indexed), the operator context (version 2
    files only) and the other annotations."""
    raw = list(raw_annotations)
    stims: list[tuple[float, str]] = []
    others: list[Annotation] = []
    context: list[Context] = []
    conventions = 2 if any(ann.text.strip() == CONVENTIONS_MARK for ann in raw) else 1
    for ann in raw:
        if is_stim(ann.text):
            stims.append((float(ann.onset), ann.text))
        elif conventions == 2 and is_context(ann.text):
            try:
                context.append(parse_context(ann.text, float(ann.onset), ann.duration))
            except ValueError as exc:
                raise RecordingError(f"{path}: {exc}") from None
        else:
            others.append(Annotation(float(ann.onset), ann.duration, ann.text))
    stims.sort(key=lambda t: t[0])
    context.sort(key=lambda c: c.onset_s)  # stable: annotations of one onset keep the file's order
    stimuli = []
    recorded: dict[int, Step] = {}
    for i, (onset, text) in enumerate(stims):
        try:
            stim = parse_stim(text, onset, i)
        except ValueError as exc:
            raise RecordingError(f"{path}: {exc}") from None
        if stim.step is not None and "by=button" in text.split():
            recorded[i] = stim.step  # recorded afterwards: the stimulus was delivered untagged
            stim = dataclasses.replace(stim, step=None)
        stimuli.append(stim)
    return stimuli, context, others, conventions, recorded


def _check_header(path: Path, head: bytes) -> None:
    """The header's own numbers, and the file size against the data records it announces."""

    def number(a: int, b: int, what: str, raw: bytes | None = None) -> float:
        text = (raw if raw is not None else head[a:b]).decode("ascii", "replace").strip()
        try:
            return float(text)
        except ValueError:
            raise RecordingError(f"{path}: header field '{what}' is {text!r}, not a number") from None

    ns = number(252, 256, "number of signals")
    if not ns.is_integer() or ns < 1:
        raise RecordingError(f"{path}: header says {ns:g} signals; at least 1 is needed")
    ns_i = int(ns)
    header_bytes = number(184, 192, "number of bytes in the header")
    if header_bytes != 256 * (ns_i + 1):
        raise RecordingError(f"{path}: header size {header_bytes:g} bytes does not match its {ns_i} signals "
                             f"({256 * (ns_i + 1)} bytes expected)")
    duration = number(244, 252, "duration of a data record")
    if not (math.isfinite(duration) and duration > 0):
        raise RecordingError(f"{path}: data record duration is {duration:g} s; a recording with signals needs "
                             "records longer than 0 s")
    n_records = number(236, 244, "number of data records")
    if not n_records.is_integer() or n_records < -1:
        raise RecordingError(f"{path}: header says {n_records:g} data records")
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            f.seek(256)
            sig = f.read(256 * ns_i)
    except OSError as exc:
        raise RecordingError(f"{path}: cannot be read ({exc.strerror})") from None
    if len(sig) < 256 * ns_i:
        raise RecordingError(f"{path}: truncated inside its header ({size} bytes, {256 * (ns_i + 1)} expected)")
    offset = 216 * ns_i  # "nr of samples in each data record", 8 characters per signal
    spr = [number(0, 0, "samples per data record", sig[offset + 8 * i: offset + 8 * i + 8]) for i in range(ns_i)]
    if any(not x.is_integer() or x < 1 for x in spr):
        raise RecordingError(f"{path}: a signal has {min(spr):g} samples per data record")
    _check_ranges(path, sig, ns_i)
    record_bytes = 2 * int(sum(spr))
    data = size - int(header_bytes)
    whole = data // record_bytes
    if n_records == -1:
        if data % record_bytes:
            raise RecordingError(f"{path}: truncated: the last data record is cut short "
                                 f"({data % record_bytes} of {record_bytes} bytes)")
        return
    expected = int(n_records) * record_bytes
    if data < expected:
        raise RecordingError(
            f"{path}: truncated: the header announces {int(n_records)} data records of {duration:g} s "
            f"({expected} bytes) but the file holds {max(data, 0)} bytes ({whole} whole records, "
            f"{100.0 * max(data, 0) / expected:.0f} %)")
    if data > expected:
        raise RecordingError(f"{path}: {data - expected} bytes after the {int(n_records)} data records its header "
                             "announces (not an intact EDF+ file)")


# the range fields of the signal header: (name, offset per signal count, whole number)
_RANGE_FIELDS = (("physical minimum", 104, False), ("physical maximum", 112, False),
                 ("digital minimum", 120, True), ("digital maximum", 128, True))


def _check_ranges(path: Path, sig: bytes, ns: int) -> None:
    """Every signal's physical and digital minimum and maximum are finite numbers (the digital
    ones whole): the EDF library would otherwise fail on them later without naming the file."""
    for what, start, whole in _RANGE_FIELDS:
        for i in range(ns):
            text = sig[start * ns + 8 * i: start * ns + 8 * i + 8].decode("ascii", "replace").strip()
            label = sig[16 * i: 16 * i + 16].decode("ascii", "replace").strip()
            try:
                value = float(text)
            except ValueError:
                value = math.nan
            if not math.isfinite(value) or (whole and not value.is_integer()):
                kind = "a whole number" if whole else "a number"
                raise RecordingError(f"{path}: header field '{what}' of signal {label!r} is {text!r}, not {kind}")


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


def _clipped_stretches(sig: Any, n: int, lo: float, hi: float, fs: float, step: int) -> list[tuple[int, int, float]]:
    """(first, end, largest magnitude) of the runs of samples outside [lo, hi], runs closer
    than ``CLIP_MERGE_S`` merged; read in chunks of ``step`` samples."""
    gap = max(1, int(round(CLIP_MERGE_S * fs)))
    runs: list[list[float]] = []
    for a in range(0, n, step):
        block = np.asarray(sig[a: min(n, a + step)], dtype=np.float64)
        out = np.flatnonzero(np.isfinite(block) & ((block > hi) | (block < lo)))
        if out.size == 0:
            continue
        idx = out + a
        cuts = np.flatnonzero(np.diff(idx) > gap)
        starts = np.concatenate(([0], cuts + 1))
        ends = np.concatenate((cuts, [len(idx) - 1]))
        for i, j in zip(starts, ends, strict=True):
            first, last = int(idx[i]), int(idx[j])
            peak = float(np.max(np.abs(block[out[i: j + 1]])))  # of the run's samples outside the range
            if runs and first - runs[-1][1] <= gap:
                runs[-1][1] = last
                runs[-1][2] = max(runs[-1][2], peak)
            else:
                runs.append([first, last, peak])
    return [(int(r[0]), int(r[1]) + 1, r[2]) for r in runs]


def clip_text(label: str, peak_uV: float) -> str:
    """The CLIP annotation of a channel's clipped stretch."""
    side = label[4:] if label in EMG_LABELS else _token(label)
    return f"CLIP {side} max_uV={F.amplitude_uV(peak_uV)}"


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

    The physical range is fixed: ``PHYSICAL_MIN_UV`` .. ``PHYSICAL_MAX_UV`` (1 µV per
    digital step), or +-``physical_max_uV`` when given; it never depends on the data.
    Samples beyond it are clipped and each clipped stretch of a channel becomes a ``CLIP``
    annotation. The signal is padded with its last value to a whole number of data
    records. Memory use is bounded by the chunk, whatever the length.
    """
    path = Path(path)
    labels, fs, n, d, spr = _geometry(path, recording)
    n_records = -(-n // spr)
    rec_chunk = max(1, int(chunk_s / d))
    if physical_max_uV is None:
        pmin, pmax = PHYSICAL_MIN_UV, PHYSICAL_MAX_UV
    else:
        if not (math.isfinite(physical_max_uV) and physical_max_uV > 0):
            raise RecordingError(f"{path}: physical range +-{physical_max_uV!r} uV is not a positive number")
        pmax = float(physical_max_uV)
        pmin = -pmax
        try:
            _number_field(pmin)
        except ValueError:
            raise RecordingError(f"{path}: physical range +-{physical_max_uV!r} uV does not fit the "
                                 "8-character EDF header field") from None
    clips: list[tuple[float, float, str]] = []
    for label in labels:
        for a, b, peak in _clipped_stretches(recording.signals[label], n, pmin, pmax, fs, rec_chunk * spr):
            clips.append((a / fs, (b - a) / fs, clip_text(label, peak)))
    ann_bytes = _annotation_records(path, recording, clips, n_records, d)
    ann_spr = max(30, -(-max(len(b) for b in ann_bytes) // 2))  # 2-byte samples, a little room
    header = _header(recording, labels, n_records, d, spr, ann_spr, pmin, pmax)
    gain = (pmax - pmin) / (_DIGITAL_MAX - _DIGITAL_MIN)
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


def _geometry(path: Path, recording: Recording) -> tuple[list[str], float, int, float, int]:
    """(labels, sample rate, samples, record duration, samples per record), checked."""
    labels = list(recording.signals)
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
    return labels, fs, n, d, spr


def _annotation_records(path: Path, recording: Recording, clips: list[tuple[float, float, str]], n_records: int,
                        d: float) -> list[bytes]:
    """The annotation bytes of every data record: its time-keeping TAL, then the
    annotations whose onset falls in it (stimuli, context, other annotations, clipping)."""
    entries: list[tuple[float, float | None, str]] = [
        (s.t_s, None, stim_text(s, recording.recorded_steps.get(i))) for i, s in enumerate(recording.stimuli)]
    ctx = [(c.onset_s, c.duration_s, c.raw or context_text(c.keyword, *c.args, text=c.text or None, **c.fields))
           for c in recording.context]
    if ctx and not any(str(a.text if isinstance(a, Annotation) else a[2]).strip() == CONVENTIONS_MARK
                       for a in recording.annotations):
        ctx.insert(0, (0.0, None, CONVENTIONS_MARK))
    items: list[Annotation | tuple[float, float | None, str]] = [*recording.annotations, *ctx, *clips]
    for a in items:  # Annotation, or a plain (onset_s, duration_s, text)
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
    return ann_bytes


def _header(recording: Recording, labels: list[str], n_records: int, d: float, spr: int, ann_spr: int,
            pmin: float, pmax: float) -> bytes:
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
    for values, width in zip(sig_fields, widths, strict=True):
        header += b"".join(_field(v, width) for v in values)
    return header


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

