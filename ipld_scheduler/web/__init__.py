"""HTTP face of a running peer: the JSON API (``api``), its client (``client``), the dashboard
(``dashboard``) and the server that assembles them and advertises itself in ``<repo>/api`` (``server``).

Must not: implement an operation. Every route calls :mod:`ipld_scheduler.ops`.
"""
