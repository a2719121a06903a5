"""The touchscreen application: a Kivy client of the engine's local API.

Owns: every screen the nurse and the surgeon see (start-up self-test, case set-up, tube
check, monitoring, alarms and the event list, loss-of-signal troubleshooting, end of case
and report, past cases, settings behind a PIN, the virtual-board panel), the nurse's words
for what the engine says, the case form's checks, what the UI does with its own errors,
the engine link that keeps all socket I/O off the UI thread, the display selection for
``lnm ui`` / ``lnm run`` and the ``lnm ui`` command. The UI shows and asks; the engine decides (measurement, rules,
alarms, validation and the journal are the engine's).

May import: Kivy (only in this package), numpy, the standard library, ``app.api.client``
and ``app.api.protocol`` (the only way to the engine), ``app.settings`` (profile names)
and ``app.model`` (vocabulary). Never the engine's stages.

Modules that do not need a display (``link``, ``data``, ``present``, ``words``,
``forms``, ``faults``, ``display``, ``launch``, ``options``, ``cli``) import no Kivy at
module level, so they are tested without one and ``lnm run`` can use them. Kivy is
imported only by ``app.ui.main``, ``app.ui.widgets``, ``app.ui.plots``, ``app.ui.fit``,
``app.ui.embed`` and the screens, and only after the display has been chosen
(``options.configure_kivy`` runs first).
"""
