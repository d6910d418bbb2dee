"""The coverwatch probe agent that runs on a Raspberry Pi in a village.

Installs with ``pip install '.[agent]'``: it imports nothing from ``collector``,
``geo`` or ``dashboards`` and needs none of their libraries.
"""
