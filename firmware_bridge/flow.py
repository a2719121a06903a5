"""Data-flow supervision: the link is healthy only when the data it promises arrives.

Owns: ``FlowSupervisor`` and ``FlowFinding``.
May import: the standard library and ``firmware_bridge.messages``.

Pure: no I/O, threads or clock; every call passes the host time ``now`` (seconds, the
link's clock). Not thread-safe: the engine calls it from its loop.

Heartbeats only prove that the board's firmware runs. A board whose large frames are
lost on a noisy USB line keeps its heartbeats and loses every stimulus epoch; a stalled
ADC keeps its status and sends no EMG. The supervisor is told what the current settings
promise (``acquisition``: the free-running EMG stream; ``output``: each output running
continuously and at which rate; the status period), is fed each arrival (``epoch``,
``emg``, ``status``) and answers ``check(now)`` with what is missing, in plain words:

- ``epochs:<OUTPUT>``: ``missing_epochs`` (2) consecutive expected stimulus epochs of a
  running output have not arrived: nothing for ``missing_epochs`` periods + ``margin_s``
  since the last one;
- ``epoch_loss:<OUTPUT>``: epochs arrive, but their board times show that ``loss_limit``
  (3) of the last ``loss_window`` (10) pulses' epochs were lost one at a time (a run of
  ``missing_epochs`` or more is an outage, named by the rule above, and starts the count
  afresh);
- ``emg``: no EmgBlock for one block interval + ``emg_stall_s`` (0.5 s);
- ``status``: no BoardStatus for its period + ``status_late_s`` (1 s).

No false alarms on start-up, rate changes or switching off: after any change of what is
expected (``reset``, ``acquisition``, ``output``), a stream is not judged before one
more period + margin (+ the epoch window) than the steady rule allows; an output
switched off is no longer expected at once; while the link is down (``suspend``)
nothing is expected. Calls that repeat the settings in force change nothing, so the
engine may call ``output``/``acquisition`` whenever it sends a command.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from firmware_bridge.messages import OUTPUT_WORDS, Output

DEFAULT_MARGIN_S = 0.08
MISSING_EPOCHS = 2
EMG_STALL_S = 0.5
STATUS_PERIOD_S = 1.0
STATUS_LATE_S = 1.0
LOSS_WINDOW = 10
LOSS_LIMIT = 3


def _per(rate_hz: float) -> str:
    if rate_hz >= 1:
        return f"{rate_hz:g} per second"
    return f"1 every {1.0 / rate_hz:g} s"


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:g} s"


@dataclass(frozen=True)
class FlowFinding:
    """Something the current settings promise that does not arrive.

    ``key`` is stable while the condition lasts (``epochs:APS``, ``epoch_loss:PROBE``,
    ``emg``, ``status``), so that the engine can raise and clear one alarm per key.
    ``missing_s``: seconds since the stream was last seen (or since it was expected).
    """

    key: str
    kind: str
    text: str
    missing_s: float
    expected: str
    output: Output | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form (journal, status)."""
        return {"key": self.key, "kind": self.kind, "text": self.text, "missing_s": round(self.missing_s, 3),
                "expected": self.expected, "output": self.output.name if self.output is not None else None}


class _Epochs:
    __slots__ = ("rate", "changed", "settled", "last", "onset", "slots", "arrived", "lost")

    def __init__(self, window: int) -> None:
        self.rate: float | None = None
        self.changed = 0.0
        self.settled = 0.0
        self.last: float | None = None  # host time of the last epoch since the change
        self.onset: int | None = None  # board time of the last epoch counted for losses
        self.slots: deque[int] = deque(maxlen=window)  # 1 received, 0 lost, oldest first
        self.arrived = 0
        self.lost = 0


class FlowSupervisor:
    """What should be arriving from the board, and what is missing (module docstring)."""

    def __init__(self, *, margin_s: float = DEFAULT_MARGIN_S, missing_epochs: int = MISSING_EPOCHS,
                 emg_stall_s: float = EMG_STALL_S, status_period_s: float = STATUS_PERIOD_S,
                 status_late_s: float = STATUS_LATE_S, loss_window: int = LOSS_WINDOW,
                 loss_limit: int = LOSS_LIMIT) -> None:
        checks = (("margin_s", margin_s, 0.0), ("emg_stall_s", emg_stall_s, 0.0),
                  ("status_period_s", status_period_s, 0.0), ("status_late_s", status_late_s, 0.0))
        for name, value, low in checks:
            if not value > low:
                raise ValueError(f"flow supervision: {name} must be > {low} s (got {value})")
        if missing_epochs < 1 or not 1 <= loss_limit <= loss_window:
            raise ValueError(f"flow supervision: missing_epochs >= 1 and 1 <= loss_limit <= loss_window "
                             f"(got {missing_epochs}, {loss_limit}, {loss_window})")
        self.margin_s = float(margin_s)
        self.missing_epochs = int(missing_epochs)
        self.emg_stall_s = float(emg_stall_s)
        self.status_period_s = float(status_period_s)
        self.status_late_s = float(status_late_s)
        self.loss_window = int(loss_window)
        self.loss_limit = int(loss_limit)
        self.active = False
        self._epochs = {o: _Epochs(self.loss_window) for o in Output}
        self._window_s = 0.06
        self._emg_block_s: float | None = None  # None: no stream expected
        self._emg_changed = 0.0
        self._emg_last: float | None = None
        self._status_changed = 0.0
        self._status_last: float | None = None

    # ------------------------------------------------------------------ what is promised

    def reset(self, now: float) -> None:
        """The link is (again) up, or the board restarted: every stream starts over, with
        its start-up grace, from ``now``."""
        self.active = True
        for e in self._epochs.values():
            self._changed(e, now, e.rate)
        self._emg_changed, self._emg_last = now, None
        self._status_changed, self._status_last = now, None

    def suspend(self, now: float) -> None:
        """The link is down (or the board refused): nothing is expected until ``reset``."""
        self.active = False

    def acquisition(self, now: float, *, stream_rate_hz: float | None, block_samples: int | None,
                    streaming: bool = True, epoch_window_s: float = 0.06) -> None:
        """The acquisition configuration in force: the free-running stream's rate (after
        decimation) and block size, and the stimulus epoch window (pre + post)."""
        block_s = None
        if streaming and stream_rate_hz and block_samples:
            block_s = float(block_samples) / float(stream_rate_hz)
        self._window_s = max(0.0, float(epoch_window_s))
        if block_s != self._emg_block_s:
            self._emg_block_s = block_s
            self._emg_changed, self._emg_last = now, None

    def output(self, now: float, output: Output, rate_hz: float | None) -> None:
        """``output`` now runs continuously at ``rate_hz`` (None or 0: it does not; single
        pulses are not expected)."""
        e = self._epochs[Output(output)]
        rate = float(rate_hz) if rate_hz and rate_hz > 0 else None
        if rate != e.rate:
            self._changed(e, now, rate)

    def _changed(self, e: _Epochs, now: float, rate: float | None) -> None:
        old = e.rate
        e.rate = rate
        e.changed = now
        e.last = None
        slowest = max(1.0 / r for r in (old, rate) if r) if (old or rate) else 0.0
        e.settled = now + self._window_s + slowest + self.margin_s  # epochs of the old settings are in by then
        e.onset = None
        e.slots.clear()

    # ------------------------------------------------------------------ what arrives

    def epoch(self, now: float, output: Output, board_time_us: int | None = None) -> None:
        """A stimulus epoch of ``output`` arrived (its pulse onset in board time)."""
        e = self._epochs[Output(output)]
        e.arrived += 1
        e.last = now
        if e.rate is None or board_time_us is None:
            return
        if now < e.settled:
            e.onset = None
            return
        if e.onset is not None:
            k = round((board_time_us - e.onset) / 1e6 * e.rate)
            missed = max(k - 1, 0)
            e.lost += missed
            if missed >= self.missing_epochs:
                e.slots.clear()  # an outage: the host-time rule named it; count afresh from here
            else:
                e.slots.extend([0] * missed)
            e.slots.append(1)
        e.onset = board_time_us

    def emg(self, now: float, board_time_us: int | None = None, samples: int = 0) -> None:
        """An EmgBlock arrived."""
        self._emg_last = now

    def status(self, now: float, board_time_us: int | None = None) -> None:
        """A BoardStatus arrived."""
        self._status_last = now

    # ------------------------------------------------------------------ what is missing

    def check(self, now: float) -> list[FlowFinding]:
        """What is missing at ``now`` (empty: everything promised arrives)."""
        if not self.active:
            return []
        found: list[FlowFinding] = []
        for out, e in self._epochs.items():
            found += self._check_epochs(now, out, e)
        found += self._check_emg(now)
        found += self._check_status(now)
        return found

    @staticmethod
    def _deadline(last: float | None, grace_end: float, steady_s: float) -> float:
        """The steady rule from the last arrival, never earlier than the same rule from the
        end of the grace after the last change (``grace_end``)."""
        start = grace_end + steady_s
        return max(last + steady_s if last is not None else start, start)

    def _check_epochs(self, now: float, out: Output, e: _Epochs) -> list[FlowFinding]:
        if e.rate is None:
            return []
        period = 1.0 / e.rate
        words, expected = OUTPUT_WORDS[out], _per(e.rate)
        found = []
        steady = self.missing_epochs * period + self.margin_s
        deadline = self._deadline(e.last, e.changed + self._window_s + period + self.margin_s, steady)
        if now >= deadline:
            gap = now - (e.last if e.last is not None else e.changed)
            found.append(FlowFinding(f"epochs:{out.name}", "epochs",
                                     f"no stimulus responses from {words} for {gap:.1f} s (expected {expected})",
                                     gap, expected, out))
        elif e.slots.count(0) >= self.loss_limit:
            lost = e.slots.count(0)
            found.append(FlowFinding(f"epoch_loss:{out.name}", "epoch_loss",
                                     f"stimulus responses from {words} are being lost: {lost} of the last "
                                     f"{len(e.slots)} missing (expected {expected})", 0.0, expected, out))
        return found

    def _check_emg(self, now: float) -> list[FlowFinding]:
        block_s = self._emg_block_s
        if block_s is None:
            return []
        steady = block_s + self.emg_stall_s
        last = self._emg_last
        if now < self._deadline(last, self._emg_changed + block_s + self.margin_s, steady):
            return []
        gap = now - (last if last is not None else self._emg_changed)
        expected = f"a block every {_ms(block_s)}"
        return [FlowFinding("emg", "emg", f"no EMG from the board for {gap:.1f} s (expected {expected})", gap,
                            expected)]

    def _check_status(self, now: float) -> list[FlowFinding]:
        steady = self.status_period_s + self.status_late_s
        last = self._status_last
        if now < self._deadline(last, self._status_changed + self.margin_s, steady):
            return []
        gap = now - (last if last is not None else self._status_changed)
        expected = f"every {_ms(self.status_period_s)}"
        return [FlowFinding("status", "status", f"no status from the board for {gap:.1f} s (expected {expected})",
                            gap, expected)]

    def snapshot(self, now: float) -> dict[str, Any]:
        """JSON-ready: what is expected, how long since each stream was seen, epochs lost."""
        outputs = {}
        for out, e in self._epochs.items():
            outputs[out.name] = {
                "rate_hz": e.rate, "epochs": e.arrived, "epochs_lost": e.lost,
                "since_last_s": round(now - e.last, 3) if e.last is not None else None,
            }
        return {
            "active": self.active,
            "outputs": outputs,
            "emg_block_s": self._emg_block_s,
            "emg_since_last_s": round(now - self._emg_last, 3) if self._emg_last is not None else None,
            "status_since_last_s": round(now - self._status_last, 3) if self._status_last is not None else None,
            "findings": [f.to_json() for f in self.check(now)],
        }


__all__ = ["FlowSupervisor", "FlowFinding"]
