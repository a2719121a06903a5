"""Audio backends: the loudspeaker behind a small interface.

Owns: ``AudioBackend`` (the interface), ``Mixer`` (pure mixing of the three layers),
``CaptureAudio`` (records what was played and when; used by tests and ``lnm simulate``)
and ``AplayAudio`` (the Raspberry Pi's ALSA output through a long-lived ``aplay``).
May import: the standard library, numpy, ``firmware_bridge.clock``.

Three layers are mixed into one mono stream:

| layer    | what                        | policy when busy (never blocks the caller)                      |
|----------|-----------------------------|-----------------------------------------------------------------|
| alarm    | alarm bursts, reminders     | one voice: a new sound replaces the one playing (5 ms fade)     |
| feedback | stimulus/response/no-current tones, mark, self-test | one playing + one pending: a newer tone replaces the pending one (the replaced one is counted in ``dropped_feedback``); the playing tone is never cut |
| emg      | free-running EMG stream     | FIFO of at most ``emg_max_lag_s`` (older samples dropped, counted); playback starts after ``emg_prefill_s`` is buffered; an empty FIFO plays silence |

``play``/``stop``/``feed`` only touch in-memory state under a short lock: the engine
never waits for the sound card. The sum is hard-limited to [-1, 1].

Failure reporting: every backend has ``failed`` / ``error`` and calls ``on_failure(msg)``
once per failure (and ``on_recovered()`` when a real device works again). The annunciator
polls ``failed`` and raises the ``audio_failure`` technical alarm, then sounds alarms on the
backup buzzer.

``AplayAudio`` runs ``aplay -t raw -f S16_LE -c 1 -r RATE -D DEVICE`` (from alsa-utils)
fed through a pipe by a writer thread that renders ``period_s`` chunks from the mixer.
The writer stays at most ``lead_s`` ahead of real time, so latency is about
``lead_s`` + the ALSA buffer (``buffer_s``). Failures detected: ``aplay`` missing or not
startable; ``aplay`` exiting (its last stderr line is reported); a write error (broken
pipe); a write that stalls longer than ``stall_s``. After a failure the writer retries
every ``retry_s``; once a restarted device has played for ``recover_s`` the failure is
cleared and ``on_recovered`` called.
"""  # noqa: E501 - the table above is read as a table

from __future__ import annotations

import abc
import shutil
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass
from collections.abc import Callable, Sequence

import numpy as np

from firmware_bridge.clock import Clock

ALARM = "alarm"
FEEDBACK = "feedback"
LAYERS = (ALARM, FEEDBACK)


def to_pcm16(samples: np.ndarray) -> bytes:
    """float [-1, 1] -> little-endian signed 16-bit PCM bytes."""
    x = np.clip(np.asarray(samples, dtype=np.float64), -1.0, 1.0)
    return np.round(x * 32767.0).astype("<i2").tobytes()


def _check_layer(layer: str) -> str:
    if layer not in LAYERS:
        raise ValueError(f"audio layer {layer!r}: choose one of {', '.join(LAYERS)}")
    return layer


class AudioBackend(abc.ABC):
    """What the annunciator needs from a loudspeaker."""

    rate: int
    renders_emg: bool = True  # False: the annunciator skips the EMG audio processing
    label: str = "loudspeaker"  # what the nurse reads in the self-test and the status

    def __init__(self) -> None:
        self._failed = False
        self._error: str | None = None
        self._fail_lock = threading.Lock()
        self.on_failure: Callable[[str], None] | None = None
        self.on_recovered: Callable[[], None] | None = None

    @abc.abstractmethod
    def play(self, layer: str, samples: np.ndarray, tag: str, gain: float = 1.0) -> None:
        """Start ``samples`` (float, at ``rate``) on ``layer``; returns at once."""

    @abc.abstractmethod
    def stop(self, layer: str) -> None:
        """Stop what plays on ``layer`` (with a short fade)."""

    @abc.abstractmethod
    def feed(self, samples: np.ndarray) -> None:
        """Append samples to the continuous EMG stream."""

    def close(self) -> None:  # noqa: B027 - optional: a backend with nothing to release keeps it
        """Release the device."""

    @property
    def failed(self) -> bool:
        return self._failed

    @property
    def error(self) -> str | None:
        return self._error

    def _report_failure(self, message: str) -> None:
        with self._fail_lock:
            first = not self._failed
            self._failed = True
            if first:  # keep the root cause while the failure lasts
                self._error = message
        if first and self.on_failure is not None:
            self.on_failure(message)

    def _report_recovered(self) -> None:
        with self._fail_lock:
            was = self._failed
            self._failed = False
        if was and self.on_recovered is not None:
            self.on_recovered()


# ----------------------------------------------------------------------------- mixer


class _Voice:
    __slots__ = ("samples", "pos", "tag", "fade")

    def __init__(self, samples: np.ndarray, tag: str) -> None:
        self.samples = samples
        self.pos = 0
        self.tag = tag
        self.fade: int | None = None  # remaining fade-out samples when stopping


class Mixer:
    """Mixes the alarm and feedback voices and the EMG stream (thread-safe, no I/O)."""

    def __init__(self, rate: int, emg_max_lag_s: float = 0.25, emg_prefill_s: float = 0.04,
                 fade_s: float = 0.005) -> None:
        self.rate = int(rate)
        self._lock = threading.Lock()
        self._alarm: _Voice | None = None
        self._old_alarms: list[_Voice] = []
        self._feedback: _Voice | None = None
        self._pending: _Voice | None = None
        self._emg: deque[np.ndarray] = deque()
        self._emg_len = 0
        self._emg_started = False
        self._emg_max = int(emg_max_lag_s * self.rate)
        self._emg_prefill = int(emg_prefill_s * self.rate)
        self._fade = max(1, int(fade_s * self.rate))
        self.dropped_feedback = 0
        self.dropped_emg_samples = 0
        self.emg_underruns = 0

    def play(self, layer: str, samples: np.ndarray, tag: str, gain: float = 1.0) -> None:
        v = _Voice(np.asarray(samples, dtype=np.float32) * np.float32(gain), tag)
        with self._lock:
            if _check_layer(layer) == ALARM:
                if self._alarm is not None:
                    self._alarm.fade = self._fade
                    self._old_alarms.append(self._alarm)
                self._alarm = v
            elif self._feedback is None:
                self._feedback = v
            else:
                if self._pending is not None:
                    self.dropped_feedback += 1
                self._pending = v

    def stop(self, layer: str) -> None:
        with self._lock:
            if _check_layer(layer) == ALARM:
                if self._alarm is not None:
                    self._alarm.fade = self._fade
                    self._old_alarms.append(self._alarm)
                    self._alarm = None
            else:
                if self._pending is not None:
                    self._pending = None
                if self._feedback is not None:
                    self._feedback.fade = self._fade

    def feed(self, samples: np.ndarray) -> None:
        x = np.asarray(samples, dtype=np.float32)
        if x.size == 0:
            return
        with self._lock:
            self._emg.append(x)
            self._emg_len += len(x)
            while self._emg_len > self._emg_max and self._emg:
                extra = self._emg_len - self._emg_max
                head = self._emg[0]
                if len(head) <= extra:
                    self._emg.popleft()
                    self._emg_len -= len(head)
                    self.dropped_emg_samples += len(head)
                else:
                    self._emg[0] = head[extra:]
                    self._emg_len -= extra
                    self.dropped_emg_samples += extra

    def busy(self, layer: str) -> bool:
        with self._lock:
            return (self._alarm if _check_layer(layer) == ALARM else self._feedback) is not None

    def _take(self, v: _Voice, out: np.ndarray) -> bool:
        """Add voice ``v`` into ``out``; True when it has finished."""
        n = len(out)
        chunk = v.samples[v.pos : v.pos + n]
        m = len(chunk)
        if v.fade is not None:
            m = min(m, v.fade)
            ramp = (v.fade - np.arange(m)) / self._fade
            out[:m] += chunk[:m] * ramp.astype(np.float32)
            v.fade -= m
            v.pos += m
            return v.fade <= 0 or v.pos >= len(v.samples)
        out[:m] += chunk
        v.pos += m
        return v.pos >= len(v.samples)

    def render(self, n: int) -> np.ndarray:
        out = np.zeros(n, dtype=np.float32)
        with self._lock:
            self._old_alarms = [v for v in self._old_alarms if not self._take(v, out)]
            if self._alarm is not None and self._take(self._alarm, out):
                self._alarm = None
            filled = 0
            while filled < n and (self._feedback is not None or self._pending is not None):
                if self._feedback is None:
                    self._feedback, self._pending = self._pending, None
                    continue
                part = np.zeros(n - filled, dtype=np.float32)
                before = self._feedback.pos
                done = self._take(self._feedback, part)
                used = self._feedback.pos - before
                out[filled:] += part
                filled += used
                if done:
                    self._feedback = None
                    if self._pending is None:
                        break
                elif used == 0:
                    break
            # EMG stream
            if not self._emg_started and self._emg_len >= self._emg_prefill:
                self._emg_started = True
            if self._emg_started:
                got = 0
                while got < n and self._emg:
                    head = self._emg[0]
                    take = min(len(head), n - got)
                    out[got : got + take] += head[:take]
                    got += take
                    self._emg_len -= take
                    if take == len(head):
                        self._emg.popleft()
                    else:
                        self._emg[0] = head[take:]
                if got < n:
                    self.emg_underruns += 1
                    self._emg_started = False
        np.clip(out, -1.0, 1.0, out=out)
        return out


# ----------------------------------------------------------------------------- capture


@dataclass(frozen=True)
class PlayedSound:
    """One sound a simulated backend was told to play (its recorded history)."""

    t: float  # clock time play() was called
    layer: str
    tag: str
    gain: float
    duration_s: float
    samples: np.ndarray | None  # gain applied; None when not kept


class CaptureAudio(AudioBackend):
    """Records what it was told to play, with clock timestamps (no sound card).

    ``keep_samples`` keeps every played array (tests); ``lnm simulate`` turns it off so
    memory stays flat over a long case. ``process_emg`` (default: ``keep_samples``) says
    whether the annunciator should synthesise the EMG audio at all: a faster-than-real-time
    simulation has nobody listening and skips that work. ``fail(message)`` simulates a
    device failure and ``recover()`` its return; a failed capture records nothing, like a
    dead speaker.
    """

    label = "simulated loudspeaker (no sound card: sounds are recorded, not heard)"

    def __init__(self, clock: Clock, rate: int = 48000, keep_samples: bool = True,
                 max_records: int = 100000, process_emg: bool | None = None) -> None:
        super().__init__()
        self.clock = clock
        self.rate = int(rate)
        self.keep_samples = keep_samples
        self.renders_emg = keep_samples if process_emg is None else bool(process_emg)
        self.played: deque[PlayedSound] = deque(maxlen=max_records)
        self.stops: deque[tuple[float, str]] = deque(maxlen=max_records)
        self.emg_samples = 0
        self.emg_blocks: deque[tuple[float, int, float]] = deque(maxlen=10000)  # (t, n, peak)
        self.closed = False

    def play(self, layer: str, samples: np.ndarray, tag: str, gain: float = 1.0) -> None:
        _check_layer(layer)
        if self._failed or self.closed:
            return
        x = np.asarray(samples, dtype=np.float32)
        self.played.append(PlayedSound(
            self.clock.now(), layer, tag, float(gain), len(x) / self.rate,
            (x * np.float32(gain)) if self.keep_samples else None,
        ))

    def stop(self, layer: str) -> None:
        _check_layer(layer)
        if not self._failed and not self.closed:
            self.stops.append((self.clock.now(), layer))

    def feed(self, samples: np.ndarray) -> None:
        if self._failed or self.closed:
            return
        x = np.asarray(samples)
        self.emg_samples += len(x)
        self.emg_blocks.append((self.clock.now(), len(x), float(np.max(np.abs(x))) if len(x) else 0.0))

    def close(self) -> None:
        self.closed = True

    def fail(self, message: str = "simulated audio device failure") -> None:
        self._report_failure(message)

    def recover(self) -> None:
        self._report_recovered()

    def tagged(self, prefix: str) -> list[PlayedSound]:
        return [p for p in self.played if p.tag.startswith(prefix)]


# ----------------------------------------------------------------------------- ALSA


def aplay_command(device: str, rate: int, buffer_s: float, executable: str = "aplay") -> list[str]:
    """The ``aplay`` command line that plays raw 16-bit mono samples on ``device``."""
    return [
        executable, "-q", "-t", "raw", "-f", "S16_LE", "-c", "1", "-r", str(int(rate)),
        "-D", device, f"--buffer-time={int(buffer_s * 1e6)}",
    ]


def aplay_available(executable: str = "aplay") -> str | None:
    """None if ``aplay`` can be found, else a message saying what to install."""
    if shutil.which(executable) is None:
        return f"{executable} not found: install the alsa-utils package"
    return None


class AplayAudio(AudioBackend):
    """The loudspeaker through a long-lived ``aplay`` fed from a writer thread."""

    @property
    def label(self) -> str:  # type: ignore[override]
        return f"loudspeaker (ALSA device {self.device})"

    def __init__(
        self,
        device: str = "default",
        rate: int = 48000,
        *,
        command: Sequence[str] | None = None,
        period_s: float = 0.020,
        lead_s: float = 0.060,
        buffer_s: float = 0.080,
        retry_s: float = 5.0,
        recover_s: float = 2.0,
        stall_s: float = 1.0,
        on_failure: Callable[[str], None] | None = None,
        on_recovered: Callable[[], None] | None = None,
        start: bool = True,
    ) -> None:
        super().__init__()
        self.rate = int(rate)
        self.device = device
        self.command = list(command) if command else aplay_command(device, rate, buffer_s)
        self.period = max(1, int(period_s * self.rate))
        self.lead_s = float(lead_s)
        self.retry_s = float(retry_s)
        self.recover_s = float(recover_s)
        self.stall_s = float(stall_s)
        self.on_failure = on_failure
        self.on_recovered = on_recovered
        self.mixer = Mixer(self.rate)
        self._proc: subprocess.Popen | None = None
        self._stderr_tail: deque[str] = deque(maxlen=5)
        self._stop = threading.Event()
        self._progress = time.monotonic()
        self._in_write = False
        self.frames_written = 0
        self.starts = 0
        self._thread = threading.Thread(target=self._run, name="lnm-audio-writer", daemon=True)
        if start:
            self._thread.start()

    # interface
    def play(self, layer: str, samples: np.ndarray, tag: str, gain: float = 1.0) -> None:
        self.mixer.play(layer, samples, tag, gain)

    def stop(self, layer: str) -> None:
        self.mixer.stop(layer)

    def feed(self, samples: np.ndarray) -> None:
        self.mixer.feed(samples)

    @property
    def failed(self) -> bool:
        if (
            not self._failed
            and self._in_write
            and time.monotonic() - self._progress > self.stall_s
        ):
            self._report_failure(f"audio output stalled: {self.command[0]} accepted no data for "
                                 f"more than {self.stall_s:g} s")
            proc = self._proc
            if proc is not None:  # unblock the writer; it restarts the device after retry_s
                try:
                    proc.kill()
                except OSError:
                    pass
        return self._failed

    def close(self) -> None:
        self._stop.set()
        self._kill()
        if self._thread.is_alive():
            self._thread.join(timeout=2.0)

    # writer thread
    def _spawn(self) -> bool:
        try:
            proc = subprocess.Popen(
                self.command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE, close_fds=True,
            )
        except FileNotFoundError:
            self._report_failure(f"{self.command[0]} not found: install the alsa-utils package")
            return False
        except OSError as exc:
            self._report_failure(f"cannot start {self.command[0]}: {exc.strerror or exc}")
            return False
        try:  # keep the pipe small so latency stays bounded (Linux only; harmless elsewhere)
            import fcntl

            fcntl.fcntl(proc.stdin.fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), 8192)  # type: ignore[union-attr]
        except (ImportError, OSError):
            pass
        self._stderr_tail.clear()
        threading.Thread(target=self._read_stderr, args=(proc,), name="lnm-audio-stderr",
                         daemon=True).start()
        self._proc = proc
        self.starts += 1
        return True

    def _read_stderr(self, proc: subprocess.Popen) -> None:
        stream = proc.stderr
        if stream is None:
            return
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").strip()
            if line:
                self._stderr_tail.append(line)

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        # End the process first: a writer blocked on a full pipe is released by the
        # broken pipe (closing stdin first would wait for that writer's buffer lock).
        try:
            proc.terminate()
            proc.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            try:
                proc.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                pass
        except OSError:
            pass
        try:
            if proc.stdin:
                proc.stdin.close()
        except (OSError, ValueError):
            pass

    def _exit_message(self, proc: subprocess.Popen) -> str:
        try:
            proc.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            pass
        time.sleep(0.05)  # let the stderr reader catch the last line
        tail = self._stderr_tail[-1] if self._stderr_tail else "no message"
        return f"{self.command[0]} exited with status {proc.returncode}: {tail}"

    def _run(self) -> None:
        started = time.monotonic()
        written = 0
        while not self._stop.is_set():
            if self._proc is None:
                if not self._spawn():
                    self._stop.wait(self.retry_s)
                    continue
                started = time.monotonic()
                written = 0
            proc = self._proc
            if proc is None:
                continue
            if proc.poll() is not None:
                self._report_failure(self._exit_message(proc))
                self._kill()
                self._stop.wait(self.retry_s)
                continue
            data = to_pcm16(self.mixer.render(self.period))
            try:
                self._progress = time.monotonic()
                self._in_write = True
                proc.stdin.write(data)  # type: ignore[union-attr]
                proc.stdin.flush()  # type: ignore[union-attr]
            except (BrokenPipeError, OSError, ValueError) as exc:
                self._in_write = False
                if self._stop.is_set():
                    break
                try:  # a broken pipe usually means the device program just exited
                    proc.wait(timeout=0.5)
                except subprocess.TimeoutExpired:
                    pass
                message = self._exit_message(proc) if proc.returncode is not None else (
                    f"writing to {self.command[0]} failed: {exc}")
                self._report_failure(message)
                self._kill()
                self._stop.wait(self.retry_s)
                continue
            self._in_write = False
            self._progress = time.monotonic()
            written += self.period
            self.frames_written += self.period
            elapsed = time.monotonic() - started
            if self._failed and elapsed >= self.recover_s and proc.poll() is None:
                self._report_recovered()
            ahead = written / self.rate - elapsed
            if ahead > self.lead_s:
                self._stop.wait(ahead - self.lead_s)
        self._in_write = False


__all__ = [
    "ALARM",
    "FEEDBACK",
    "AplayAudio",
    "AudioBackend",
    "CaptureAudio",
    "Mixer",
    "PlayedSound",
    "aplay_available",
    "aplay_command",
    "to_pcm16",
]
