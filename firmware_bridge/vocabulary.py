"""The clinical words every part of LNM shares: sites, sides, sources, INMSG steps, channels.

Owns: the enumerations ``Site``, ``Side``, ``Source`` and ``Step``, the tuples of their
values (``SITES``, ``SIDES``, ``SOURCES``, ``STEPS``) and the EMG channel labels
(``CHANNEL_LABELS``, ``Side.channel``).
May import: the standard library only. Everything in ``firmware_bridge`` and ``app`` may
import this module; ``app.model`` re-exports it, and code in ``app`` imports these names
from there.

It lives here, at the bottom of ``firmware_bridge``, because the virtual board speaks it
too (its patient has sides and sites, its scenario files name steps) and
``firmware_bridge`` never imports ``app``. Values match
``shared/specs/recording-exchange.md``, so the live engine, ``lnm analyze``, the case
record and the local API speak the same language.
"""

from __future__ import annotations

import enum

# The channel of each vocal fold: channel 0 of the board's EMG is the left pair, 1 the right.
CHANNEL_LABELS = ("EMG L", "EMG R")


# The enumerations keep the ``str`` mix-in (not ``StrEnum``, whose members print
# differently): every stage and the record compare and serialise their values.
class Site(str, enum.Enum):  # noqa: UP042
    """The nerve a stimulus was given to."""

    VAGUS = "VAGUS"
    RLN = "RLN"
    EBSLN = "EBSLN"
    UNTAGGED = "UNTAGGED"  # probe touched an unidentified structure


class Side(str, enum.Enum):  # noqa: UP042
    """Left or right (the vocal fold and its nerves)."""

    L = "L"
    R = "R"

    @property
    def channel(self) -> str:
        """The EMG channel label of this side's vocal fold (``EMG L`` / ``EMG R``)."""
        return CHANNEL_LABELS[0] if self is Side.L else CHANNEL_LABELS[1]

    @property
    def other(self) -> Side:
        """The contralateral side."""
        return Side.R if self is Side.L else Side.L


class Source(str, enum.Enum):  # noqa: UP042
    """The stimulator output that gave a stimulus."""

    PROBE = "PROBE"  # hand-held probe
    APS = "APS"  # continuous vagal electrode


class Step(str, enum.Enum):  # noqa: UP042
    """INMSG procedure steps that carry a measurement (L1/L2 are entered by hand)."""

    V1 = "V1"
    S1 = "S1"
    R1 = "R1"
    R2 = "R2"
    S2 = "S2"
    V2 = "V2"
    R2P = "R2P"
    R2D = "R2D"


SITES: tuple[str, ...] = tuple(s.value for s in Site)
NERVES: tuple[str, ...] = tuple(s.value for s in Site if s is not Site.UNTAGGED)  # identified nerves
SIDES: tuple[str, ...] = tuple(s.value for s in Side)
SOURCES: tuple[str, ...] = tuple(s.value for s in Source)
STEPS: tuple[str, ...] = tuple(s.value for s in Step)

__all__ = ["CHANNEL_LABELS", "NERVES", "SIDES", "SITES", "SOURCES", "STEPS", "Side", "Site", "Source", "Step"]
