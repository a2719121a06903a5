"""The virtual board as a port (``sim://``) and as its own process (``lnm board-sim``)."""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import time
import tty
from pathlib import Path

import pytest

from firmware_bridge import codec
from firmware_bridge.clock import ManualClock
from firmware_bridge.messages import (
    Ack,
    Capabilities,
    ConfigureAcquisition,
    EmgBlock,
    Fault,
    BoardStatus,
    Hello,
    HostHeartbeat,
    Output,
    StimEpoch,
    StimMode,
    Stimulate,
)
from firmware_bridge.sim import open_sim
from waiting import LineReader, wait_until

ROOT = Path(__file__).resolve().parents[2]


def _collect(read, decoder: codec.Decoder, until, timeout: float = 5.0) -> list:
    got: list = []
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        data = read()
        if data:
            got += [f.message for f in decoder.feed(data)]
            if until(got):
                return got
    raise AssertionError(f"timed out; got {[type(m).__name__ for m in got][:20]}")


# ----------------------------------------------------------------------------- sim://


def test_sim_port_with_a_manual_clock_is_deterministic():
    clock = ManualClock()
    port = open_sim("sim://?scenario=standard_bilateral&seed=4", clock=clock, pump=False)
    try:
        assert port.board.seed == 4 and port.board.scenario.name == "standard_bilateral"
        dec = codec.Decoder()
        port.write(codec.encode(Hello(), 0))
        msgs = [f.message for f in dec.feed(port.read())]
        assert any(isinstance(m, Capabilities) and m.simulated for m in msgs)
        port.write(codec.encode(HostHeartbeat(0), 1) + codec.encode(ConfigureAcquisition(), 2))
        clock.advance(1.0)
        port.write(codec.encode(HostHeartbeat(1), 3))
        msgs = []
        while data := port.read():
            msgs += [f.message for f in dec.feed(data)]
        assert sum(isinstance(m, EmgBlock) for m in msgs) == 50  # 1 s at 20 kHz in 400-sample blocks
    finally:
        port.close()
    with pytest.raises(OSError, match="closed"):
        port.read()
    with pytest.raises(OSError, match="closed"):
        port.write(b"x")


def test_sim_port_real_time_pump_keeps_the_safety_contract():
    port = open_sim("sim://?seed=2&speed=20")
    try:
        dec = codec.Decoder()
        port.write(codec.encode(Hello(), 0) + codec.encode(HostHeartbeat(0), 1)
                   + codec.encode(ConfigureAcquisition(), 2))
        port.control("aps_attach", side="R")
        port.write(codec.encode(Stimulate(Output.APS, StimMode.CONTINUOUS, 1000, 100, 4000), 3))
        msgs = _collect(port.read, dec, lambda g: sum(isinstance(m, StimEpoch) for m in g) >= 2)
        assert any(isinstance(m, Ack) and m.seq == 3 for m in msgs)
        # the host stops reading and heartbeating: the pump still runs the board's timers
        # (0.5 s of host silence stops stimulation, 2 s sounds the beeper: 0.1 s at speed 20)
        board = port.board
        assert wait_until(lambda: board.stimulating == () and board.beeper_on)
        assert board.faults & Fault.HOST_SILENT
    finally:
        port.close()


@pytest.mark.parametrize(
    "url,fragment",
    [
        ("sim://?sped=3", "unknown parameter 'sped'"),
        ("sim://?speed=fast", "speed='fast' is not a number"),
        ("sim://?seed=-1", "seed=-1 out of range"),
        ("sim://?scenario=nope", "no such scenario file"),
        ("sim://?pump=2", "pump must be 0 or 1"),
    ],
)
def test_bad_sim_urls(url, fragment):
    with pytest.raises(ValueError, match=fragment):
        open_sim(url)


def test_transport_opens_sim_urls():
    from firmware_bridge.transport import open_port

    port = open_port("sim://traction_recovery?speed=1", clock=ManualClock())
    try:
        assert port.board.scenario.name == "traction_recovery"
    finally:
        port.close()


# ----------------------------------------------------------------------------- lnm board-sim


def _start(*args: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "board-sim", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )
    r, _w, _x = select.select([proc.stdout], [], [], 20.0)
    if not r:
        proc.kill()
        raise AssertionError("lnm board-sim printed nothing")
    return proc, proc.stdout.readline().strip()


def _stop(proc: subprocess.Popen, sig=signal.SIGTERM) -> int:
    proc.send_signal(sig)
    try:
        return proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_board_sim_pty_answers_hello_with_capabilities():
    proc, path = _start("--pty", "--seed", "7")
    try:
        assert path.startswith("/dev/") and os.path.exists(path)
        fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
        try:
            tty.setraw(fd)
            dec = codec.Decoder()
            os.write(fd, codec.encode(Hello(), 0))

            def read() -> bytes:
                r, _w, _x = select.select([fd], [], [], 0.05)
                return os.read(fd, 65536) if r else b""

            msgs = _collect(read, dec, lambda g: any(isinstance(m, Capabilities) for m in g))
            caps = next(m for m in msgs if isinstance(m, Capabilities))
            assert caps.simulated and caps.protocol_version == 1 and caps.board_id == "VB-00000007"
            # and it streams once configured
            os.write(fd, codec.encode(HostHeartbeat(0), 1) + codec.encode(ConfigureAcquisition(), 2))
            _collect(read, dec, lambda g: sum(isinstance(m, EmgBlock) for m in g) >= 5)
        finally:
            os.close(fd)
    finally:
        assert _stop(proc) == 0


def test_board_sim_tcp_serves_a_client_and_beeps_when_it_goes():
    proc, address = _start("--tcp", "0", "--speed", "10", "--scenario", "standard_bilateral")
    log = LineReader(proc.stderr)
    try:
        assert address.startswith("socket://127.0.0.1:")
        port = int(address.rsplit(":", 1)[1])
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        dec = codec.Decoder()
        sock.sendall(codec.encode(Hello(), 0) + codec.encode(HostHeartbeat(0), 1))

        def read() -> bytes:
            r, _w, _x = select.select([sock], [], [], 0.05)
            return sock.recv(65536) if r else b""

        msgs = _collect(read, dec, lambda g: any(isinstance(m, Capabilities) for m in g))
        assert next(m for m in msgs if isinstance(m, Capabilities)).simulated
        sock.close()  # the host goes away: 2 s of board time later the beeper sounds
        log.expect("backup beeper ON")
    finally:
        assert _stop(proc, signal.SIGINT) == 0
    assert "host connected" in log.text()


def test_board_sim_refuses_bad_arguments():
    r = subprocess.run([sys.executable, "-m", "app.cli", "board-sim", "--pty", "--scenario", "nope"],
                       capture_output=True, text=True, cwd=ROOT, timeout=30)
    assert r.returncode == 2 and "no such scenario file" in r.stderr
    r = subprocess.run([sys.executable, "-m", "app.cli", "board-sim", "--pty", "--speed", "0"],
                       capture_output=True, text=True, cwd=ROOT, timeout=30)
    assert r.returncode == 2 and "--speed must be > 0" in r.stderr


def test_status_reaches_a_pty_client():
    proc, path = _start("--pty")
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
        try:
            tty.setraw(fd)
            dec = codec.Decoder()

            def read() -> bytes:
                r, _w, _x = select.select([fd], [], [], 0.05)
                return os.read(fd, 65536) if r else b""

            _collect(read, dec, lambda g: any(isinstance(m, BoardStatus) for m in g))
        finally:
            os.close(fd)
    finally:
        _stop(proc)
