"""The monitoring engine: the process that protects the patient.

Owns: the pure composition core (``core.Monitor``, a facade over the engine's rooms:
``timebase``, ``ledger``, ``case_state`` and ``lifecycle``, ``stimulator``, ``stimulus``,
``emg_stream``, ``tube``, ``board``, ``alarm_desk``, ``persist``, ``views``, the API
command handlers in ``commands``, and the injected collaborators' Protocols in
``seams``: board messages, link events and operator commands in; host messages, journal
entries, state and events out), the live service shell (``service``: board link
thread, engine loop, API server, systemd notifications, fail-safe exit), crash resume
from the journal (``resume``), the stepped single-threaded simulation used by ``lnm
simulate``, the tests and the benchmark (``stepped``, ``simulate``), the tube check's
breathing-variation window (``breathing``), and the ``lnm engine`` command (``cli``).
May import: everything below it (``firmware_bridge``, ``app.model``, ``app.settings``,
``app.analysis``, ``app.rules``, ``app.alarms``, ``app.outputs``, ``app.record``) and
``app.api``. Never Kivy or ``app.ui``.
"""
