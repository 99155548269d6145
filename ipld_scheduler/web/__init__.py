"""HTTP face of a running peer: the JSON API (``api``), the dashboard (``dashboard``), who may call
them (:mod:`ipld_scheduler.access`: the API token, Host and Origin checks), and the server that
assembles them and advertises itself in ``<repo>/api`` (``server``). The route table it serves is
:mod:`ipld_scheduler.routes` and its client, the connection layer of the CLI and MCP, is
:mod:`ipld_scheduler.client`: both in the operations layer below this face.

Must not: implement an operation. Every route calls :mod:`ipld_scheduler.ops`.
"""
