"""The virtual board: firmware emulation of the wire protocol with a believable patient.

Owns: the patient physiology (``physiology``), the continuous EMG (``emg``), the board
firmware emulation (``board``), scenarios (``scenario``), the in-process ``sim://``
port (``open_sim``) and the ``lnm board-sim`` command (``cli``).
May import: the standard library, numpy, scipy, ``firmware_bridge.messages``,
``firmware_bridge.clock`` and ``firmware_bridge.codec``; never ``app``.
"""
