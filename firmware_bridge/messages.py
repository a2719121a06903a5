"""The typed Board API: every message that crosses the host <-> board link.

Owns: the message dataclasses and the enums they use.
May import: the standard library, numpy and ``firmware_bridge.vocabulary`` (the channel labels).

These are the only things the rest of the product sees of the board. The byte layout of
each message is in ``PROTOCOL.md``; ``codec.py`` turns these objects into frames and back.
Units are in the field names: ``_uA`` microamperes, ``_us`` microseconds, ``_mHz``
millihertz, ``_ohm`` ohms, ``_nv`` nanovolts. Board timestamps are microseconds on the
board's own clock (``board_time_us``), wrapping never in practice (uint64).

EMG samples travel as signed 32-bit ADC counts, shape ``(channels, n)``, with the scale
``nv_per_count`` (nanovolts per count) carried in the same message; ``microvolts()``
gives float64 physical values. Channel 0 is the left vocal-fold pair (``EMG L``),
channel 1 the right (``EMG R``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np

from firmware_bridge.vocabulary import CHANNEL_LABELS as CHANNEL_LABELS  # channel 0, 1 (re-exported)

PROTOCOL_VERSION = 1
# Revision 1.1 (backward compatible, same version field): the stimulation configuration
# token. A board that speaks it sets ``Capabilities.config_token``; a host sends a token
# only to such a board, and the board echoes it in every StimEpoch of that configuration.
PROTOCOL_REVISION = "1.1"
CONFIG_TOKEN_MAX = (1 << 32) - 1



class Output(enum.IntEnum):
    """Stimulator outputs of the board."""

    PROBE = 0  # hand-held probe
    APS = 1  # continuous vagal electrode


# the outputs in the nurse's words (link and flow messages)
OUTPUT_WORDS = {Output.PROBE: "the probe", Output.APS: "the vagal electrode"}


class StimMode(enum.IntEnum):
    """What a Stimulate command does on its output."""

    STOP = 0  # stop stimulating on this output
    SINGLE = 1  # one pulse now
    CONTINUOUS = 2  # pulses at rate_mHz until STOP


class Electrode(enum.IntEnum):
    """Electrodes whose impedance the board measures."""

    L_POS = 0
    L_NEG = 1
    R_POS = 2
    R_NEG = 3
    GROUND = 4
    STIM_RETURN = 5


class Fault(enum.IntFlag):
    """Board fault and condition flags (BoardStatus.faults)."""

    NONE = 0
    LEAD_OFF = 1 << 0  # an EMG electrode disconnected
    COMPLIANCE_LIMIT = 1 << 1  # the stimulator could not reach the set current
    ADC_SATURATION = 1 << 2
    OVER_CURRENT = 1 << 3  # hardware over-current trip; stimulation stopped
    WATCHDOG = 1 << 4  # the board's watchdog reset it since the last status
    HOST_SILENT = 1 << 5  # host heartbeat missing > 500 ms: stimulation stopped
    BACKUP_BEEPER = 1 << 6  # host silent > 2 s: the board's own beeper is sounding
    INTERNAL = 1 << 7  # any other board self-test failure


class NackReason(enum.IntEnum):
    """Why the board refused a host frame (PROTOCOL.md section 8)."""

    UNKNOWN_MESSAGE = 1
    MALFORMED = 2
    OUT_OF_RANGE = 3
    BAD_STATE = 4
    UNSUPPORTED_VERSION = 5
    BUSY = 6


# ----------------------------------------------------------------------------- host -> board


@dataclass(frozen=True)
class Hello:
    """Host opens a session; the board answers with Capabilities."""

    protocol_version: int = PROTOCOL_VERSION
    host_name: str = "lnm"


@dataclass(frozen=True)
class ConfigureAcquisition:
    """Start (or change) acquisition: sample rate, channels, the free-running stream and
    the stimulus epoch window (PROTOCOL.md section 7, 0x02)."""

    sample_rate_hz: int = 20000
    channel_mask: int = 0b11  # bit 0 = EMG L, bit 1 = EMG R
    gain: int = 1
    stream_enabled: bool = True  # free-running EmgBlock messages
    stream_block_samples: int = 400  # samples per channel in each EmgBlock (stream rate)
    stream_decimation: int = 1  # free-running stream rate = sample_rate_hz / stream_decimation
    epoch_pre_ms: int = 10  # samples before the stimulus in a StimEpoch
    epoch_post_ms: int = 50  # samples after it


@dataclass(frozen=True)
class Stimulate:
    """Start, change or stop stimulation on one output (PROTOCOL.md section 7, 0x03).

    ``config_token`` (protocol 1.1, u32): a number the host chooses for this
    configuration; the board echoes it in every StimEpoch delivered with it, so that each
    stimulus can be attributed to what the host had selected when the board delivered it.
    ``None``: the 1.0 form without a token (the only form a 1.0 board accepts).
    """

    output: Output
    mode: StimMode
    current_uA: int = 1000
    pulse_width_us: int = 100
    rate_mHz: int = 4000  # CONTINUOUS only
    config_token: int | None = None


@dataclass(frozen=True)
class ImpedanceRequest:
    """Measure the electrode impedances; answered by an ImpedanceResult."""


@dataclass(frozen=True)
class HostHeartbeat:
    """The host's "all well". Missing 500 ms: board stops stimulation; 2 s: backup beeper."""

    counter: int = 0
    alarm_active: bool = False  # host has an alarm sounding (informational)


@dataclass(frozen=True)
class SimControl:
    """Virtual-board extension (type range 0x70-0x7F); real boards nack it.

    ``command`` and ``args_json`` are free text, interpreted by the virtual board only.
    """

    command: str
    args_json: str = "{}"


# ----------------------------------------------------------------------------- board -> host


@dataclass(frozen=True)
class Capabilities:
    """What the board is and accepts (answer to Hello). ``config_token``: the board speaks
    protocol revision 1.1 (Capabilities flag bit 1): it accepts Stimulate with a
    configuration token and echoes it in StimEpoch."""

    protocol_version: int
    firmware_version: str
    board_id: str
    channels: int = 2
    sample_rates_hz: tuple[int, ...] = (10000, 20000)
    max_current_uA: int = 10000
    min_pulse_width_us: int = 50
    max_pulse_width_us: int = 250
    min_rate_mHz: int = 500
    max_rate_mHz: int = 30000
    outputs: tuple[Output, ...] = (Output.PROBE, Output.APS)
    simulated: bool = False
    config_token: bool = False


@dataclass(frozen=True, eq=False)
class StimEpoch:
    """One delivered stimulus and the EMG around it.

    ``samples`` has shape (channels, pre + post samples); sample ``pre_samples`` is the
    stimulus onset. ``delivered_current_uA`` is -1 when the board did not measure it.
    ``config_token`` (protocol 1.1): the token of the Stimulate whose configuration the
    pulse was delivered with; ``None`` when that configuration carried none (1.0 form).
    """

    board_time_us: int  # stimulus onset
    stim_counter: int
    output: Output
    set_current_uA: int
    delivered_current_uA: int
    pulse_width_us: int
    sample_rate_hz: int
    pre_samples: int
    nv_per_count: int
    samples: np.ndarray = field(repr=False)
    config_token: int | None = None

    def microvolts(self) -> np.ndarray:
        return _microvolts(self.samples, self.nv_per_count)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StimEpoch):
            return NotImplemented
        return _fields_equal(self, other)


@dataclass(frozen=True, eq=False)
class EmgBlock:
    """Free-running EMG: consecutive blocks; ``first_sample`` counts from acquisition start."""

    board_time_us: int  # time of the first sample
    first_sample: int
    sample_rate_hz: int
    nv_per_count: int
    samples: np.ndarray = field(repr=False)

    def microvolts(self) -> np.ndarray:
        return _microvolts(self.samples, self.nv_per_count)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, EmgBlock):
            return NotImplemented
        return _fields_equal(self, other)


@dataclass(frozen=True)
class ImpedanceResult:
    """Electrode impedances, one per electrode (-1 ohm: not measurable)."""

    board_time_us: int
    impedances_ohm: tuple[tuple[Electrode, int], ...]  # -1 ohm: not measurable (lead off)

    def as_dict(self) -> dict[Electrode, int]:
        return dict(self.impedances_ohm)


@dataclass(frozen=True)
class BoardStatus:
    """Faults, running outputs and the host watchdog, every second and on any change."""

    board_time_us: int
    faults: Fault
    stimulating: tuple[Output, ...] = ()
    host_heartbeat_age_ms: int = 0
    uptime_s: int = 0


@dataclass(frozen=True)
class BoardHeartbeat:
    """The board's "all well", every 100 ms."""

    board_time_us: int
    counter: int = 0


@dataclass(frozen=True)
class Ack:
    """The host frame numbered ``seq`` was accepted and has taken effect."""

    seq: int  # sequence number of the acknowledged host frame


@dataclass(frozen=True)
class Nack:
    """The host frame numbered ``seq`` was refused (no effect at all)."""

    seq: int
    reason: NackReason
    detail: str = ""


HostMessage = Hello | ConfigureAcquisition | Stimulate | ImpedanceRequest | HostHeartbeat | SimControl
BoardMessage = (
    Capabilities | StimEpoch | EmgBlock | ImpedanceResult | BoardStatus | BoardHeartbeat | Ack | Nack
)


def _microvolts(samples: np.ndarray, nv_per_count: int) -> np.ndarray:
    """ADC counts as microvolts (float64, a new array: scaled in place after the cast)."""
    out = samples.astype(np.float64)
    out *= nv_per_count / 1000.0
    return out


def _fields_equal(a: object, b: object) -> bool:
    for name in a.__dataclass_fields__:  # type: ignore[attr-defined]
        x, y = getattr(a, name), getattr(b, name)
        if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
            if not np.array_equal(np.asarray(x), np.asarray(y)):
                return False
        elif x != y:
            return False
    return True
