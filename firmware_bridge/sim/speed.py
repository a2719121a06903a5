"""How fast the virtual board generates its signal: ``python -m firmware_bridge.sim.speed``.

Owns: a quick measurement (no test, no benchmark target) of the virtual board's speed in
times real time, CPU time of this process, best of three runs:

- ``generator``: the continuous two-channel EMG alone (``EmgGenerator.render``, 20 kHz);
- ``board``: the whole firmware emulation through the real codec: continuous vagal
  stimulation at 1 Hz with its epochs, the free-running stream (400-sample blocks), host
  heartbeats every 100 ms, the board stepped on a ManualClock every 5 ms and every 100 ms.

May import: the standard library and ``firmware_bridge``.
"""

from __future__ import annotations

import argparse
import time

from firmware_bridge import codec
from firmware_bridge.clock import ManualClock
from firmware_bridge.messages import ConfigureAcquisition, Hello, HostHeartbeat, Output, StimMode, Stimulate
from firmware_bridge.sim.board import VirtualBoard
from firmware_bridge.sim.emg import EmgGenerator
from firmware_bridge.sim.physiology import Patient


def generator_speed(seconds: float, block: int, fs: int = 20000) -> float:
    """Times real time of the EMG generator alone (CPU time, best of three)."""
    gen = EmgGenerator(Patient(1), fs)
    gen.render(0, block)
    k, end = gen.next_k, gen.next_k + int(seconds * fs)
    t = time.process_time()
    while k < end:
        gen.render(k, block)
        k += block
    return seconds / (time.process_time() - t)


def board_speed(seconds: float, step_s: float, block: int = 400, decimation: int = 1) -> float:
    """Times real time of the whole virtual board through the codec (CPU time, best of three)."""
    clock = ManualClock()
    board = VirtualBoard(clock, seed=1)
    seq = 0

    def send(m) -> None:
        nonlocal seq
        board.receive(codec.encode(m, seq))
        seq += 1

    send(Hello())
    send(HostHeartbeat(0))
    send(ConfigureAcquisition(stream_block_samples=block, stream_decimation=decimation))
    board.control("aps_attach", side="L")
    send(Stimulate(Output.APS, StimMode.CONTINUOUS, 1000, 100, 1000))
    board.poll()
    every = max(1, int(round(0.1 / step_s)))
    n = int(round(seconds / step_s))
    t = time.process_time()
    for i in range(n):
        clock.advance(step_s)
        if i % every == 0:
            send(HostHeartbeat(i))
        board.poll()
    return seconds / (time.process_time() - t)


def main(argv: list[str] | None = None) -> int:
    """Print both speeds (``python -m firmware_bridge.sim.speed``)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=30.0, help="seconds of signal per run (default 30)")
    args = ap.parse_args(argv)
    s = args.seconds
    rows = [
        ("generator, 20 ms blocks", lambda: generator_speed(s, 400)),
        ("generator, 100 ms blocks", lambda: generator_speed(s, 2000)),
        ("board + codec, stepped every 5 ms", lambda: board_speed(s, 0.005)),
        ("board + codec, stepped every 100 ms", lambda: board_speed(s, 0.1)),
        ("board + codec, 5 ms steps, 4000-sample blocks", lambda: board_speed(s, 0.005, block=4000)),
    ]
    for name, fn in rows:
        best = max(fn() for _ in range(3))
        print(f"{name:48s} {best:8.0f} x real time (2 channels x 20 kHz)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
