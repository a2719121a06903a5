"""Remote neuromonitoring, the appliance's side: its live case published to an MQTT broker.

Owns: the topics and payloads (``protocol``, documented in ``docs/remote.md``), the
``[remote]`` settings read into a ``RemoteConfig`` (``config``), the publisher thread
(``publisher``) and its small hook into the engine service (``hook``), and the helpers a
broker needs (``mqttauth``: Mosquitto password lines and the ACL derived from the
station's assignments).
May import: the standard library, ``paho-mqtt``, ``app.settings``, ``app.record``
(journal reading, the pseudonymiser), ``app.alarms`` (the technical notice's kind) and
``app.api.protocol``. Nothing in the engine imports this package but the service's hook.

The patient before the network: the engine thread only hands messages to a bounded queue
(``publisher.OutQueue``) and never waits for the broker; a dead or slow broker is a
low-priority technical notice on the touchscreen, never more. Events come from the case
journal (journal first): what the reader sees is what the record says, with the
journal's own sequence numbers, re-sent from the journal after a broken connection.
"""
