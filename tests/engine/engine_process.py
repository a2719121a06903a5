"""A real ``lnm engine`` process for the tests that start one: its API client, its log,
and the ways it ends (SIGTERM, kill -9)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from app.api.client import CommandFailed, EngineClient, EngineUnavailable
from waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable


def wait_for(pred: Any, timeout: float = 10.0) -> bool:
    """The engine's answers until ``pred`` holds (an engine still starting counts as not yet)."""
    return bool(wait_until(pred, timeout, interval=0.05, ignore=(EngineUnavailable, CommandFailed, OSError)))


class EngineProcess:
    """``lnm engine`` on ``board`` with its data folder ``data`` (default ``tmp/data``);
    started and connected to, or an AssertionError with its output."""

    def __init__(self, tmp: Path, board: str, *extra: str, data: Path | None = None, env: dict[str, str] | None = None,
                 start_s: float = 20.0, board_connected_s: float | None = None, stop_s: float = 15.0) -> None:
        self.sock = tmp / "run" / "engine.sock"
        self.data = data if data is not None else tmp / "data"
        self.stop_s = stop_s
        self.log = open(tmp / f"engine-{time.monotonic_ns()}.log", "w+")  # noqa: SIM115 - closed with the test's tmp
        self.proc = subprocess.Popen(
            [PY, "-m", "app.cli", "engine", "--board", board, "--socket", str(self.sock), "--data", str(self.data),
             "-v", *extra],
            cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        self.client = EngineClient(self.sock, name="test", timeout_s=5.0)
        if not wait_for(lambda: self.client.connect() is not None, start_s):
            self.stop()
            raise AssertionError("engine did not start:\n" + self.output())
        if board_connected_s is not None and not wait_for(lambda: self.state()["board"]["connected"],
                                                          board_connected_s):
            raise AssertionError("the engine's board did not connect:\n" + self.output())

    def call(self, cmd: str, **kw: Any) -> Any:
        return self.client.call(cmd, **kw)

    def reply(self, cmd: str, **kw: Any) -> dict[str, Any]:
        """The whole reply (``recorded`` sits beside ``result``)."""
        done, box = threading.Event(), []
        self.client.call_async(cmd, lambda r: (box.append(r), done.set()), **kw)
        if not done.wait(10):
            raise AssertionError(f"no reply to {cmd}")
        return box[0]

    def state(self) -> dict[str, Any]:
        return self.call("state.get")

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def kill(self) -> None:
        self.client.close()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(self.stop_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode
