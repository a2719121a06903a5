"""The engine's local API: a versioned, newline-delimited JSON protocol on a Unix socket.

Owns: the command table with argument units and ranges (``protocol``), the socket server
the engine runs (``server``), the client library the touchscreen UI and the command-line
clients share (``client``), and the ``lnm status`` / ``lnm ack`` / ``lnm events`` commands
(``clients``). The protocol is documented in ``API.md`` next to this file.
May import: the standard library, ``app.settings`` and ``app.model``. Nothing here imports
the engine's stages, Kivy or hardware modules; the engine plugs in through callbacks.
"""

API_VERSION = 1
