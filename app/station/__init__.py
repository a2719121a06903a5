"""``lnm station``: the reading station, a web application for the remote neurophysiologist.

Owns: the live model of each OR a reader is assigned (``model``, pure), the reader's
connection to the broker under the reader's own identity (``link``), users, sessions and
the audit log (``auth``), the station configuration file (``config``), the HTTP server
with its Server-Sent Events stream (``server``), the browser app (``static/``: plain HTML,
JavaScript and CSS, no build step, nothing fetched from elsewhere), the command
(``cli``) and the one-command demonstration (``demo``).
May import: the standard library, ``paho-mqtt``, ``argon2-cffi``, ``app.remote``
(protocol, configuration, broker helpers) and, for the demonstration only, the engine's
command line and API client.

Read-only where it matters: the station can send a reader's message to an OR's inbox and
ask an appliance for the case so far or one stimulus's epoch; it has no way to stimulate,
change settings or acknowledge an alarm (the appliance accepts nothing else, and the
broker lets a reader write to its assigned ORs' inboxes only).
"""
