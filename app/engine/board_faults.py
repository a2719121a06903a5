"""The board's fault bits in words.

Owns: ``fault_names``, ``KNOWN_FAULT_BITS``. May import: ``firmware_bridge.messages``.
"""

from __future__ import annotations

from firmware_bridge.messages import Fault

_FAULT_NAMES = {
    Fault.LEAD_OFF: "lead_off",
    Fault.COMPLIANCE_LIMIT: "compliance_limit",
    Fault.ADC_SATURATION: "adc_saturation",
    Fault.OVER_CURRENT: "over_current",
    Fault.WATCHDOG: "watchdog",
    Fault.HOST_SILENT: "host_silent",
    Fault.BACKUP_BEEPER: "backup_beeper",
    Fault.INTERNAL: "internal",
}
KNOWN_FAULT_BITS = 0xFF


def fault_names(faults: int) -> list[str]:
    """The board's fault bits in words (unknown bits as ``unknown_0x..``)."""
    names = [name for bit, name in _FAULT_NAMES.items() if faults & bit]
    unknown = int(faults) & ~KNOWN_FAULT_BITS
    if unknown:
        names.append(f"unknown_0x{unknown:x}")
    return names
