"""Benchmark of the board link over a pty: throughput, losses, round trips, host CPU.

A board process streams 2 channels of continuous EMG at 20 kHz (EmgBlock, 400 samples
per block) plus a stimulus epoch (StimEpoch, 60 ms x 2 channels) for every pulse of the
continuous vagal electrode at 30 Hz, over a pty, for at least 60 s of signal. The host
(this process) reads it through ``BoardLink`` and meanwhile sends a command every 100 ms
and times its Ack (round trip). Host CPU (``time.process_time`` of this process, i.e.
the link's reader and supervisor threads plus the light consumer) is divided by the
seconds of signal received.

The board process is ``lnm board-sim --pty`` (the virtual board) when it is available
(``--board board-sim``), otherwise a minimal streaming board built into this file
(``--board builtin``: pure numpy noise and a synthetic response, the real codec, pacing
to real time times ``--speed``). ``--board auto`` (default) tries the virtual board first.

Last line:
``LINK frames=N lost=N corrupt=N rtt_median_ms=X rtt_p99_ms=X cpu_per_signal_s=X``
Targets: nothing lost or corrupt, rtt p99 < 5 ms, cpu_per_signal_s < 0.05.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import select
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from firmware_bridge.clock import MonotonicClock  # noqa: E402
from firmware_bridge.codec import Decoder, encode  # noqa: E402
from firmware_bridge.link import BoardLink, LinkError  # noqa: E402
from firmware_bridge.messages import (  # noqa: E402
    Ack,
    BoardHeartbeat,
    BoardStatus,
    Capabilities,
    ConfigureAcquisition,
    EmgBlock,
    Fault,
    Hello,
    HostHeartbeat,
    Nack,
    NackReason,
    Output,
    StimEpoch,
    StimMode,
    Stimulate,
)

RATE = 20000
BLOCK = 400
EPOCH_HZ = 30
PRE_MS, POST_MS = 10, 50


# ----------------------------------------------------------------------------- builtin board


def serve_board(speed: float) -> int:
    """A minimal streaming board on a pty (prints the pty path, then streams)."""
    import pty
    import tty

    master, slave = pty.openpty()
    tty.setraw(slave)
    os.set_blocking(master, False)
    print(os.ttyname(slave), flush=True)
    rng = np.random.default_rng(1)
    nv_per_count = 100
    ring = rng.normal(0.0, 40.0, size=(2, RATE * 2)).round().astype(np.int32)  # ~4 uV rms noise
    n_epoch = (PRE_MS + POST_MS) * RATE // 1000
    pre = PRE_MS * RATE // 1000
    t_resp = np.arange(n_epoch - pre) / RATE
    envelope = np.exp(-((t_resp - 0.009) / 0.002) ** 2)
    resp = (8000 * np.sin(2 * np.pi * 250 * (t_resp - 0.007)) * envelope).astype(np.int32)
    dec = Decoder()
    seq = 0
    out = bytearray()
    t0 = time.monotonic()
    streaming = False
    block = BLOCK
    sent_samples = 0
    aps_period = 0.0
    next_pulse = 0.0
    pending_epochs: list[float] = []
    stim_counter = 0
    next_hb = 0.0
    hb = 0
    last_host_hb = None
    host_silent = False

    def now_s() -> float:
        return (time.monotonic() - t0) * speed

    def emit(message) -> None:
        nonlocal seq
        out.extend(encode(message, seq))
        seq = (seq + 1) & 0xFFFFFFFF

    parent = os.getppid()
    while os.getppid() == parent:  # the bench died without stopping us: stop too
        now = now_s()
        # host watchdog (safety contract): stop stimulation after 500 ms without heartbeat
        if last_host_hb is not None and now - last_host_hb >= 0.5 and not host_silent:
            host_silent = True
            aps_period = 0.0
            emit(BoardStatus(int(now * 1e6), Fault.HOST_SILENT, (), int((now - last_host_hb) * 1000), int(now)))
        if streaming:
            while (sent_samples + block) / RATE <= now:
                i = sent_samples % (ring.shape[1] - block)
                emit(EmgBlock(int(sent_samples * 1e6 / RATE), sent_samples, RATE, nv_per_count, ring[:, i : i + block]))
                sent_samples += block
        if aps_period:
            while next_pulse <= now:
                pending_epochs.append(next_pulse)
                next_pulse += aps_period
        while pending_epochs and pending_epochs[0] + POST_MS / 1000 <= now:
            onset = pending_epochs.pop(0)
            i = int(onset * RATE) % (ring.shape[1] - n_epoch)
            samples = ring[:, i : i + n_epoch].copy()
            samples[0, pre:] += resp
            samples[1, pre:] += resp // 2
            emit(StimEpoch(int(onset * 1e6), stim_counter, Output.APS, 1000, 985, 100, RATE, pre, nv_per_count,
                           samples))
            stim_counter += 1
        if now >= next_hb:
            emit(BoardHeartbeat(int(now * 1e6), hb))
            hb += 1
            next_hb += 0.1
        if out:
            try:
                n = os.write(master, out)
            except BlockingIOError:
                n = 0
            del out[:n]
        # sleep until the next thing is due, or a host frame arrives
        due = [next_hb, (sent_samples + block) / RATE if streaming else 1e18]
        if pending_epochs:
            due.append(pending_epochs[0] + POST_MS / 1000)
        elif aps_period:
            due.append(next_pulse + POST_MS / 1000)
        wait = max(0.0, (min(due) - now_s()) / speed)
        wlist = [master] if out else []
        r, _w, _x = select.select([master], wlist, [], min(wait, 0.05))
        if not r:
            continue
        try:
            data = os.read(master, 65536)
        except OSError:  # host closed its end: keep waiting (the host may reopen)
            time.sleep(0.01)
            continue
        for frame in dec.feed(data):
            m, hseq = frame.message, frame.seq
            if isinstance(m, HostHeartbeat):
                last_host_hb = now_s()
                host_silent = False
            elif isinstance(m, Hello):
                emit(Capabilities(1, "bench-board 1", "BENCH", simulated=True))
            elif isinstance(m, ConfigureAcquisition):
                streaming, block = m.stream_enabled, m.stream_block_samples
                sent_samples = int(now_s() * RATE) // block * block
                emit(Ack(hseq))
            elif isinstance(m, Stimulate):
                if m.mode is not StimMode.STOP and not 0 <= m.current_uA <= 10000:
                    emit(Nack(hseq, NackReason.OUT_OF_RANGE, "current_uA"))
                elif host_silent and m.mode is not StimMode.STOP:
                    emit(Nack(hseq, NackReason.BAD_STATE, "host silent"))
                else:
                    if m.output is Output.APS:
                        if m.mode is StimMode.CONTINUOUS:
                            aps_period = 1000.0 / m.rate_mHz
                            next_pulse = now_s() + aps_period
                        elif m.mode is StimMode.STOP:
                            aps_period = 0.0
                    emit(Ack(hseq))
            else:
                emit(Ack(hseq))
    return 0


# ----------------------------------------------------------------------------- host side


class Consumer:
    """Checks stream continuity; deliberately light (the link's cost is what we measure)."""

    def __init__(self) -> None:
        self.samples = 0
        self.blocks = 0
        self.epochs = 0
        self.emg_gaps = 0
        self.epoch_gaps = 0
        self.next_sample: int | None = None
        self.next_counter: int | None = None
        self.faults = 0
        self.lock = threading.Lock()

    def __call__(self, m) -> None:
        if type(m) is EmgBlock:
            if self.next_sample is not None and m.first_sample != self.next_sample:
                self.emg_gaps += 1
            n = m.samples.shape[1]
            self.next_sample = m.first_sample + n
            self.samples += n
            self.blocks += 1
        elif type(m) is StimEpoch:
            if self.next_counter is not None and m.stim_counter != self.next_counter:
                self.epoch_gaps += 1
            self.next_counter = m.stim_counter + 1
            self.epochs += 1
        elif type(m) is BoardStatus and m.faults:
            self.faults += 1


def start_board(kind: str, speed: float) -> tuple[subprocess.Popen, str, str]:
    if kind in ("auto", "board-sim") and importlib.util.find_spec("firmware_bridge.sim.cli") is not None:
        cmd = [sys.executable, "-c", "import sys; from app.cli import main; sys.exit(main())", "board-sim", "--pty"]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT)
        path = _read_pty_path(proc, 15.0)
        if path:
            return proc, path, "board-sim"
        proc.kill()
        proc.wait()
        if kind == "board-sim":
            raise SystemExit("bench/link.py: lnm board-sim --pty did not print a pty path")
        print("lnm board-sim --pty did not start; using the builtin streaming board", flush=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--serve-board", "--speed", str(speed)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    path = _read_pty_path(proc, 10.0)
    if not path:
        proc.kill()
        raise SystemExit("bench/link.py: the builtin board did not start")
    return proc, path, "builtin"


def _read_pty_path(proc: subprocess.Popen, timeout: float) -> str | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.stdout is None:
            return None
        r, _w, _x = select.select([proc.stdout], [], [], 0.2)
        if r:
            line = proc.stdout.readline()
            if not line:
                return None
            for word in line.split():
                if word.startswith("/dev/"):
                    return word
        elif proc.poll() is not None:
            return None
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="seconds of signal to stream (default 60)")
    ap.add_argument("--board", choices=("auto", "builtin", "board-sim"), default="auto")
    ap.add_argument("--speed", type=float, default=1.0, help="builtin board speed factor (default 1: real time)")
    ap.add_argument("--rtt-period", type=float, default=0.1, help="seconds between timed commands")
    ap.add_argument("--serve-board", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_board:
        return serve_board(args.speed)

    proc, path, kind = start_board(args.board, args.speed)
    consumer = Consumer()
    link = BoardLink(path, clock=MonotonicClock(), on_message=consumer)
    rtts: list[float] = []
    nacks = timeouts = 0
    try:
        link.start()
        caps = link.handshake(timeout_s=3.0)
        print(f"board: {kind} on {path} ({caps.board_id}, firmware {caps.firmware_version})", flush=True)
        ok = link.request(
            ConfigureAcquisition(sample_rate_hz=RATE, channel_mask=0b11, stream_enabled=True,
                                 stream_block_samples=BLOCK, epoch_pre_ms=PRE_MS, epoch_post_ms=POST_MS),
            timeout_s=2.0,
        )
        if not isinstance(ok, Ack):
            raise SystemExit(f"bench/link.py: the board refused ConfigureAcquisition: {ok}")
        ok = link.request(Stimulate(Output.APS, StimMode.CONTINUOUS, current_uA=1000, pulse_width_us=100,
                                    rate_mHz=EPOCH_HZ * 1000), timeout_s=2.0)
        if not isinstance(ok, Ack):
            raise SystemExit(f"bench/link.py: the board refused continuous stimulation at {EPOCH_HZ} Hz: {ok}")
        time.sleep(0.3)  # settle
        c0 = link.counters
        samples0, epochs0 = consumer.samples, consumer.epochs
        cpu0, wall0 = time.process_time(), time.monotonic()
        last_report = wall0
        while (consumer.samples - samples0) / RATE < args.seconds:
            t = time.perf_counter()
            try:
                answer = link.request(Stimulate(Output.PROBE, StimMode.STOP), timeout_s=0.5)
                rtts.append(time.perf_counter() - t)
                nacks += isinstance(answer, Nack)
            except LinkError:
                timeouts += 1
            time.sleep(args.rtt_period)
            if time.monotonic() - last_report >= 10:
                last_report = time.monotonic()
                print(f"  {(consumer.samples - samples0) / RATE:5.1f} s of signal, {consumer.epochs - epochs0} epochs",
                      flush=True)
            if proc.poll() is not None:
                raise SystemExit("bench/link.py: the board process died")
        cpu1, wall1 = time.process_time(), time.monotonic()
        c1 = link.counters
        signal_s = (consumer.samples - samples0) / RATE
        epochs = consumer.epochs - epochs0
    finally:
        link.close()
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()

    frames = c1["frames"] - c0["frames"]
    lost = (c1["frames_missed"]["board"] - c0["frames_missed"]["board"]) + consumer.emg_gaps + consumer.epoch_gaps
    corrupt = sum(c1[k] - c0[k] for k in ("bad_header_crc", "bad_crc", "too_long", "malformed", "unknown_type",
                                          "bad_version"))
    r = np.array(rtts) * 1000 if rtts else np.array([float("nan")])
    cpu = (cpu1 - cpu0) / signal_s
    mb = (c1["bytes_in"] - c0["bytes_in"]) / 1e6
    print(f"signal {signal_s:.1f} s in {wall1 - wall0:.1f} s wall; {epochs} epochs ({epochs / signal_s:.1f}/s); "
          f"{mb:.1f} MB ({mb / (wall1 - wall0):.2f} MB/s)")
    print(f"frames {frames}, seq gaps {c1['seq_gaps']['board'] - c0['seq_gaps']['board']}, "
          f"emg gaps {consumer.emg_gaps}, epoch gaps {consumer.epoch_gaps}, bytes discarded "
          f"{c1['bytes_discarded'] - c0['bytes_discarded']}, link lost events {c1['lost'] - c0['lost']}")
    print(f"round trips {len(rtts)} (nacks {nacks}, timeouts {timeouts}): median {np.median(r):.2f} ms, "
          f"p99 {np.percentile(r, 99):.2f} ms, max {r.max():.2f} ms")
    print(f"host CPU {cpu1 - cpu0:.2f} s for {signal_s:.1f} s of signal; machine load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cores (round-trip tails follow it)")
    print(
        f"LINK frames={frames} lost={lost + timeouts} corrupt={corrupt} rtt_median_ms={np.median(r):.2f} "
        f"rtt_p99_ms={np.percentile(r, 99):.2f} cpu_per_signal_s={cpu:.4f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
