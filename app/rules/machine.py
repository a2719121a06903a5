"""Table-driven state machines: the declarative form of every INMSG rule.

Owns: ``Row`` (one transition), ``Machine`` (a transition table and its interpreter) and
``render`` (the table as text, as it appears in each rule's docstring).
May import: the standard library only.

A rule is a table. Each row reads: in ``state``, on input ``symbol``, apply the run
operation to the rule's run counter, then (if ``when`` is given) compare the new run with
a limit read from the settings; if it holds, go to ``next`` and emit ``emit``. Rows are
tried in order; a row whose state is ``*`` applies in any state that has no row of its own
for that symbol. Run operations: ``=`` keep, ``0`` reset, ``1`` restart at one, ``+1``
count. Conditions: ``run<rules.X`` / ``run>=rules.X`` where ``rules.X`` is a setting key,
so a changed setting changes behaviour without code changes.

The interpreter is pure: ``step(state, run, symbol, settings)`` returns the new state, run
and emitted action; the caller owns the state (and serialises it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from collections.abc import Iterable, Mapping
from typing import Any

ANY = "*"

_RUN_OPS = ("=", "0", "1", "+1")
_WHEN = re.compile(r"run(<|>=)([a-z_]+\.[A-Za-z0-9_]+)")


class RuleTableError(ValueError):
    """A transition table is incomplete or inconsistent (a programming error)."""


@dataclass(frozen=True)
class Row:
    """One transition: in ``state`` on ``symbol``, apply ``run``, check ``when``, go to
    ``next`` and emit ``emit``."""

    state: str
    symbol: str
    next: str
    run: str = "="
    when: str = ""
    emit: str = ""


@dataclass(frozen=True)
class Outcome:
    """What one step of a machine gives: the new state and run, and the emitted action."""

    state: str
    run: int
    emit: str


def _apply(op: str, run: int) -> int:
    if op == "=":
        return run
    if op == "0":
        return 0
    if op == "1":
        return 1
    return run + 1


class Machine:
    """A named transition table over ``states`` and ``symbols``, checked for completeness."""

    def __init__(self, name: str, initial: str, states: Iterable[str], symbols: Iterable[str],
                 rows: Iterable[Row]) -> None:
        self.name = name
        self.initial = initial
        self.states = tuple(states)
        self.symbols = tuple(symbols)
        self.rows = tuple(rows)
        self._index: dict[tuple[str, str], list[Row]] = {}
        for row in self.rows:
            self._index.setdefault((row.state, row.symbol), []).append(row)
        self._check()

    # -- validation -------------------------------------------------------------------
    def _check(self) -> None:
        if self.initial not in self.states:
            raise RuleTableError(f"{self.name}: initial state {self.initial!r} unknown")
        for row in self.rows:
            if row.state != ANY and row.state not in self.states:
                raise RuleTableError(f"{self.name}: row state {row.state!r} unknown")
            if row.next != ANY and row.next not in self.states:
                raise RuleTableError(f"{self.name}: row next state {row.next!r} unknown")
            if row.next == ANY and row.state != ANY:
                raise RuleTableError(f"{self.name}: only a '*' row may keep '*' as next state")
            if row.symbol not in self.symbols:
                raise RuleTableError(f"{self.name}: row symbol {row.symbol!r} unknown")
            if row.run not in _RUN_OPS:
                raise RuleTableError(f"{self.name}: run operation {row.run!r} unknown")
            if row.when and not _WHEN.fullmatch(row.when):
                raise RuleTableError(f"{self.name}: condition {row.when!r} not understood")
        for state in self.states:
            for symbol in self.symbols:
                rows = self.rows_for(state, symbol)
                if not rows:
                    raise RuleTableError(f"{self.name}: no transition for {state} on {symbol}")
                if rows[-1].when:
                    # the guarded rows must pair up as run<X / run>=X over the same limit
                    # (an unguarded row among them is refused too, not read as a condition)
                    whens = [_WHEN.fullmatch(r.when) for r in rows]
                    limits = {w.group(2) for w in whens if w}
                    ops = {w.group(1) for w in whens if w}
                    if len(limits) != 1 or ops != {"<", ">="} or not all(whens):
                        raise RuleTableError(
                            f"{self.name}: guarded transitions for {state} on {symbol} do not cover every run"
                        )

    def rows_for(self, state: str, symbol: str) -> list[Row]:
        return self._index.get((state, symbol)) or self._index.get((ANY, symbol)) or []

    def limits(self) -> tuple[str, ...]:
        """The setting keys this table reads."""
        keys = []
        for row in self.rows:
            if row.when:
                key = _WHEN.fullmatch(row.when).group(2)  # type: ignore[union-attr]
                if key not in keys:
                    keys.append(key)
        return tuple(keys)

    # -- interpretation ---------------------------------------------------------------
    def step(self, state: str, run: int, symbol: str, settings: Mapping[str, Any]) -> Outcome:
        rows = self.rows_for(state, symbol)
        if not rows:
            raise RuleTableError(f"{self.name}: no transition for {state} on {symbol}")
        for row in rows:
            new_run = _apply(row.run, run)
            if row.when:
                m = _WHEN.fullmatch(row.when)
                op, key = m.group(1), m.group(2)  # type: ignore[union-attr]
                limit = settings[key]
                holds = new_run < limit if op == "<" else new_run >= limit
                if not holds:
                    continue
            nxt = state if row.next == ANY else row.next
            return Outcome(nxt, new_run, row.emit)
        raise RuleTableError(f"{self.name}: no guarded transition holds for {state} on {symbol}")

    def render(self) -> str:
        return render(self.rows)


def render(rows: Iterable[Row]) -> str:
    """The table as it is written in the rule's docstring (one line per row)."""
    lines = ["state | input | when | next | run | emits"]
    for r in rows:
        lines.append(f"{r.state} | {r.symbol} | {r.when or '-'} | {r.next} | {r.run} | {r.emit or '-'}")
    return "\n".join(lines)
