"""Validation of every decoded board frame, before anything above the link sees it.

Owns: ``FrameValidator`` (the rules of PROTOCOL.md section 12, stateful per stream),
``Verdict``, ``HostSupport`` (what this host accepts of a board) with
``check_capabilities``, and the limits the rules use.
May import: the standard library, ``firmware_bridge.messages`` and ``firmware_bridge.codec``.

Pure: no I/O, threads or clock of its own; the caller passes the host time ``now`` (s) of
each frame's arrival. Not thread-safe: the link serialises access.

A frame that passed its CRCs can still be wrong: a replayed or duplicated frame, a
sample rate the board does not have, samples that do not fit the acquisition window, a
current beyond the hardware maximum, a board time that jumps by centuries. ``check``
returns a ``Verdict`` per frame: accepted, or dropped with a category (``invalid``,
``duplicate``, ``replayed``, ``refused``) and a reason in plain words. Nothing here
raises on board input.

What the validator knows of the host side comes from ``sent(seq, message)``, called for
every host frame before it goes out: the Hello that Capabilities answer, the
ConfigureAcquisition whose Ack puts an acquisition configuration in force (frames after
that Ack are checked against it), the Stimulate whose Ack puts a configuration token in
force, the ImpedanceRequest that an ImpedanceResult answers.

Board sessions: ``reset()`` starts a new connection (nothing known of the board's
numbering or clock). Within a connection, a frame numbered 0 after others is held back
until the next frame shows whether the board restarted (the numbering and the board
time go on from the 0's: its clock, counters and streams restart; ``take_notices``
reports ``board_restarted``) or whether it was a stray old frame (counted as replayed).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from firmware_bridge.codec import SEQ_MODULO, Frame
from firmware_bridge.messages import (
    OUTPUT_WORDS,
    PROTOCOL_VERSION,
    Ack,
    BoardHeartbeat,
    BoardStatus,
    Capabilities,
    ConfigureAcquisition,
    EmgBlock,
    Hello,
    ImpedanceRequest,
    ImpedanceResult,
    Nack,
    NackReason,
    Output,
    StimEpoch,
    StimMode,
    Stimulate,
)

# ----------------------------------------------------------------------------- limits (PROTOCOL.md section 12)

MAX_BOARD_TIME_US = 1 << 48  # about 8.9 years of uptime; beyond it a board time is not believed
TIME_LEAD_S = 2.0  # board time may run ahead of host time by this much between two frames ...
TIME_RATE_TOLERANCE = 0.05  # ... plus 5 % of the host time that passed
TIME_LAG_S = 2.0  # data may be older than the board's clock by this, plus one EMG block and one epoch window
EMG_TIME_TOLERANCE = 0.01  # EmgBlock board time vs its sample index: 1 % of the step ...
EMG_TIME_SLACK_US = 2000  # ... plus 2 ms
STATUS_UPTIME_TOLERANCE_S = 2  # BoardStatus.uptime_s vs board_time_us
MAX_NV_PER_COUNT = 1_000_000  # 1 mV per ADC count; 0 is never valid
MAX_STREAM_BLOCK = 4096  # samples per channel in an EmgBlock (ConfigureAcquisition range)
MAX_DECIMATION = 100
MAX_EPOCH_MS = 300  # epoch_pre_ms (100) + epoch_post_ms (200)
DELIVERED_OVERSHOOT = 1.10  # a measured current may exceed the maximum by 10 % + 100 uA
DELIVERED_OVERSHOOT_UA = 100
MAX_IMPEDANCE_OHM = 100_000_000
SEQ_HALF = SEQ_MODULO // 2
RESTART_WINDOW = 64  # a restarted board's next frame is numbered 1..64
STRAY_WINDOW = 64  # after a frame that jumped ahead, the stream may go on from before it within this
TOKENS_KEPT = 16  # configuration tokens remembered per output (epochs in flight use older ones)
PENDING_KEPT = 1024  # unanswered host frames remembered

CATEGORIES = ("invalid", "duplicate", "replayed", "refused")

# reason key -> what it means, in plain words (the key counts in the link's health)
REASONS: dict[str, str] = {
    "sample_rate": "a sample rate the board does not have or was not configured for",
    "sample_count": "a number of samples that does not fit the sample rate and window",
    "channels": "a number of EMG channels that does not fit the configuration",
    "scale": "an implausible ADC scale",
    "current": "a current beyond the hardware maximum",
    "pulse_width": "a pulse width outside the board's range",
    "output": "an output the board does not have",
    "board_time": "an implausible board time",
    "time_backwards": "a board time that went backwards",
    "pulse_overlap": "a stimulus during the previous one of the same output",
    "back_dated": "back-dated data (older than the board's clock allows)",
    "token": "a stimulation configuration token the host never gave",
    "status": "an inconsistent status",
    "impedance": "an implausible impedance",
    "unsolicited": "an answer to a command that was never sent",
    "malformed": "a frame whose contents do not parse",
    "unknown_type": "a frame of an unknown type",
    "bad_version": "a frame of another frame version",
}

MESSAGE_WORDS = {
    StimEpoch: "stimulus epoch",
    EmgBlock: "EMG block",
    BoardHeartbeat: "heartbeat",
    BoardStatus: "status",
    ImpedanceResult: "impedance result",
    Capabilities: "capabilities",
    Ack: "acknowledgement",
    Nack: "refusal",
}


@dataclass(frozen=True)
class HostSupport:
    """What this host needs of a board (checked against its Capabilities).

    The engine records two EMG channels (left and right vocal fold), stimulates with the
    probe (the continuous vagal electrode is optional), analyses at 5-50 kHz, and sets
    currents of 0.1-10 mA, pulse widths of 50-250 us and rates of 0.5-30 Hz.
    """

    protocol_version: int = PROTOCOL_VERSION
    channels: int = 2
    sample_rate_hz: tuple[int, int] = (5000, 50000)
    required_outputs: tuple[Output, ...] = (Output.PROBE,)
    max_current_uA: tuple[int, int] = (1000, 30000)
    pulse_width_us: tuple[int, int] = (50, 250)
    rate_mHz: tuple[int, int] = (500, 30000)


HOST_SUPPORT = HostSupport()


def check_capabilities(caps: Capabilities, support: HostSupport = HOST_SUPPORT) -> list[str]:
    """What in ``caps`` this host does not support, each naming the board's claim and
    what is supported (empty: the board is accepted)."""
    problems: list[str] = []
    if caps.protocol_version != support.protocol_version:
        problems.append(f"protocol version {caps.protocol_version} (this monitor speaks version "
                        f"{support.protocol_version})")
    if caps.channels != support.channels:
        problems.append(f"{caps.channels} EMG channels (this monitor needs {support.channels}: left and right)")
    lo, hi = support.sample_rate_hz
    bad_rates = [r for r in caps.sample_rates_hz if not 1 <= r <= 1_000_000]
    if bad_rates:
        problems.append(f"sample rates {', '.join(map(str, bad_rates))} Hz (not a sample rate)")
    if not any(lo <= r <= hi for r in caps.sample_rates_hz):
        rates = ", ".join(map(str, caps.sample_rates_hz)) or "none"
        problems.append(f"sample rates {rates} Hz (this monitor needs one within {lo}-{hi} Hz)")
    missing = [o for o in support.required_outputs if o not in caps.outputs]
    if missing:
        problems.append("no " + " and no ".join(OUTPUT_WORDS[o] for o in missing) + " output "
                        f"(outputs: {', '.join(o.name for o in caps.outputs) or 'none'})")
    if len(set(caps.outputs)) != len(caps.outputs):
        problems.append(f"outputs listed twice ({', '.join(o.name for o in caps.outputs)})")
    lo, hi = support.max_current_uA
    if not lo <= caps.max_current_uA <= hi:
        problems.append(f"maximum current {caps.max_current_uA} uA (supported: {lo}-{hi} uA)")
    lo, hi = support.pulse_width_us
    if not (1 <= caps.min_pulse_width_us <= caps.max_pulse_width_us) or caps.max_pulse_width_us < lo \
            or caps.min_pulse_width_us > hi:
        problems.append(f"pulse widths {caps.min_pulse_width_us}-{caps.max_pulse_width_us} us "
                        f"(this monitor needs a range within {lo}-{hi} us)")
    lo, hi = support.rate_mHz
    if not (1 <= caps.min_rate_mHz <= caps.max_rate_mHz) or caps.max_rate_mHz < lo or caps.min_rate_mHz > hi:
        problems.append(f"stimulation rates {caps.min_rate_mHz}-{caps.max_rate_mHz} mHz "
                        f"(this monitor needs a range within {lo}-{hi} mHz)")
    return problems


def supported_text(support: HostSupport = HOST_SUPPORT) -> str:
    """What this host supports, in one line (for refusal messages)."""
    return (f"protocol version {support.protocol_version}, {support.channels} EMG channels, a sample rate within "
            f"{support.sample_rate_hz[0]}-{support.sample_rate_hz[1]} Hz, a probe output, a maximum current of "
            f"{support.max_current_uA[0]}-{support.max_current_uA[1]} uA")


# ----------------------------------------------------------------------------- verdicts


@dataclass(frozen=True)
class Verdict:
    """What became of one decoded board frame.

    ``accepted``: pass it on. Otherwise ``category`` (``invalid``, ``duplicate``,
    ``replayed``, ``refused``), ``reason`` (a key of ``REASONS`` for invalid frames) and
    ``detail`` naming the field, its value and what is allowed.
    """

    seq: int
    message: object
    accepted: bool
    category: str = "ok"
    reason: str = ""
    detail: str = ""

    @property
    def what(self) -> str:
        """The kind of frame in plain words."""
        return MESSAGE_WORDS.get(type(self.message), type(self.message).__name__)

    @property
    def text(self) -> str:
        """One line for a person: what was wrong with which frame."""
        if self.accepted:
            return f"{self.what} accepted"
        if self.category == "invalid":
            words = REASONS.get(self.reason, self.reason)
            return f"{self.what} with {words}" + (f": {self.detail}" if self.detail else "")
        return f"{self.what} {self.category}" + (f": {self.detail}" if self.detail else "")


@dataclass(frozen=True)
class Notice:
    """Something the link must report: ``board_restarted``, ``incompatible`` (the board
    was refused; ``detail`` names what it claimed and what is supported) or
    ``board_accepted``."""

    kind: str
    detail: str
    data: dict[str, Any] = field(default_factory=dict, hash=False)


class _Invalid(Exception):
    """Internal: a rule failed (reason key, detail)."""

    def __init__(self, reason: str, detail: str, category: str = "invalid") -> None:
        super().__init__(detail)
        self.reason, self.detail, self.category = reason, detail, category


# ----------------------------------------------------------------------------- the validator


@dataclass
class _Session:
    """What is known of the board since the connection opened (or the board restarted)."""

    last_seq: int | None = None
    alt_seq: int | None = None  # the numbering before the last jump ahead (a stray frame's?)
    alt_missed: int = 0
    held: Frame | None = None
    held_at: float = 0.0  # host time the held frame arrived
    hi_us: int | None = None  # the board's newest accepted time
    hi_host: float = 0.0  # host time when it was accepted
    hb_counter: int | None = None
    hb_time: int | None = None
    hb_alt: tuple[int, int, int] | None = None  # (counter, time, counted missing) before the last jump ahead
    status_time: int | None = None
    epoch_counter: int | None = None
    epoch_time: int | None = None
    epoch_alt: tuple[int, int, int] | None = None
    epoch_pulse: dict[Output, tuple[int, int]] = field(default_factory=dict)  # output -> (onset, width) of its last
    emg_next: int | None = None  # first_sample the next EmgBlock should have
    emg_first: int | None = None
    emg_time: int | None = None
    emg_rate: int | None = None
    emg_alt: tuple[int, int, int, int] | None = None  # (next, first, time, counted missing) before a jump
    emg_restart_ok: bool = True  # first_sample may restart at 0 (after a ConfigureAcquisition Ack)
    impedance_time: int | None = None


class FrameValidator:
    """Checks each decoded board frame (see the module docstring and PROTOCOL.md section 12)."""

    def __init__(self, support: HostSupport = HOST_SUPPORT) -> None:
        self.support = support
        self.capabilities: Capabilities | None = None  # the accepted board's
        self.board_state = "unknown"  # unknown | accepted | refused
        self.refusal = ""
        self.config: ConfigureAcquisition | None = None  # acquisition configuration in force
        self._pending: OrderedDict[int, object] = OrderedDict()  # host seq -> unanswered message
        self._impedance_pending = 0
        self._tokens: dict[Output, deque[tuple[int | None, Stimulate | None]]] = {}
        self._s = _Session()
        self._notices: list[Notice] = []
        self.stats: dict[str, Any] = {
            "accepted": 0, "invalid": 0, "duplicate": 0, "replayed": 0, "refused": 0,
            "invalid_by_reason": {}, "frames_missed": 0, "epochs_missed": 0, "emg_samples_missed": 0,
            "heartbeats_missed": 0, "board_restarts": 0, "stray_frames": 0,
        }

    # ------------------------------------------------------------------ host side

    def reset(self) -> None:
        """A new connection: the board's numbering, clock and streams are unknown again,
        its capabilities must be given again; unanswered host frames are forgotten."""
        self._s = _Session()
        self._pending.clear()
        self._impedance_pending = 0
        self.capabilities = None
        if self.board_state == "accepted":
            self.board_state = "unknown"

    def sent(self, seq: int, message: object) -> None:
        """A host frame numbered ``seq`` is about to go out."""
        if type(message).__name__ == "HostHeartbeat":
            return
        self._pending[seq] = message
        self._pending.move_to_end(seq)
        while len(self._pending) > PENDING_KEPT:
            self._pending.popitem(last=False)
        if isinstance(message, ImpedanceRequest):
            self._impedance_pending += 1

    @property
    def stimulation_allowed(self) -> bool:
        """True once the board's Capabilities were received and accepted."""
        return self.board_state == "accepted"

    def take_notices(self) -> list[Notice]:
        out, self._notices = self._notices, []
        return out

    # ------------------------------------------------------------------ board side

    def check(self, frame: Frame, now: float) -> list[Verdict]:
        """Verdicts for ``frame`` arriving at host time ``now``: usually one; none while
        a frame numbered 0 is held back; two when it is released. Never raises."""
        s = self._s
        if s.held is not None:
            return self._decide_held(s.held, frame, now)
        if s.last_seq is not None:
            d = (frame.seq - s.last_seq) % SEQ_MODULO
            if d == 0:
                return [self._count(Verdict(frame.seq, frame.message, False, "duplicate", "",
                                            f"frame number {frame.seq} again"))]
            if d == 1:
                s.alt_seq = None  # the numbering goes on: the last jump was real
            elif frame.seq == 0:  # (0 after 2^32-1 is d == 1: the numbering wrapping)
                s.held, s.held_at = frame, now
                return []
            elif d >= SEQ_HALF:
                a = s.alt_seq
                if a is None or not 1 <= (frame.seq - a) % SEQ_MODULO <= STRAY_WINDOW:
                    return [self._count(Verdict(frame.seq, frame.message, False, "replayed", "",
                                                f"frame number {frame.seq} is older than {s.last_seq}"))]
                # the frame that jumped ahead was a stray: the numbering from before it goes on
                self.stats["stray_frames"] += 1
                self.stats["frames_missed"] += (frame.seq - a) % SEQ_MODULO - 1 - s.alt_missed
                s.alt_seq = None
            else:
                self.stats["frames_missed"] += d - 1
                if s.alt_seq is None:
                    s.alt_seq, s.alt_missed = s.last_seq, d - 1
        s.last_seq = frame.seq
        return [self._content(frame, now)]

    def _decide_held(self, held: Frame, frame: Frame, now: float) -> list[Verdict]:
        s = self._s
        if frame.seq == 0:
            return [self._count(Verdict(frame.seq, frame.message, False, "duplicate", "", "frame number 0 again"))]
        s.held = None
        last = s.last_seq if s.last_seq is not None else 0
        new_numbering = 1 <= frame.seq <= RESTART_WINDOW
        old_numbering = 1 <= (frame.seq - last) % SEQ_MODULO <= RESTART_WINDOW
        held_at = s.held_at
        restarted = (new_numbering and (not old_numbering or self._looks_restarted(held))
                     and self._clock_goes_on(held, held_at, frame, now))
        if not restarted:
            out = [self._count(Verdict(held.seq, held.message, False, "replayed", "",
                                       f"frame number 0 among frames numbered {last}..{frame.seq}"))]
            return out + self.check(frame, now)
        self._restart()
        s = self._s
        s.last_seq = 0
        out = [self._content(held, held_at)]  # the board's new clock, from when its frame 0 arrived
        return out + self.check(frame, now)

    def _looks_restarted(self, held: Frame) -> bool:
        m = held.message
        s = self._s
        return (isinstance(m, BoardHeartbeat) and m.counter < 16 and s.hi_us is not None
                and m.board_time_us < s.hi_us - TIME_LAG_S * 1e6)

    @staticmethod
    def _clock_goes_on(held: Frame, held_at: float, frame: Frame, now: float) -> bool:
        """Does ``frame``'s board time go on from the held frame 0's (not before it, not
        ahead by more than the host time that passed allows)? A restarted board's next
        frame does; a genuine frame after a stray old 0 goes on from the old clock. True
        when either frame has no board time (the numbering decides)."""
        t0 = getattr(held.message, "board_time_us", None)
        t = getattr(frame.message, "board_time_us", None)
        if not isinstance(t0, int) or not isinstance(t, int):
            return True
        lead = (max(0.0, now - held_at) * (1.0 + TIME_RATE_TOLERANCE) + TIME_LEAD_S) * 1e6
        return t0 <= t <= t0 + lead

    def _restart(self) -> None:
        self.stats["board_restarts"] += 1
        self._s = _Session()
        self.config = None  # a restarted board has no acquisition configured
        self._notices.append(Notice("board_restarted", "the board restarted (its frame numbering began again at 0)"))

    def _count(self, v: Verdict) -> Verdict:
        st = self.stats
        if v.accepted:
            st["accepted"] += 1
        else:
            st[v.category] += 1
            if v.category == "invalid":
                by = st["invalid_by_reason"]
                by[v.reason] = by.get(v.reason, 0) + 1
        return v

    def count_rejected(self, reason: str) -> None:
        """Count a CRC-valid frame the codec refused (``malformed``, ``unknown_type``,
        ``bad_version``) among the invalid ones."""
        self._count(Verdict(0, None, False, "invalid", reason))

    def _content(self, frame: Frame, now: float) -> Verdict:
        m = frame.message
        if self.board_state == "refused" and not isinstance(m, (Ack, Nack, Capabilities)):
            return self._count(Verdict(frame.seq, m, False, "refused", "", self.refusal))
        check = _CHECKS.get(type(m))
        try:
            if check is not None:
                check(self, m, now)
        except _Invalid as bad:
            return self._count(Verdict(frame.seq, m, False, bad.category, bad.reason, bad.detail))
        except (ValueError, TypeError, ArithmeticError, AttributeError) as exc:  # a rule's own defect
            return self._count(Verdict(frame.seq, m, False, "invalid", "malformed", f"cannot be checked ({exc!r})"))
        if self.board_state == "refused" and isinstance(m, Capabilities):
            return self._count(Verdict(frame.seq, m, False, "refused", "", self.refusal))
        return self._count(Verdict(frame.seq, m, True))

    # ------------------------------------------------------------------ time

    def _lag_us(self) -> float:
        c = self.config
        if c is None or not c.sample_rate_hz:
            return (TIME_LAG_S + 10.0) * 1e6
        block_s = c.stream_block_samples * max(1, c.stream_decimation) / c.sample_rate_hz
        window_s = (c.epoch_pre_ms + c.epoch_post_ms) / 1000.0
        return (TIME_LAG_S + block_s + window_s) * 1e6

    def _time(self, t: int, now: float) -> None:
        """Raise unless ``t`` (board us) fits the board's clock at host time ``now``."""
        if t > MAX_BOARD_TIME_US:
            raise _Invalid("board_time", f"board time {t} us ({t / 3.15576e13:.3g} years) is beyond any "
                           f"plausible uptime (at most {MAX_BOARD_TIME_US} us)")
        s = self._s
        if s.hi_us is None:
            return
        passed = max(0.0, now - s.hi_host)
        lead = (passed * (1.0 + TIME_RATE_TOLERANCE) + TIME_LEAD_S) * 1e6
        if t > s.hi_us + lead:
            raise _Invalid("board_time", f"board time jumped ahead by {(t - s.hi_us) / 1e6:.3f} s "
                           f"while {passed:.3f} s passed (at most {TIME_LEAD_S:g} s more)")
        if t < s.hi_us - self._lag_us():
            raise _Invalid("back_dated", f"board time {t / 1e6:.3f} s is {(s.hi_us - t) / 1e6:.3f} s older than "
                           f"the board's clock ({s.hi_us / 1e6:.3f} s)")

    def _advance(self, t: int, now: float) -> None:
        s = self._s
        if s.hi_us is None or t > s.hi_us:
            s.hi_us, s.hi_host = t, now

    # ------------------------------------------------------------------ per message

    def _follow(self, base: tuple[int, int] | None, alt: tuple[int, int, int] | None, counter: int, t: int,
                strict: bool, what: str) -> tuple[str, tuple[int, ...] | None]:
        """Does (``counter``, board time ``t``) go on from ``base`` (the stream's last
        counter and time)? ("ok" or "gap", the base it goes on from). If not, but it goes
        on from ``alt`` (before the last jump ahead), the jump was a stray: "stray".
        Raises for a duplicate or a replay; returns "backwards" for a time that went back."""
        def follows(b: tuple[int, ...]) -> str:
            d = (counter - b[0]) % SEQ_MODULO
            if d == 0:
                return "duplicate"
            if d >= SEQ_HALF:
                return "replayed"
            if t < b[1] or (strict and t == b[1]):
                return "backwards"
            return "ok" if d == 1 else "gap"

        if base is None:
            return "ok", None
        verdict = follows(base)
        if verdict in ("ok", "gap"):
            return verdict, base
        if verdict != "backwards" and alt is not None and follows(alt) in ("ok", "gap") \
                and (counter - alt[0]) % SEQ_MODULO <= STRAY_WINDOW:
            self.stats["stray_frames"] += 1
            return "stray", alt
        if verdict == "duplicate":
            raise _Invalid("", f"{what} {counter} again", "duplicate")
        if verdict == "replayed":
            raise _Invalid("", f"{what} {counter} is older than {base[0]}", "replayed")
        return "backwards", base

    def _missed(self, key: str, how: str, frm: tuple[int, ...] | None, counter: int,
                alt: tuple[int, int, int] | None) -> tuple[int, int, int] | None:
        """Count what a counter stream missed; the stream's new "before the jump" state."""
        if frm is None:
            return None
        missed = (counter - frm[0]) % SEQ_MODULO - 1
        if how == "stray" and alt is not None:
            self.stats[key] -= alt[2]  # what the stray's jump counted was not missed
        self.stats[key] += missed
        if how == "gap":
            return alt if alt is not None else (frm[0], frm[1], missed)
        return None

    def _check_heartbeat(self, m: BoardHeartbeat, now: float) -> None:
        s = self._s
        base = (s.hb_counter, s.hb_time) if s.hb_counter is not None and s.hb_time is not None else None
        how, frm = self._follow(base, s.hb_alt, m.counter, m.board_time_us, True, "heartbeat")
        self._time(m.board_time_us, now)
        if how == "backwards":
            raise _Invalid("time_backwards", f"heartbeat at board time {m.board_time_us} us, not after the "
                           f"previous one ({s.hb_time} us)")
        s.hb_alt = self._missed("heartbeats_missed", how, frm, m.counter, s.hb_alt)
        s.hb_counter, s.hb_time = m.counter, m.board_time_us
        self._advance(m.board_time_us, now)

    def _check_status(self, m: BoardStatus, now: float) -> None:
        s = self._s
        self._time(m.board_time_us, now)
        if s.status_time is not None and m.board_time_us < s.status_time:
            raise _Invalid("time_backwards", f"status at board time {m.board_time_us} us, before the previous "
                           f"one ({s.status_time} us)")
        if abs(m.uptime_s - m.board_time_us / 1e6) > STATUS_UPTIME_TOLERANCE_S:
            raise _Invalid("status", f"uptime {m.uptime_s} s does not match board time {m.board_time_us / 1e6:.3f} s")
        caps = self.capabilities
        if caps is not None:
            extra = [o for o in m.stimulating if o not in caps.outputs]
            if extra:
                raise _Invalid("output", f"stimulating on {', '.join(o.name for o in extra)}, not an output of "
                               f"this board")
        s.status_time = m.board_time_us
        self._advance(m.board_time_us, now)

    def _check_scale(self, nv: int) -> None:
        if not 1 <= nv <= MAX_NV_PER_COUNT:
            raise _Invalid("scale", f"nv_per_count {nv} (allowed 1-{MAX_NV_PER_COUNT})")

    def _channels_expected(self) -> int | None:
        c, caps = self.config, self.capabilities
        if c is None:
            return None
        n_ch = caps.channels if caps is not None else 8
        return bin(c.channel_mask & ((1 << n_ch) - 1)).count("1")

    def _check_channels(self, channels: int) -> None:
        want = self._channels_expected()
        if want is not None:
            if channels != want:
                raise _Invalid("channels", f"{channels} channels, {want} configured")
            return
        top = self.capabilities.channels if self.capabilities is not None else 8
        if not 1 <= channels <= top:
            raise _Invalid("channels", f"{channels} channels (the board has {top})")

    def _board_rates(self) -> tuple[int, ...]:
        caps = self.capabilities
        if caps is not None and caps.sample_rates_hz:
            return tuple(caps.sample_rates_hz)
        return ()

    def _check_epoch(self, m: StimEpoch, now: float) -> None:
        caps, c, s = self.capabilities, self.config, self._s
        base = (s.epoch_counter, s.epoch_time) if s.epoch_counter is not None and s.epoch_time is not None else None
        how, frm = self._follow(base, s.epoch_alt, m.stim_counter, m.board_time_us, False, "stimulus")
        if caps is not None and m.output not in caps.outputs:
            raise _Invalid("output", f"output {m.output.name}, not an output of this board")
        rate = m.sample_rate_hz
        if c is not None:
            if rate != c.sample_rate_hz:
                raise _Invalid("sample_rate", f"{rate} Hz, configured {c.sample_rate_hz} Hz")
        else:
            rates = self._board_rates()
            if rates and rate not in rates:
                raise _Invalid("sample_rate", f"{rate} Hz (the board has {', '.join(map(str, rates))} Hz)")
            if not rates and not 1 <= rate <= 1_000_000:
                raise _Invalid("sample_rate", f"{rate} Hz")
        channels, n = m.samples.shape if m.samples.ndim == 2 else (0, 0)
        self._check_channels(channels)
        self._check_epoch_samples(m, rate, n)
        self._check_scale(m.nv_per_count)
        self._check_currents(m)
        self._check_token(m)
        self._time(m.board_time_us, now)
        if how == "backwards":
            raise _Invalid("time_backwards", f"stimulus at board time {m.board_time_us} us, before the previous "
                           f"one ({s.epoch_time} us)")
        last = s.epoch_pulse.get(m.output)
        if last is not None and m.board_time_us < last[0] + last[1]:  # two pulses of one output at once: a copy
            raise _Invalid("pulse_overlap", f"stimulus {m.stim_counter} on {m.output.name} at board time "
                           f"{m.board_time_us} us, during the previous one ({last[0]} us, {last[1]} us wide)")
        s.epoch_alt = self._missed("epochs_missed", how, frm, m.stim_counter, s.epoch_alt)
        s.epoch_counter, s.epoch_time = m.stim_counter, m.board_time_us
        s.epoch_pulse[m.output] = (m.board_time_us, max(1, m.pulse_width_us))
        self._advance(m.board_time_us, now)

    def _check_epoch_samples(self, m: StimEpoch, rate: int, n: int) -> None:
        c = self.config
        post = n - m.pre_samples
        if n < 1 or post < 1:
            raise _Invalid("sample_count", f"{n} samples with the stimulus at sample {m.pre_samples} "
                           "(at least one sample after it)")
        if c is not None:
            want_pre = round(c.epoch_pre_ms * rate / 1000)
            want_post = round(c.epoch_post_ms * rate / 1000)
            if m.pre_samples > want_pre + 1 or abs(post - want_post) > 1:
                raise _Invalid("sample_count", f"{m.pre_samples} + {post} samples before + after the stimulus; "
                               f"{c.epoch_pre_ms} + {c.epoch_post_ms} ms at {rate} Hz are {want_pre} + {want_post}")
        elif n > MAX_EPOCH_MS * rate / 1000 + 1:
            raise _Invalid("sample_count", f"{n} samples at {rate} Hz, more than {MAX_EPOCH_MS} ms")

    def _check_currents(self, m: StimEpoch) -> None:
        caps = self.capabilities
        top = caps.max_current_uA if caps is not None else self.support.max_current_uA[1]
        if m.set_current_uA > top:
            raise _Invalid("current", f"set current {m.set_current_uA} uA (the hardware maximum is {top} uA)")
        delivered = m.delivered_current_uA
        limit = top * DELIVERED_OVERSHOOT + DELIVERED_OVERSHOOT_UA
        if delivered != -1 and not 0 <= delivered <= limit:
            raise _Invalid("current", f"delivered current {delivered} uA (allowed -1 (not measured) or "
                           f"0-{limit:.0f} uA)")
        lo, hi = ((caps.min_pulse_width_us, caps.max_pulse_width_us) if caps is not None else (1, 1000))
        if not lo <= m.pulse_width_us <= hi:
            raise _Invalid("pulse_width", f"{m.pulse_width_us} us (the board's range is {lo}-{hi} us)")

    def _check_token(self, m: StimEpoch) -> None:
        known = self._tokens.get(m.output)
        if m.config_token is None:
            return
        if known is None or not any(tok == m.config_token for tok, _cmd in known):
            raise _Invalid("token", f"token {m.config_token} on {m.output.name}, never given for that output")
        cmd = next(c for tok, c in reversed(known) if tok == m.config_token)
        if cmd is not None and (m.set_current_uA != cmd.current_uA or m.pulse_width_us != cmd.pulse_width_us):
            raise _Invalid("token", f"token {m.config_token} was {cmd.current_uA} uA {cmd.pulse_width_us} us; "
                           f"the stimulus says {m.set_current_uA} uA {m.pulse_width_us} us")

    def _check_emg(self, m: EmgBlock, now: float) -> None:
        c, s = self.config, self._s
        channels, n = m.samples.shape if m.samples.ndim == 2 else (0, 0)
        restart = m.first_sample == 0 and s.emg_restart_ok
        stray = False if restart else self._emg_follows(m, n)
        rate = m.sample_rate_hz
        if c is not None:
            want = c.sample_rate_hz // max(1, c.stream_decimation)
            if rate != want:
                raise _Invalid("sample_rate", f"EMG at {rate} Hz, configured {want} Hz")
            if n != c.stream_block_samples:
                raise _Invalid("sample_count", f"{n} samples per channel, configured {c.stream_block_samples}")
        else:
            rates = self._board_rates()
            ok = any(rate >= 1 and r % rate == 0 and r // rate <= MAX_DECIMATION for r in rates) if rates \
                else 1 <= rate <= 1_000_000
            if not ok:
                raise _Invalid("sample_rate", f"EMG at {rate} Hz (the board samples at "
                               f"{', '.join(map(str, rates)) or 'unknown'} Hz)")
            if not 1 <= n <= MAX_STREAM_BLOCK:
                raise _Invalid("sample_count", f"{n} samples per channel (allowed 1-{MAX_STREAM_BLOCK})")
        self._check_channels(channels)
        self._check_scale(m.nv_per_count)
        self._time(m.board_time_us, now)
        if s.emg_time is not None and m.board_time_us <= s.emg_time:
            raise _Invalid("time_backwards", f"EMG at board time {m.board_time_us} us, not after the previous block "
                           f"({s.emg_time} us)")
        if s.emg_next is not None and s.emg_first is not None and s.emg_time is not None and not restart \
                and s.emg_rate == rate:
            step_us = (m.first_sample - s.emg_first) * 1e6 / rate
            if abs((m.board_time_us - s.emg_time) - step_us) > step_us * EMG_TIME_TOLERANCE + EMG_TIME_SLACK_US:
                raise _Invalid("board_time", f"EMG board time moved {(m.board_time_us - s.emg_time) / 1e6:.4f} s for "
                               f"{m.first_sample - s.emg_first} samples at {rate} Hz ({step_us / 1e6:.4f} s)")
        if s.emg_next is not None and not restart and m.first_sample > s.emg_next:
            self.stats["emg_samples_missed"] += m.first_sample - s.emg_next
            if s.emg_alt is None and not stray and s.emg_first is not None and s.emg_time is not None:
                s.emg_alt = (s.emg_next, s.emg_first, s.emg_time, m.first_sample - s.emg_next)
        elif not stray:
            s.emg_alt = None
        s.emg_first, s.emg_next, s.emg_time, s.emg_rate = m.first_sample, m.first_sample + n, m.board_time_us, rate
        s.emg_restart_ok = False
        self._advance(m.board_time_us, now)

    def _emg_follows(self, m: EmgBlock, n: int) -> bool:
        """Raise for a duplicate or replayed block; True when it goes on from before a
        block that jumped ahead (a stray: the stream state is put back)."""
        s = self._s
        if s.emg_next is None or m.first_sample >= s.emg_next:
            return False
        alt = s.emg_alt
        if alt is not None and 0 <= m.first_sample - alt[0] <= STRAY_WINDOW * max(n, 1) and m.board_time_us > alt[2]:
            self.stats["stray_frames"] += 1
            self.stats["emg_samples_missed"] -= alt[3]
            s.emg_next, s.emg_first, s.emg_time = alt[:3]
            s.emg_alt = None
            return True
        if m.first_sample == s.emg_first:
            raise _Invalid("", f"EMG from sample {m.first_sample} again", "duplicate")
        raise _Invalid("", f"EMG from sample {m.first_sample}; the stream is at {s.emg_next}", "replayed")

    def _check_impedance(self, m: ImpedanceResult, now: float) -> None:
        if self._impedance_pending <= 0:
            raise _Invalid("unsolicited", "impedance result without an impedance request")
        electrodes = [e for e, _z in m.impedances_ohm]
        if len(set(electrodes)) != len(electrodes):
            raise _Invalid("impedance", "an electrode listed twice")
        for e, z in m.impedances_ohm:
            if z != -1 and not 0 <= z <= MAX_IMPEDANCE_OHM:
                raise _Invalid("impedance", f"{e.name} {z} ohm (allowed -1 (not measurable) or 0-{MAX_IMPEDANCE_OHM})")
        self._time(m.board_time_us, now)
        s = self._s
        if s.impedance_time is not None and m.board_time_us < s.impedance_time:
            raise _Invalid("time_backwards", f"impedance at board time {m.board_time_us} us, before the previous one")
        s.impedance_time = m.board_time_us
        self._impedance_pending -= 1
        self._advance(m.board_time_us, now)

    def _answered(self, seq: int, what: str) -> object:
        msg = self._pending.pop(seq, None)
        if msg is None:
            raise _Invalid("unsolicited", f"{what} for frame {seq}, which the host did not send or was answered")
        return msg

    def _check_ack(self, m: Ack, now: float) -> None:
        msg = self._answered(m.seq, "acknowledgement")
        if isinstance(msg, ConfigureAcquisition):
            self.config = msg
            self._s.emg_restart_ok = True
        elif isinstance(msg, Stimulate) and msg.mode is not StimMode.STOP:
            self._remember_token(msg)

    def _remember_token(self, msg: Stimulate) -> None:
        known = self._tokens.setdefault(msg.output, deque(maxlen=TOKENS_KEPT))
        known.append((msg.config_token, msg))

    def _check_nack(self, m: Nack, now: float) -> None:
        msg = self._answered(m.seq, "refusal")
        if isinstance(msg, ImpedanceRequest):
            self._impedance_pending = max(0, self._impedance_pending - 1)
        if isinstance(msg, Hello) and m.reason is NackReason.UNSUPPORTED_VERSION:
            self._refuse(f"the board does not speak protocol version {msg.protocol_version}"
                         + (f" ({m.detail})" if m.detail else ""), {"claimed": m.detail})

    def _check_capabilities(self, m: Capabilities, now: float) -> None:
        hello = next((seq for seq, msg in self._pending.items() if isinstance(msg, Hello)), None)
        if hello is None:
            raise _Invalid("unsolicited", "capabilities without a Hello")
        del self._pending[hello]
        problems = check_capabilities(m, self.support)
        if problems:
            self._refuse(f"board {m.board_id} (firmware {m.firmware_version}) claims " + "; ".join(problems),
                         {"board_id": m.board_id, "firmware": m.firmware_version,
                          "protocol_version": m.protocol_version, "problems": problems})
            return
        self.capabilities = m
        if self.board_state != "accepted":
            was = self.board_state
            self.board_state, self.refusal = "accepted", ""
            if was == "refused":
                self._notices.append(Notice("board_accepted", f"board {m.board_id} (firmware {m.firmware_version}) "
                                            "is supported", {"board_id": m.board_id}))

    def _refuse(self, why: str, data: dict[str, Any]) -> None:
        self.capabilities = None
        text = f"{why}; this monitor supports {supported_text(self.support)}"
        changed = self.board_state != "refused" or self.refusal != text
        self.board_state, self.refusal = "refused", text
        if changed:
            self._notices.append(Notice("incompatible", text, data))


# the content check of each board message type (each takes its own type as ``m``)
_CHECKS: dict[type, Callable[[FrameValidator, Any, float], None]] = {
    BoardHeartbeat: FrameValidator._check_heartbeat,
    BoardStatus: FrameValidator._check_status,
    StimEpoch: FrameValidator._check_epoch,
    EmgBlock: FrameValidator._check_emg,
    ImpedanceResult: FrameValidator._check_impedance,
    Ack: FrameValidator._check_ack,
    Nack: FrameValidator._check_nack,
    Capabilities: FrameValidator._check_capabilities,
}

__all__ = [
    "FrameValidator",
    "Verdict",
    "Notice",
    "HostSupport",
    "HOST_SUPPORT",
    "check_capabilities",
    "supported_text",
    "REASONS",
    "CATEGORIES",
    "MAX_BOARD_TIME_US",
]
