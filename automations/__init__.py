"""Automations shipped with sheetops. Every module here is imported at start-up and
registers its automations by name with ``@automation``."""
