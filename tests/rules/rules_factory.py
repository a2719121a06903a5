"""Builders of measurements and streams for the rule-engine tests."""

from __future__ import annotations

from collections.abc import Iterable

from app.model import InvalidReason, Measurement, RuleEvent, Side, Site, Source, Step, Stimulus
from app.rules import RuleEngine
from app.settings import Settings

DEFAULTS = Settings()


class Stream:
    """Numbers stimuli and spaces them in time (1 s for APS-like streams by default)."""

    def __init__(self, t0: float = 10.0, dt: float = 1.0) -> None:
        self.index = 0
        self.t = t0
        self.dt = dt

    def m(
        self,
        amp: float | None = 800.0,
        lat: float | None = 6.0,
        *,
        site: Site = Site.VAGUS,
        side: Side = Side.L,
        source: Source = Source.APS,
        set_mA: float = 1.0,
        delivered: float | None = 1.0,
        valid: bool = True,
        reason: InvalidReason | None = None,
        response: bool | None = None,
        step: Step | None = None,
        dt: float | None = None,
    ) -> Measurement:
        """A measurement; ``amp`` None or < 100 uV is no response (unless ``response`` says)."""
        stim = Stimulus(index=self.index, t_s=self.t, site=site, side=side, source=source, set_mA=set_mA,
                        delivered_mA=delivered, step=step)
        self.index += 1
        self.t += self.dt if dt is None else dt
        if not valid:
            return Measurement(stim, side.channel, False, reason or InvalidReason.CAUTERY, False, None, None, None)
        if response is None:
            response = amp is not None and amp >= 100.0
        if amp is None:
            amp = 20.0
        return Measurement(stim, side.channel, True, None, response, float(amp),
                           lat if response else None, (lat - 0.8) if (response and lat) else None)

    # shorthands
    def resp(self, amp: float = 800.0, lat: float = 6.0, **kw) -> Measurement:
        return self.m(amp, lat, **kw)

    def miss(self, **kw) -> Measurement:
        return self.m(30.0, None, **kw)

    def invalid(self, reason: InvalidReason = InvalidReason.CAUTERY, **kw) -> Measurement:
        return self.m(None, None, valid=False, reason=reason, **kw)


def run(engine: RuleEngine, ms: Iterable[Measurement]) -> list[RuleEvent]:
    out: list[RuleEvent] = []
    for m in ms:
        out.extend(engine.process(m))
    return out


def kinds(events: Iterable[RuleEvent]) -> list[str]:
    return [e.kind.value for e in events]


def of_kind(events: Iterable[RuleEvent], kind: str) -> list[RuleEvent]:
    return [e for e in events if e.kind.value == kind]


def engine(**changes) -> RuleEngine:
    """A rule engine with default settings changed by ``rules__x=...`` style keywords."""
    values = {k.replace("__", "."): v for k, v in changes.items()}
    return RuleEngine(DEFAULTS.with_changes(values) if values else DEFAULTS)


def aps_baseline(engine_: RuleEngine, s: Stream, n: int = 20, amp: float = 800.0, lat: float = 6.0,
                 side: Side = Side.L) -> list[RuleEvent]:
    """Feed ``n`` APS responses (exact amp/lat) so that the side's baseline is set."""
    return run(engine_, [s.resp(amp, lat, side=side) for _ in range(n)])
