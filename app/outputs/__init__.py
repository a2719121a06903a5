"""Appliance outputs: alarm sounds, feedback tones, audible EMG, loudspeaker, LEDs, buzzer
and footswitch.

Owns: ``sounds`` (pure synthesis of the IEC 60601-1-8 alarm signals and the feedback
tones, with their semantics table), ``emg_audio`` (the free-running EMG made audible),
``audio`` (the ``AudioBackend`` interface, the mixer, ``CaptureAudio`` and the ALSA
``AplayAudio``), ``gpio`` (the ``GpioBackend`` interface, the wiring table and
``SimulatedGpio``), ``gpio_rpi`` (the only module importing RPi.GPIO, lazily),
``indicators`` (LED patterns and the footswitch debouncer, pure functions of time),
``annunciator`` (alarm state -> bursts, LEDs and buzzer; feedback and EMG in) and ``cli``
(``lnm sounds``).
May import: the standard library, numpy, scipy, ``app.model``, ``app.settings``,
``app.alarms`` and ``firmware_bridge.clock``. Nothing here imports the engine, the API,
the record or the UI.
"""
