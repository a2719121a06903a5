"""The board link: wire protocol (spec and codec), transports opened by URL, the
supervised link, the typed Board API and the virtual board.

Nothing here imports ``app``; ``app`` sees only ``messages`` and ``link``.
"""
