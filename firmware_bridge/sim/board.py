"""The virtual board: the firmware side of ``PROTOCOL.md``, in front of a virtual patient.

Owns: ``VirtualBoard`` (protocol handling, acquisition, stimulation, the safety contract,
status and faults, the scenario timeline and the simulation controls) and ``ControlError``.
May import: the standard library, numpy, ``firmware_bridge.messages``, ``firmware_bridge.codec``,
``firmware_bridge.clock`` and the other ``firmware_bridge.sim`` modules. No threads, no I/O,
no clock of its own: time comes from the injected ``Clock``.

Use::

    board = VirtualBoard(clock, seed=1)            # or scenario=load_scenario("...")
    board.receive(bytes_from_host)                 # decode, act, queue the answers
    out = board.poll()                             # advance to clock.now(), return frames

``poll`` advances the board to ``clock.now()``: the EMG of both channels is generated
up to that time in vectorised blocks, free-running ``EmgBlock`` messages are cut from it,
each delivered pulse adds its response and artifact to that same signal and is reported
as a ``StimEpoch`` whose samples are exactly the stream's samples around the pulse
(with ``stream_decimation`` 1), scenario world events are applied at their time,
``BoardHeartbeat`` goes out every 100 ms and ``BoardStatus`` every second and at once
when faults or stimulation change. Everything follows ``PROTOCOL.md``:

- Hello -> Capabilities (``simulated=True``), or Nack UNSUPPORTED_VERSION.
- ConfigureAcquisition -> checked against the ranges of PROTOCOL.md section 7 (and
  ``stream_decimation`` must divide the sample rate, ``gain`` 1-100 with
  ``nv_per_count = round(100 / gain)``, full scale +-2^20 counts, i.e. about
  +-105 mV / gain): Ack, acquisition (re)starts; Nack OUT_OF_RANGE naming the field.
- Stimulate -> SINGLE (one pulse now), CONTINUOUS (pulses at ``rate_mHz`` until STOP;
  a new CONTINUOUS on a running output keeps its rhythm and takes the new settings
  between two pulses, all at once), STOP. Protocol 1.1: a Stimulate's ``config_token``
  is echoed in every StimEpoch delivered with that configuration (a SINGLE pulse carries
  its own); the board announces it with ``Capabilities.config_token``. Out of range
  (current 0-max_current_uA, pulse width, rate) -> Nack OUT_OF_RANGE whose detail
  names the field, its value and the accepted range. BAD_STATE before the first
  HostHeartbeat, while HOST_SILENT is set, while OVER_CURRENT is latched, or before
  acquisition is configured.
- ImpedanceRequest -> Ack, then ImpedanceResult 200 ms later (BUSY meanwhile).
- HostHeartbeat -> feeds the host watchdog (not acked).
- SimControl -> ``control(command, **json args)``: Ack, or Nack (OUT_OF_RANGE for an
  unknown command or a bad value, MALFORMED for bad JSON or an unknown argument).
- Intact frames that do not parse: Nack MALFORMED / UNKNOWN_MESSAGE /
  UNSUPPORTED_VERSION; frames with a bad CRC are dropped and counted (``decoder``).

Safety contract (PROTOCOL.md section 10). Only **HostHeartbeat** frames feed the host
watchdog; other host frames do not (a host whose supervision loop died is not healthy).
The watchdog arms at the first HostHeartbeat after power-on or reset (before it, no
stimulation is accepted and the beeper stays quiet: a host that never came is not a host
that went silent). Heartbeat missing 500 ms: every output stops, HOST_SILENT is set and a
BoardStatus goes out at once. Silent 2 s: the backup beeper sounds (a repeating pulsed
pattern), BACKUP_BEEPER is set, and ``beeper_history`` records ``(board_time_s, True)``.
The next HostHeartbeat clears both flags and silences the beeper (``(t, False)`` in the
history), but stimulation stays stopped until the host commands it again.

Simulation controls (``board.control(command, **args)`` in Python, the same over the wire
as ``SimControl(command, json.dumps(args))``, and as world events in scenario files):

======================  ===============================================================
``probe``               ``contact`` nerve|tissue|air|fluid|none; for nerve (and fluid
                        over a nerve) ``site`` VAGUS|RLN|EBSLN, ``side`` L|R, optional
                        ``position`` 0 (distal, at the larynx) - 1 (proximal) or
                        ``position_mm`` from the laryngeal entry (40 mm = 1), and
                        ``distance_mm`` (probe beside the nerve)
``aps_attach``          ``side``, optional ``position`` on the vagus (default 0.7)
``aps_detach``          the vagal electrode comes off (open circuit on the APS output)
``aps_contact``         ``factor`` 0-1: the vagal electrode slipping (amplitude only)
``traction``            ``side``, ``severity`` 0-1 (fraction of fibres blocked, default
                        0.9), ``onset_s`` time constant (60), ``site`` RLN|VAGUS,
                        ``position`` of the stretched segment (0.1)
``release``             ``side``, ``recovery_s`` time constant (1200), ``residual``
                        fraction of the injury that stays (0: full recovery)
``transect``            ``side``, ``site`` RLN|VAGUS|EBSLN, ``position`` (0 = global)
``tube``                ``left`` / ``right`` recording factor (1 = well placed; 0.3 =
                        displaced), ``over_s`` how fast it moves (1)
``nmb``                 ``level`` 0-1 neuromuscular blockade (both sides), ``onset_s``
``cautery``             ``duration_s`` (2), ``rms_uV`` (60000: saturates the ADC)
``lead``                ``electrode`` L_POS|L_NEG|R_POS|R_NEG|GROUND|STIM_RETURN,
                        ``state`` off|on (``lead_off`` / ``lead_on`` with ``electrode``)
``irritation``          ``side``, ``kind`` burst|train, ``duration_s``, ``rate_hz``,
                        ``amplitude_uV``: spontaneous EMG from an irritated nerve
``output``              ``output`` PROBE|APS, ``state`` ok|open|shunt, ``fraction`` (the
                        part of the current that still returns, for shunt)
``impedance``           ``electrode``, ``ohm``
``fault``               ``kind`` over_current|internal, ``state`` on|off (over_current
                        stops stimulation and latches until a Stimulate STOP)
``reset``               the board's watchdog resets it (WATCHDOG in the next status)
``unplug``              ``duration_s``: USB cable out; the board is unpowered and mute,
                        then powers up again (sequence numbers restart at 0)
``mute``                ``duration_s``: the board runs but nothing it sends arrives
``garbage``             ``n_bytes``: random bytes injected into the output stream
``corrupt``             ``frames``: the next frames go out with a damaged CRC
======================  ===============================================================

What the virtual board does NOT model: USB enumeration and serial-port timing (bytes are
available as soon as ``poll`` returns them), the ADC's anti-aliasing filter and
conversion noise beyond quantisation, a finite transmit buffer (a real board drops
samples when the host cannot keep up; the virtual board never does), the charge-balance
phase of the biphasic pulse in the EMG, the real beeper's sound, firmware update,
calibration, and the electrical safety circuits other than over-current and compliance.
What the patient does not model is listed in ``physiology``.
"""

from __future__ import annotations

import inspect
import json
import math
from collections import deque
from dataclasses import dataclass
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from firmware_bridge import codec
from firmware_bridge.clock import Clock
from firmware_bridge.messages import (
    PROTOCOL_VERSION,
    Ack,
    BoardHeartbeat,
    BoardStatus,
    Capabilities,
    ConfigureAcquisition,
    Electrode,
    EmgBlock,
    Fault,
    Hello,
    HostHeartbeat,
    ImpedanceRequest,
    ImpedanceResult,
    Nack,
    NackReason,
    Output,
    SimControl,
    StimEpoch,
    StimMode,
    Stimulate,
)
from firmware_bridge.sim.emg import EmgGenerator
from firmware_bridge.sim.physiology import NERVE_EXPOSED_MM, Patient, PhysiologyError

FIRMWARE_VERSION = "lnm-virtual-board 1.0"
HEARTBEAT_PERIOD_S = 0.100
STATUS_PERIOD_S = 1.0
HOST_SILENT_S = 0.500
BEEPER_S = 2.0
IMPEDANCE_TIME_S = 0.200
ADC_FULL_SCALE = (1 << 20) - 1  # counts
MAX_PIECE = 8192  # samples rendered per step
EMG_LEAD_ELECTRODES = (Electrode.L_POS, Electrode.L_NEG, Electrode.R_POS, Electrode.R_NEG, Electrode.GROUND)


_MAX = np.maximum.reduce
_MIN = np.minimum.reduce

# items that neither change the signal nor read it: no need to generate EMG up to them
_NO_RENDER = frozenset({"_heartbeat", "_periodic_status", "_host_went_silent", "_beeper_start",
                        "_impedance_done", "_unmute"})


def _item_time(item: tuple[float, int, object]) -> float:
    return item[0]


class ControlError(ValueError):
    """A simulation control was refused; ``reason`` is the Nack reason to send."""

    def __init__(self, message: str, reason: NackReason = NackReason.OUT_OF_RANGE) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class StimTruth:
    """What a pulse really did (for tests and scenario documentation; not on the wire)."""

    t: float  # board time of the onset (s)
    stim_counter: int
    output: Output
    target: str | None
    set_uA: int
    delivered_uA: int
    amplitude_uV: float
    latency_ms: float | None
    onset_ms: float | None


@dataclass
class _OutputState:
    mode: StimMode = StimMode.STOP
    current_uA: int = 0
    pulse_width_us: int = 100
    period_s: float = 0.25
    next_t: float = math.inf  # next continuous pulse (board time)
    token: int | None = None  # configuration token of the settings in force


@dataclass
class _Pending:
    k: int  # onset sample
    t: float
    counter: int
    output: Output
    set_uA: int
    delivered_uA: int
    pulse_width_us: int
    token: int | None = None


@dataclass(frozen=True)
class _Raw:
    """Bytes that go out as they are (injected garbage), without a frame."""

    data: bytes


class _History:
    """Recent ADC samples (2, n) int32 with their absolute sample index."""

    def __init__(self, cap: int = 1 << 16) -> None:
        self.buf = np.zeros((2, cap), dtype=np.int32)
        self.start = 0
        self.n = 0

    @property
    def end(self) -> int:
        return self.start + self.n

    def reset(self, start: int = 0) -> None:
        self.start, self.n = start, 0

    def append(self, x: np.ndarray, keep_from: int) -> None:
        self.reserve(x.shape[1], keep_from)[...] = x

    def reserve(self, m: int, keep_from: int) -> np.ndarray:
        """The next ``m`` samples, appended now and to be written by the caller (dropping
        what comes before ``keep_from`` if room is needed)."""
        cap = self.buf.shape[1]
        if self.n + m > cap:
            drop = min(max(keep_from - self.start, 0), self.n)
            if drop:
                self.buf[:, : self.n - drop] = self.buf[:, drop : self.n]
                self.start += drop
                self.n -= drop
            if self.n + m > cap:
                new = np.zeros((2, max(2 * cap, self.n + m)), dtype=np.int32)
                new[:, : self.n] = self.buf[:, : self.n]
                self.buf = new
        out = self.buf[:, self.n : self.n + m]
        self.n += m
        return out

    def get(self, a: int, b: int) -> np.ndarray:
        return self.buf[:, a - self.start : b - self.start]


def _electrode(value: Any) -> Electrode:
    if isinstance(value, Electrode):
        return value
    try:
        return Electrode[str(value).upper()]
    except KeyError:
        raise ControlError(f"electrode must be one of {', '.join(e.name for e in Electrode)} (got {value!r})") from None


def _output(value: Any) -> Output:
    if isinstance(value, Output):
        return value
    try:
        return Output[str(value).upper()]
    except KeyError:
        raise ControlError(f"output must be one of {', '.join(o.name for o in Output)} (got {value!r})") from None


def _duration(name: str, value: Any, hi: float = 3600.0) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ControlError(f"{name} must be a number of seconds (got {value!r})") from None
    if not (0 < v <= hi):
        raise ControlError(f"{name}={value!r} out of range 0-{hi:g} s")
    return v


class VirtualBoard:
    """A stimulator/EMG board in software, speaking the real wire protocol."""

    def __init__(
        self,
        clock: Clock,
        *,
        seed: int | None = None,
        patient: Patient | None = None,
        patient_overrides: dict[str, Any] | None = None,
        scenario: Any = None,
        board_id: str | None = None,
        capabilities: Capabilities | None = None,
    ) -> None:
        self.clock = clock
        self.scenario = scenario
        if seed is None:
            seed = scenario.seed if scenario is not None else 0
        overrides = dict(scenario.patient) if scenario is not None else {}
        overrides.update(patient_overrides or {})
        try:
            self.patient = patient if patient is not None else Patient(seed, overrides)
        except PhysiologyError as exc:
            where = f" (scenario {scenario.name})" if scenario is not None else ""
            raise ControlError(f"patient{where}: {exc}") from None
        self.seed = self.patient.seed
        self.capabilities = capabilities or Capabilities(
            protocol_version=PROTOCOL_VERSION,
            firmware_version=FIRMWARE_VERSION,
            board_id=board_id or f"VB-{self.seed:08d}",
            simulated=True,
            config_token=True,
        )
        self._rng = np.random.default_rng(np.random.SeedSequence([self.seed, 0xB0A2D]))
        self._events = list(scenario.world_events) if scenario is not None else []
        self._event_i = 0
        self.origin = clock.now()  # scenario time 0 (board power-on)
        self.beeper_history: list[tuple[float, bool]] = []
        self.truth: deque[StimTruth] = deque(maxlen=200000)
        self.event_errors: list[str] = []
        self.counters = {"frames_in": 0, "frames_out": 0, "bytes_out": 0, "nacks": 0, "rejected": 0}
        self._controls = self._control_table()
        self._handler_table = self._handlers()
        self._beeper = False
        self._power_on(self.origin)

    # ------------------------------------------------------------------ public API

    def now(self) -> float:
        """Board time in seconds since power-on."""
        return self.clock.now() - self._boot

    def scenario_time(self) -> float:
        """Seconds since the board was created (scenario time; survives resets)."""
        return self.clock.now() - self.origin

    @property
    def beeper_on(self) -> bool:
        return self._beeper

    @property
    def faults(self) -> Fault:
        return self._faults()

    @property
    def stimulating(self) -> tuple[Output, ...]:
        return tuple([o for o, s in self._outputs.items() if s.mode == StimMode.CONTINUOUS])

    @property
    def acquiring(self) -> bool:
        return self._acq is not None

    def receive(self, data: bytes) -> None:
        """Bytes from the host: decode, act, queue the answers (sent by ``poll``)."""
        self._advance()
        if self._unplugged_until is not None:
            return  # nobody is listening
        self._invalidate()
        frames = self._decoder.feed(bytes(data))
        for rej in self._decoder.take_rejections():
            self.counters["rejected"] += 1
            if rej.seq is None:
                continue
            reason = {
                "bad_version": NackReason.UNSUPPORTED_VERSION,
                "unknown_type": NackReason.UNKNOWN_MESSAGE,
            }.get(rej.reason, NackReason.MALFORMED)
            self._nack(rej.seq, reason, rej.detail or rej.reason)
        for frame in frames:
            self.counters["frames_in"] += 1
            self._handle(frame.seq, frame.message)

    def poll(self) -> bytes:
        """Advance to ``clock.now()`` and return every frame due since the last call."""
        self._advance()
        return self._drain()

    def control(self, command: str, **args: Any) -> None:
        """Apply a simulation control now (see the module docstring). Raises ``ControlError``."""
        self._advance()
        self._invalidate()
        self._apply_control(command, args)

    @property
    def decoder(self) -> codec.Decoder:
        return self._decoder

    # ------------------------------------------------------------------ power, reset

    def _power_on(self, boot: float, watchdog: bool = False) -> None:
        """Power-on (or reset) at absolute clock time ``boot``; the patient is untouched."""
        if self._beeper:
            self.beeper_history.append((boot - self.origin, False))
        self._boot = boot
        self._off = boot - self.origin  # board time + _off = scenario (patient) time
        self._t = 0.0
        self._seq = 0
        self._decoder = codec.Decoder()
        self._out: list[tuple[float, int, object]] = []
        self._out_order = 0
        self._acq: ConfigureAcquisition | None = None
        self._gen: EmgGenerator | None = None
        self._hist = _History()
        self._scratch = np.empty((2, MAX_PIECE), dtype=np.float32)  # one rendered piece
        self._nv = 100
        self._rows: list[int] = [0, 1]
        self._pre_n = 0
        self._post_n = 0
        self._stream_k = 0
        self._stream_raw = 0
        self._need_k: float = math.inf
        self._pending: list[_Pending] = []
        self._outputs = {o: _OutputState() for o in Output}
        self._pulse_actions = {o: self._continuous_pulse_action(o) for o in Output}
        self._pulse_end: dict[Output, float] = {}  # board time each output's last pulse ends
        self._stim_counter = 0
        self._hb_counter = 0
        self._next_hb = 0.0
        self._next_status = 0.0
        self._last_host_hb: float | None = None
        self._host_silent = False
        self._beeper = False
        self._watchdog_flag = watchdog
        self._over_current = False
        self._internal = False
        self._compliance = False
        self._saturated = False
        self._impedance_due: float | None = None
        self._muted_until: float | None = None
        self._unplugged_until: float | None = None
        self._corrupt_frames = 0
        self._due = -math.inf  # earliest scheduled item (cache)
        self._dirty = True  # the status may have changed
        self._sent_state: tuple[int, tuple[Output, ...]] = (int(self._faults()), ())  # the t=0 status says it

    # ------------------------------------------------------------------ time

    def _advance(self) -> None:
        while True:
            t_end = self.now()  # a reset inside the loop moves the board's time origin
            if t_end < self._t:
                return
            if t_end < self._due:  # nothing scheduled before now (cached; see _invalidate)
                break
            t_item, action = self._next_item()
            self._due = t_item
            if action is None or t_item > t_end:
                break
            t_item = max(t_item, self._t)
            if action.__name__ not in _NO_RENDER:  # the signal must be there up to the item
                self._render_to(t_item, inclusive=False)
            self._t = t_item
            action(t_item)
            self._due = -math.inf
            self._check_status(t_item)
        self._render_to(t_end, inclusive=True)
        self._t = t_end
        if self._dirty:
            self._check_status(t_end)

    def _invalidate(self) -> None:
        """State changed from outside the time line: recompute what is due, check the status."""
        self._due = -math.inf
        self._dirty = True

    def _next_item(self) -> tuple[float, Callable[[float], None] | None]:
        best_t: float = math.inf
        best: Callable[[float], None] | None = None
        if self._event_i < len(self._events):
            t = self._events[self._event_i].t - self._off
            best_t, best = t, self._do_world_event
        for out, st in self._outputs.items():
            if st.next_t < best_t:
                best_t, best = st.next_t, self._pulse_actions[out]
        if self._unplugged_until is not None:
            t = self._unplugged_until - self._boot
            if t < best_t:
                best_t, best = t, self._replug
        if self._muted_until is not None:
            t = self._muted_until - self._boot
            if t < best_t:
                best_t, best = t, self._unmute
        t, action = self._next_safety_item()
        if t <= best_t:  # the watchdog first: no pulse at the moment it stops the outputs
            best_t, best = t, action
        if self._impedance_due is not None and self._impedance_due < best_t:
            best_t, best = self._impedance_due, self._impedance_done
        if self._unplugged_until is None:
            if self._next_hb < best_t:
                best_t, best = self._next_hb, self._heartbeat
            if self._next_status < best_t:
                best_t, best = self._next_status, self._periodic_status
        return best_t, best

    def _next_safety_item(self) -> tuple[float, Callable[[float], None] | None]:
        """The host watchdog's next step: HOST_SILENT at 500 ms, the beeper at 2 s."""
        if self._last_host_hb is None or self._unplugged_until is not None:
            return math.inf, None
        if not self._host_silent:
            return self._last_host_hb + HOST_SILENT_S, self._host_went_silent
        if not self._beeper:
            return self._last_host_hb + BEEPER_S, self._beeper_start
        return math.inf, None

    def _render_to(self, t: float, inclusive: bool) -> None:
        gen = self._gen
        if gen is None or self._unplugged_until is not None:
            return
        t += self._off
        if inclusive:
            k_target = int(math.floor((t - gen.t0) * gen.fs + 1e-6)) + 1
            # lazily: generate only when a stream block or an epoch can be completed (the
            # samples come out the same whenever they are generated)
            if k_target < self._need_k:
                return
        else:
            k_target = gen.k_of(t)
        scale = np.float32(1000.0 / self._nv)
        limit = ADC_FULL_SCALE / float(scale)
        pre = self._pre_n
        scratch = self._scratch
        while gen.next_k < k_target:
            k0 = gen.next_k
            n = min(MAX_PIECE, k_target - k0)
            uv = gen.render(k0, n, scratch[:, :n])  # microvolts, in a reused buffer
            mx, mn = float(_MAX(uv, axis=None)), float(_MIN(uv, axis=None))
            uv *= scale
            saturated = mx >= limit or mn <= -limit
            if saturated:  # (within the limits the rounded counts are within full scale)
                np.rint(uv, out=uv)
                np.clip(uv, -ADC_FULL_SCALE, ADC_FULL_SCALE, out=uv)
            if saturated != self._saturated:
                self._saturated = saturated
                self._dirty = True
            keep = min(self._stream_k, k0 + n - pre)
            for p in self._pending:
                if p.k - pre < keep:
                    keep = p.k - pre
            # the ADC counts, rounded straight into the history
            np.rint(uv, out=self._hist.reserve(n, keep), casting="unsafe")
            self._emit_stream(gen)
            if self._pending:
                self._emit_epochs(gen)
        self._update_need()

    def _update_need(self) -> None:
        """The first sample whose generation completes an epoch or a stream block."""
        need = min([p.k + self._post_n for p in self._pending], default=math.inf)
        acq = self._acq
        if acq is not None and acq.stream_enabled:
            need = min(need, self._stream_k + self._stream_raw)
        self._need_k = need

    # ------------------------------------------------------------------ periodic items

    def _heartbeat(self, t: float) -> None:
        self._queue(t, BoardHeartbeat(board_time_us=self._us(t), counter=self._hb_counter))
        self._hb_counter = (self._hb_counter + 1) & 0xFFFFFFFF
        self._next_hb += HEARTBEAT_PERIOD_S

    def _periodic_status(self, t: float) -> None:
        self._send_status(t)
        self._next_status += STATUS_PERIOD_S

    def _send_status(self, t: float) -> None:
        faults = self._faults()
        stim = self.stimulating
        age = 0xFFFFFFFF if self._last_host_hb is None else min(int((t - self._last_host_hb) * 1000), 0xFFFFFFFF)
        self._queue(t, BoardStatus(
            board_time_us=self._us(t), faults=faults, stimulating=stim,
            host_heartbeat_age_ms=max(age, 0), uptime_s=int(t),
        ))
        self._watchdog_flag = False  # reported once
        self._sent_state = (int(self._faults()), stim)

    def _check_status(self, t: float) -> None:
        self._dirty = False
        if self._unplugged_until is not None:
            return
        state = (int(self._faults()), self.stimulating)
        if state != self._sent_state:
            self._send_status(t)

    def _faults(self) -> Fault:
        f = Fault.NONE
        if not self.patient.lead_off.isdisjoint(EMG_LEAD_ELECTRODES):
            f |= Fault.LEAD_OFF
        if self._compliance:
            f |= Fault.COMPLIANCE_LIMIT
        if self._saturated:
            f |= Fault.ADC_SATURATION
        if self._over_current:
            f |= Fault.OVER_CURRENT
        if self._watchdog_flag:
            f |= Fault.WATCHDOG
        if self._host_silent:
            f |= Fault.HOST_SILENT
        if self._beeper:
            f |= Fault.BACKUP_BEEPER
        if self._internal:
            f |= Fault.INTERNAL
        return f

    # ------------------------------------------------------------------ safety

    def _host_went_silent(self, t: float) -> None:
        self._host_silent = True
        self._stop_all()

    def _beeper_start(self, t: float) -> None:
        self._beeper = True
        self.beeper_history.append((t + self._off, True))

    def _stop_all(self) -> None:
        for st in self._outputs.values():
            st.mode = StimMode.STOP
            st.next_t = math.inf

    # ------------------------------------------------------------------ stimulation

    def _continuous_pulse_action(self, output: Output) -> Callable[[float], None]:
        def continuous_pulse(t: float) -> None:
            self._continuous_pulse(t, output)
        return continuous_pulse

    def _continuous_pulse(self, t: float, output: Output) -> None:
        st = self._outputs[output]
        self._pulse(t, output, st.current_uA, st.pulse_width_us, st.token)
        st.next_t = t + st.period_s

    def _pulse(self, t: float, output: Output, current_uA: int, pw_us: int, token: int | None = None) -> None:
        # one output delivers one pulse at a time: a single pulse asked for during a pulse
        # of the continuous train follows it (PROTOCOL.md section 12.4, pulse_overlap)
        t = max(t, self._pulse_end.get(output, -math.inf))
        gen = self._gen
        if gen is not None:
            k = max(gen.k_of(t + self._off), gen.next_k)
            if gen.t_of(k) - self._off < t - 1e-9:
                k += 1
            t_onset = gen.t_of(k) - self._off
            fs = gen.fs
        else:
            k, t_onset, fs = 0, t, 20000
        if self._last_host_hb is not None and t_onset > self._last_host_hb + HOST_SILENT_S + 1e-9:
            return  # the sample grid moved it past the watchdog's deadline: the output stops first
        self._pulse_end[output] = t_onset + max(pw_us, 1) / 1e6
        out = self.patient.stimulate(t_onset + self._off, output, current_uA, pw_us, fs)
        self._stim_counter = (self._stim_counter + 1) & 0xFFFFFFFF
        self._compliance = out.compliance_limited
        self.truth.append(StimTruth(
            t=t_onset + self._off, stim_counter=self._stim_counter, output=output, target=out.target,
            set_uA=current_uA, delivered_uA=out.delivered_uA, amplitude_uV=out.amplitude_uV,
            latency_ms=out.latency_ms, onset_ms=out.onset_ms,
        ))
        if gen is None:
            return
        gen.add_overlay(k, out.overlay)
        self._pending.append(_Pending(k, t_onset, self._stim_counter, output, current_uA, out.delivered_uA, pw_us,
                                      token))
        self._update_need()

    # ------------------------------------------------------------------ acquisition output

    @property
    def _pre(self) -> int:
        return self._pre_n

    def _emit_epochs(self, gen: EmgGenerator) -> None:
        if not self._pending:
            return
        end = self._hist.end
        rows = self._rows
        still = []
        for p in self._pending:
            if p.k + self._post_n > end:
                still.append(p)
                continue
            a = max(p.k - self._pre_n, self._hist.start, 0)
            samples = self._hist.get(a, p.k + self._post_n)[rows].copy()
            self._queue(gen.t_of(p.k + self._post_n) - self._off, StimEpoch(
                board_time_us=self._us(p.t), stim_counter=p.counter, output=p.output,
                set_current_uA=p.set_uA, delivered_current_uA=p.delivered_uA, pulse_width_us=p.pulse_width_us,
                sample_rate_hz=gen.fs, pre_samples=p.k - a, nv_per_count=self._nv, samples=samples,
                config_token=p.token,
            ))
        self._pending = still

    def _emit_stream(self, gen: EmgGenerator) -> None:
        acq = self._acq
        end = self._hist.end
        if acq is None or not acq.stream_enabled:
            self._stream_k = end
            return
        dec = acq.stream_decimation
        raw = acq.stream_block_samples * dec
        k = self._stream_k
        blocks = (end - k) // raw
        if blocks <= 0:
            return
        # one copy of every complete block, block-major: each block's samples contiguous
        rows = self._rows
        x = self._hist.get(k, k + blocks * raw)
        if len(rows) != x.shape[0]:
            x = x[rows]
        nrows = x.shape[0]
        if dec > 1:
            x = np.rint(x.reshape(nrows, blocks, -1, dec).mean(axis=3)).astype(np.int32)
        x = np.ascontiguousarray(x.reshape(nrows, blocks, -1).transpose(1, 0, 2))
        t0, fs, off, nv, rate = gen.t0, gen.fs, self._off, self._nv, gen.fs // dec
        out = self._out
        order = self._out_order
        for i in range(blocks):
            out.append((t0 + (k + raw) / fs - off, order, EmgBlock(
                board_time_us=max(int(round((t0 + k / fs - off) * 1e6)), 0), first_sample=k // dec,
                sample_rate_hz=rate, nv_per_count=nv, samples=x[i],
            )))
            order += 1
            k += raw
        self._out_order = order
        self._stream_k = k

    # ------------------------------------------------------------------ host messages

    def _handle(self, seq: int, msg: object) -> None:
        handler = self._handler_table.get(type(msg))
        if handler is None:
            self._nack(seq, NackReason.UNKNOWN_MESSAGE, f"{type(msg).__name__} is not a host message")
            return
        handler(seq, msg)

    def _handlers(self) -> dict[type, Callable[[int, Any], None]]:
        return {
            HostHeartbeat: self._on_host_heartbeat,
            Hello: self._on_hello,
            ConfigureAcquisition: self._on_configure,
            Stimulate: self._on_stimulate,
            ImpedanceRequest: self._on_impedance_request,
            SimControl: self._on_sim_control,
        }

    def _on_host_heartbeat(self, seq: int, msg: HostHeartbeat) -> None:
        self._last_host_hb = self._t
        if self._host_silent or self._beeper:
            if self._beeper:
                self.beeper_history.append((self._t + self._off, False))
            self._host_silent = False
            self._beeper = False
            self._check_status(self._t)

    def _on_hello(self, seq: int, msg: Hello) -> None:
        if msg.protocol_version != PROTOCOL_VERSION:
            self._nack(seq, NackReason.UNSUPPORTED_VERSION,
                       f"protocol_version={msg.protocol_version} not supported; this board speaks {PROTOCOL_VERSION}")
        else:
            self._queue(self._t, self.capabilities)

    def _on_configure(self, seq: int, msg: ConfigureAcquisition) -> None:
        problem = self._check_acquisition(msg)
        if problem:
            self._nack(seq, NackReason.OUT_OF_RANGE, problem)
            return
        self._configure(msg)
        self._ack(seq)

    def _on_stimulate(self, seq: int, msg: Stimulate) -> None:
        reason, problem = self._check_stimulate(msg)
        if problem:
            self._nack(seq, reason, problem)
            return
        self._stimulate(msg)
        self._ack(seq)
        self._check_status(self._t)

    def _on_impedance_request(self, seq: int, msg: ImpedanceRequest) -> None:
        if self._impedance_due is not None:
            self._nack(seq, NackReason.BUSY, "an impedance measurement is already running")
            return
        self._impedance_due = self._t + IMPEDANCE_TIME_S
        self._ack(seq)

    def _on_sim_control(self, seq: int, msg: SimControl) -> None:
        try:
            args = json.loads(msg.args_json or "{}")
        except json.JSONDecodeError as exc:
            self._nack(seq, NackReason.MALFORMED, f"SimControl {msg.command}: args_json is not JSON ({exc.msg})")
            return
        if not isinstance(args, dict):
            self._nack(seq, NackReason.MALFORMED, f"SimControl {msg.command}: args_json must be a JSON object")
            return
        try:
            self._apply_control(msg.command, args)
        except ControlError as exc:
            self._nack(seq, exc.reason, str(exc))
            return
        self._ack(seq)

    def _check_acquisition(self, m: ConfigureAcquisition) -> str:
        caps = self.capabilities
        if m.sample_rate_hz not in caps.sample_rates_hz:
            rates = ", ".join(map(str, caps.sample_rates_hz))
            return f"sample_rate_hz={m.sample_rate_hz} not supported; one of {rates} Hz"
        if not (1 <= m.channel_mask <= (1 << caps.channels) - 1):
            return f"channel_mask={m.channel_mask} out of range 1-{(1 << caps.channels) - 1}"
        checks = (
            ("gain", m.gain, 1, 100, ""),
            ("stream_block_samples", m.stream_block_samples, 1, 4096, " samples"),
            ("stream_decimation", m.stream_decimation, 1, 100, ""),
            ("epoch_pre_ms", m.epoch_pre_ms, 0, 100, " ms"),
            ("epoch_post_ms", m.epoch_post_ms, 1, 200, " ms"),
        )
        for name, value, lo, hi, unit in checks:
            if not (lo <= value <= hi):
                return f"{name}={value} out of range {lo}-{hi}{unit}"
        if m.sample_rate_hz % m.stream_decimation:
            return f"stream_decimation={m.stream_decimation} must divide sample_rate_hz={m.sample_rate_hz}"
        return ""

    def _configure(self, m: ConfigureAcquisition) -> None:
        if m == self._acq:
            return
        self._acq = m
        self._nv = max(1, int(round(100.0 / m.gain)))
        self._rows = [ch for ch in range(self.capabilities.channels) if m.channel_mask >> ch & 1]
        self._pre_n = int(round(m.epoch_pre_ms * m.sample_rate_hz / 1000))
        self._post_n = int(round(m.epoch_post_ms * m.sample_rate_hz / 1000))
        t0 = self._t + self._off
        if self._gen is None:
            self._gen = EmgGenerator(self.patient, m.sample_rate_hz, t0)
        else:
            self._gen.configure(m.sample_rate_hz, t0)
        self._hist.reset(0)
        self._stream_k = 0
        self._stream_raw = m.stream_block_samples * m.stream_decimation
        self._pending = []
        self._update_need()

    def _check_stimulate(self, m: Stimulate) -> tuple[NackReason, str]:
        caps = self.capabilities
        if m.output not in caps.outputs:
            return NackReason.OUT_OF_RANGE, f"output={int(m.output)} not on this board"
        if m.mode == StimMode.STOP:
            return NackReason.OUT_OF_RANGE, ""
        if not (0 <= m.current_uA <= caps.max_current_uA):
            return NackReason.OUT_OF_RANGE, f"current_uA={m.current_uA} out of range 0-{caps.max_current_uA} uA"
        if not (caps.min_pulse_width_us <= m.pulse_width_us <= caps.max_pulse_width_us):
            return NackReason.OUT_OF_RANGE, (f"pulse_width_us={m.pulse_width_us} out of range "
                                             f"{caps.min_pulse_width_us}-{caps.max_pulse_width_us} us")
        if m.mode == StimMode.CONTINUOUS and not (caps.min_rate_mHz <= m.rate_mHz <= caps.max_rate_mHz):
            return NackReason.OUT_OF_RANGE, (f"rate_mHz={m.rate_mHz} out of range "
                                             f"{caps.min_rate_mHz}-{caps.max_rate_mHz} mHz")
        if self._over_current:
            return NackReason.BAD_STATE, "over-current trip latched: send Stimulate STOP first"
        if self._last_host_hb is None:
            return NackReason.BAD_STATE, "no HostHeartbeat received yet: the host watchdog is expired"
        if self._host_silent:
            return NackReason.BAD_STATE, "host heartbeat was missing (HOST_SILENT): send HostHeartbeat first"
        if self._acq is None:
            return NackReason.BAD_STATE, "acquisition not configured: send ConfigureAcquisition first"
        return NackReason.OUT_OF_RANGE, ""

    def _stimulate(self, m: Stimulate) -> None:
        st = self._outputs[m.output]
        if m.mode == StimMode.STOP:
            st.mode, st.next_t = StimMode.STOP, math.inf
            self._over_current = False
            return
        if m.mode == StimMode.SINGLE:
            self._pulse(self._t, m.output, m.current_uA, m.pulse_width_us, m.config_token)
            return
        period = 1000.0 / m.rate_mHz
        running = st.mode == StimMode.CONTINUOUS
        # all settings and the token change together, between two pulses
        st.mode, st.current_uA, st.pulse_width_us = StimMode.CONTINUOUS, m.current_uA, m.pulse_width_us
        st.period_s, st.token = period, m.config_token
        st.next_t = min(st.next_t, self._t + period) if running else self._t

    def _impedance_done(self, t: float) -> None:
        self._impedance_due = None
        values = []
        for e in Electrode:
            if e in self.patient.lead_off:
                values.append((e, -1))
            else:
                z = self.patient.impedance_ohm[e] * (1.0 + float(self._rng.normal(0.0, 0.01)))
                values.append((e, int(round(min(z, 2**31 - 1)))))
        self._queue(t, ImpedanceResult(board_time_us=self._us(t), impedances_ohm=tuple(values)))

    # ------------------------------------------------------------------ output queue

    def _us(self, t: float) -> int:
        return max(int(round(t * 1e6)), 0)

    def _queue(self, t: float, message: object) -> None:
        self._out.append((t, self._out_order, message))
        self._out_order += 1

    def _ack(self, seq: int) -> None:
        self._queue(self._t, Ack(seq=seq))

    def _nack(self, seq: int, reason: NackReason, detail: str) -> None:
        self.counters["nacks"] += 1
        detail = detail.encode("utf-8")[:255].decode("utf-8", "ignore")
        self._queue(self._t, Nack(seq=seq, reason=reason, detail=detail))

    def _drain(self) -> bytes:
        if not self._out:
            return b""
        items = self._out
        self._out = []
        # queued in ``order``: a stable sort on the time alone gives the (time, order) order
        items.sort(key=_item_time)
        parts = []
        encode = codec.encode
        seq = self._seq
        n_frames = 0
        for _t, _o, msg in items:
            if type(msg) is _Raw:
                parts.append(msg.data)
                continue
            frame = encode(msg, seq)
            seq = (seq + 1) & 0xFFFFFFFF
            n_frames += 1
            if self._corrupt_frames > 0:
                self._corrupt_frames -= 1
                frame = frame[:-1] + bytes([frame[-1] ^ 0xFF])
            parts.append(frame)
        self._seq = seq
        self.counters["frames_out"] += n_frames
        data = b"".join(parts)
        if self._muted_until is not None or self._unplugged_until is not None:
            return b""
        self.counters["bytes_out"] += len(data)
        return data

    # ------------------------------------------------------------------ scenario

    def _do_world_event(self, t: float) -> None:
        ev = self._events[self._event_i]
        self._event_i += 1
        try:
            self._apply_control(ev.command, dict(ev.args))
        except ControlError as exc:
            # a refused world event must not stop the board: it is kept for whoever runs it
            where = getattr(self.scenario, "path", "scenario")
            self.event_errors.append(f"{where}: world event at t={ev.t:g} s ({ev.command}): {exc}")

    # ------------------------------------------------------------------ controls

    def _control_table(self) -> dict[str, Callable[..., None]]:
        return {
            "probe": self._c_probe,
            "aps_attach": self._c_aps_attach,
            "aps_detach": self._c_aps_detach,
            "aps_contact": self._c_aps_contact,
            "traction": self._c_traction,
            "release": self._c_release,
            "transect": self._c_transect,
            "tube": self._c_tube,
            "nmb": self._c_nmb,
            "cautery": self._c_cautery,
            "lead": self._c_lead,
            "lead_off": lambda electrode: self._c_lead(electrode, "off"),
            "lead_on": lambda electrode: self._c_lead(electrode, "on"),
            "irritation": self._c_irritation,
            "output": self._c_output,
            "impedance": self._c_impedance,
            "fault": self._c_fault,
            "reset": self._c_reset,
            "unplug": self._c_unplug,
            "mute": self._c_mute,
            "garbage": self._c_garbage,
            "corrupt": self._c_corrupt,
        }

    @classmethod
    def control_table_signatures(cls) -> dict[str, Mapping[str, inspect.Parameter]]:
        """Every control and its accepted arguments (for checking scenario files)."""
        blank = cls.__new__(cls)
        return {name: inspect.signature(fn).parameters for name, fn in blank._control_table().items()}

    def _apply_control(self, command: str, args: dict[str, Any]) -> None:
        handler = self._controls.get(str(command))
        if handler is None:
            raise ControlError(f"unknown control {command!r}; known: {', '.join(sorted(self._controls))}")
        sig = inspect.signature(handler)
        params = sig.parameters
        unknown = [a for a in args if a not in params]
        if unknown:
            raise ControlError(
                f"control {command}: unknown argument {unknown[0]!r}; accepted: {', '.join(params) or 'none'}",
                NackReason.MALFORMED)
        missing = [n for n, p in params.items() if p.default is inspect.Parameter.empty and n not in args]
        if missing:
            raise ControlError(f"control {command}: missing argument {missing[0]!r}", NackReason.MALFORMED)
        try:
            handler(**args)
        except PhysiologyError as exc:
            raise ControlError(f"control {command}: {exc}") from None
        except ControlError as exc:
            raise ControlError(f"control {command}: {exc}", exc.reason) from None
        self._check_status(self._t)

    def _c_probe(self, contact: str, site: str | None = None, side: str | None = None,
                 position: float | None = None, position_mm: float | None = None, distance_mm: float = 0.0) -> None:
        if position_mm is not None:
            if position is not None:
                raise ControlError("give position or position_mm, not both", NackReason.MALFORMED)
            try:
                position = float(position_mm) / NERVE_EXPOSED_MM
            except (TypeError, ValueError):
                raise ControlError(f"position_mm must be a number (got {position_mm!r})") from None
        self.patient.set_probe(contact, site, side, position, distance_mm)

    def _c_aps_attach(self, side: str, position: float = 0.7) -> None:
        self.patient.attach_aps(side, position)

    def _c_aps_detach(self) -> None:
        self.patient.detach_aps()

    def _c_aps_contact(self, factor: float) -> None:
        self.patient.set_aps_contact(factor)

    def _c_traction(self, side: str, severity: float = 0.9, onset_s: float = 60.0, site: str = "RLN",
                    position: float = 0.1) -> None:
        self.patient.traction(self._st(), side, severity, onset_s, site, position)

    def _c_release(self, side: str, recovery_s: float = 1200.0, residual: float = 0.0) -> None:
        self.patient.release(self._st(), side, recovery_s, residual)

    def _c_transect(self, side: str, site: str = "RLN", position: float = 0.1) -> None:
        self.patient.transect(side, site, position)

    def _c_tube(self, left: float | None = None, right: float | None = None, over_s: float = 1.0) -> None:
        if left is None and right is None:
            raise ControlError("give left and/or right (recording factor 0-2)", NackReason.MALFORMED)
        self.patient.set_tube(self._st(), left, right, over_s)

    def _c_nmb(self, level: float, onset_s: float = 90.0) -> None:
        self.patient.set_nmb(self._st(), level, onset_s)

    def _c_cautery(self, duration_s: float = 2.0, rms_uV: float = 60000.0) -> None:
        duration_s = _duration("duration_s", duration_s, 600.0)
        gen = self._gen
        if gen is not None:
            gen.add_cautery(self._st(), duration_s, float(rms_uV))

    def _c_lead(self, electrode: str, state: str = "off") -> None:
        state = str(state).lower()
        if state not in ("off", "on"):
            raise ControlError(f"state must be off or on (got {state!r})")
        self.patient.set_lead(_electrode(electrode), state == "off")

    def _c_irritation(self, side: str, kind: str = "train", duration_s: float | None = None,
                      rate_hz: float | None = None, amplitude_uV: float | None = None) -> None:
        gen = self._gen
        if gen is None:
            # validate anyway; nothing to show before acquisition starts
            EmgGenerator(self.patient, 20000, self._st()).add_irritation(
                self._st(), side, kind, duration_s, rate_hz, amplitude_uV)
            return
        gen.add_irritation(self._st(), side, kind, duration_s, rate_hz, amplitude_uV)

    def _c_output(self, output: str, state: str = "ok", fraction: float = 0.3) -> None:
        self.patient.set_output(_output(output), state, fraction)

    def _c_impedance(self, electrode: str, ohm: float) -> None:
        self.patient.set_impedance(_electrode(electrode), ohm)

    def _c_fault(self, kind: str, state: str = "on") -> None:
        kind, state = str(kind).lower(), str(state).lower()
        if state not in ("on", "off"):
            raise ControlError(f"state must be on or off (got {state!r})")
        if kind == "over_current":
            if state == "on":
                self._over_current = True
                self._stop_all()
            else:
                self._over_current = False
        elif kind == "internal":
            self._internal = state == "on"
        else:
            raise ControlError(f"kind must be over_current or internal (got {kind!r})")

    def _c_reset(self) -> None:
        self._reset(watchdog=True)

    def _reset(self, watchdog: bool) -> None:
        self._out = []
        self._power_on(self._boot + self._t, watchdog=watchdog)

    def _c_unplug(self, duration_s: float = 2.0) -> None:
        duration_s = _duration("duration_s", duration_s)
        self._stop_all()
        self._out = []
        self._unplugged_until = self._boot + self._t + duration_s

    def _replug(self, t: float) -> None:
        self._t = t
        self._reset(watchdog=False)

    def _c_mute(self, duration_s: float = 1.0) -> None:
        self._muted_until = self._boot + self._t + _duration("duration_s", duration_s)

    def _unmute(self, t: float) -> None:
        lost = [item for item in self._out if item[0] < t and not isinstance(item[2], _Raw)]
        self._seq = (self._seq + len(lost)) & 0xFFFFFFFF  # sent into a dead line: the host sees a gap
        self._out = [item for item in self._out if item[0] >= t]
        self._muted_until = None

    def _c_garbage(self, n_bytes: int = 64) -> None:
        if not (isinstance(n_bytes, int) and 1 <= n_bytes <= 65536):
            raise ControlError(f"n_bytes={n_bytes!r} out of range 1-65536")
        self._queue(self._t, _Raw(bytes(self._rng.integers(0, 256, n_bytes, dtype=np.uint8))))

    def _c_corrupt(self, frames: int = 1) -> None:
        if not (isinstance(frames, int) and 1 <= frames <= 1000):
            raise ControlError(f"frames={frames!r} out of range 1-1000")
        self._corrupt_frames += frames

    def _st(self) -> float:
        """Scenario time now: the patient's time line (it survives board resets)."""
        return self._t + self._off
