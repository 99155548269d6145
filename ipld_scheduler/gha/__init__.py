"""GitHub Actions workflows, run by act (nektos/act) on the peers.

Modules, one concept each:

* ``plan``: schedule-time planning of a workflow file (pure): safe YAML loading, jobs, ``needs``,
  matrix legs, ``runs-on``, per-job acceptance or a typed refusal, and the act run spec stored in
  the Workflow block.
* ``labels``: runner labels (pure): the typed ``runs-on`` requirement, whether a peer's labels
  satisfy it, and the default labels of this host.
* ``act`` / ``workspace``: running a job with act and materialising its content-addressed workspace
  (runtime; owned by the executor).

Must not: import anything at package level, so each module pulls only what it needs.
"""
