"""coverwatch: measure where mobile networks really reach.

This package holds what the probe and the server share (the wire protocol and the
connection settings) plus the server-side command line. The probe agent lives in
``agent``; the server side in ``collector``, ``geo`` and ``dashboards``.
"""

__version__ = "0.1.0"
