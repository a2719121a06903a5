"""The broker accounts of the remote tests: three appliances and two readers with their assigned ORs."""

APPLIANCES = {"or-1": "pw-or-1", "or-2": "pw-or-2", "or-3": "pw-or-3"}
READERS = {"anna.rossi": ("pw-anna-rossi-1", ["or-1", "or-2"]), "ben.kim": ("pw-ben-kim-22", ["or-3"])}
