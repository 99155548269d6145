"""GitHub Actions workflows, run by act (nektos/act) on the peers.

Modules, one concept each:

* ``plan``: schedule-time planning of a workflow file (pure): safe YAML loading, jobs, ``needs``,
  matrix legs, ``runs-on``, per-job acceptance or a typed refusal, and the act run spec stored in
  the Workflow block.
* ``labels``: runner labels (pure): the typed ``runs-on`` requirement, whether a peer's labels
  satisfy it, and the default labels of this host.
* ``act`` / ``workspace``: running a job with act and materialising its content-addressed workspace
  (runtime; owned by the executor).
* ``context``: the ``github`` context of a job, taken from a git checkout (repository, sha, ref,
  event name and payload), and how act is told about it.
* ``pin``: a job's ``uses:`` actions resolved to commits, stored as blocks, and laid out for act
  on the executing peer so they run offline.
* ``secrets``: the peer's own secrets and variables file and which submitters' jobs get them.
* ``submission``: ``prepare`` (the scheduling side: run spec, workspace, pinned actions, context in
  one call) and ``JobInputs`` (the executing side's strict decoding of them).

Must not: import anything at package level, so each module pulls only what it needs.
"""
