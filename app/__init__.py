"""LNM, the open laryngeal nerve monitor: the engine, the touchscreen UI and the ``lnm`` command.

Stages (each a subpackage; lower stages never import higher ones):
``model``/``settings`` -> ``analysis`` -> ``rules`` -> ``alarms`` -> ``outputs`` ->
``record`` -> ``engine``/``api`` -> ``ui``. Nothing below ``ui`` imports Kivy.
"""

__version__ = "0.1.0"
