"""Time in the engine: the case clock and the board's clock mapped onto it.

Owns: ``TimeBase``: case time (``t_s`` everywhere: seconds since the case was opened on
the engine clock; since engine start while no case is open) and the offset that maps
board timestamps (microseconds since the board's power-on) to the engine clock.
May import: ``firmware_bridge.clock``.

The offset is learnt from the board's heartbeats and status messages: the earliest
arrival wins (it has the least transport delay in it), and a jump of more than
``OFFSET_JUMP_S`` re-anchors it (a board reset or clock drift). A new board session
(capabilities, a link restored) forgets it; until the next heartbeat, the first timestamp
seen anchors it, less the latency the caller knows of (an epoch arrives after its window).
"""

from __future__ import annotations

from firmware_bridge.clock import Clock

OFFSET_JUMP_S = 0.25


class TimeBase:
    """The case clock and the board-time mapping (see the module docstring)."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.started_at = clock.now()
        self.origin = self.started_at  # clock time of case time 0
        self._board_offset: float | None = None

    # -- the case clock

    def now_t(self) -> float:
        """Case time now."""
        return self.clock.now() - self.origin

    def case_t(self, clock_t: float) -> float:
        """An engine-clock time as case time."""
        return clock_t - self.origin

    def start_case(self, origin: float) -> None:
        """Case time 0 is ``origin`` (engine clock) from now on."""
        self.origin = float(origin)

    def end_case(self) -> None:
        """No case: case time counts from the engine's start again."""
        self.origin = self.started_at

    # -- the board's clock

    def board_clock(self, board_time_us: int, latency_s: float = 0.0) -> float:
        """Board time -> engine clock seconds."""
        board_s = board_time_us / 1e6
        if self._board_offset is None:
            self._board_offset = self.clock.now() - latency_s - board_s
        return board_s + self._board_offset

    def case_t_of_board(self, board_time_us: int, latency_s: float = 0.0) -> float:
        """Board time -> case time."""
        return self.board_clock(board_time_us, latency_s) - self.origin

    def learn_offset(self, board_time_us: int) -> None:
        """A heartbeat or status message stamped ``board_time_us`` arrived now."""
        o = self.clock.now() - board_time_us / 1e6
        if self._board_offset is None or o < self._board_offset or o - self._board_offset > OFFSET_JUMP_S:
            self._board_offset = o

    def forget_offset(self) -> None:
        """A new board session: learn its clock again."""
        self._board_offset = None
