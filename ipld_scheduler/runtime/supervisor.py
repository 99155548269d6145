"""Execution: claim a workflow, run it with the executor, record its Result; clean up after crashes.

Owns: the running executions of this peer (at most ``max_concurrent``), the execute loop (which waits
until the sync queue has caught up), the *newest claimer runs* rule (hand a workflow over with a
``transfer`` when a live member holds a newer claim and nobody finished it), claims held back while a
balancing transfer settles, turning a :class:`~ipld_scheduler.executor.RunOutcome` into a
:class:`~ipld_scheduler.model.Result` with bounded log blobs, and crash safety:

* every attempt runs in a fresh work directory ``<work root>/<workflow>/<attempt>-<token>``, never
  shared, removed when the run ends (the work root is outside the repo: :mod:`.workroot`);
* each running job has a run file (:class:`~.leftovers.RunFiles`) and its processes carry its token
  in their environment; a restarted peer (:meth:`ExecutionSupervisor.reap_leftovers`) kills the
  process groups its previous incarnation left before anything is re-run, so an orphan never races
  its re-run.

Commits are shared where order allows: the loop claims the workflows for all free slots at once (the
claims queue back to back and share one group commit), and a finished run frees its slot before its
Result is written, so the next claim queues right behind the Result (one commit, one announcement, one
merge at the other peers); the workflow counts as running until its Result is folded.

Failed workflows this peer owns are retried while their schedule's budget lasts by the
:class:`~.retries.RetryPlanner` the execute loop consults on every wake-up.

Must not: decide ownership (the fold does), evict or balance (the membership part does), or read the
liveness detector (it is handed ``is_alive``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from ..blocks import encode_value
from ..codec import CID, encode_block
from ..errors import IpldSchedulerError
from ..events import Claim, Transfer, attempt_field
from ..executor import RunOutcome, execute
from ..model import Result, ResultStatus, WorkflowDefinition, WorkflowStatus
from ..options import PeerOptions
from ..replica import Replica
from ..sandbox import Sandbox
from ..scrub import Scrubber
from ..state import WorkflowRecord
from .jobinputs import job_inputs, upstream_results
from .leftovers import RUN_TOKEN_ENV, RunFiles
from .policy import dir_name, joined_log, step_row
from .redaction import LocalLogs, registered_scrubber
from .retries import RetryPlanner
from .stats import RunRecord, Stats

__all__ = ["RUN_TOKEN_ENV", "ExecutionSupervisor"]

log = logging.getLogger(__name__)

MAX_REASON: Final = 4096
MAX_STEP_ROWS: Final = 256


@dataclass(slots=True)
class _Execution:
    workflow_id: str
    attempt: int
    started: float
    token: str
    cancel: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    cancelled_by_event: bool = False
    submitter: str | None = None
    """Author of the winning ``schedule`` event: whom the secrets policy is asked about."""
    dag_attempt: int = 0
    """The workflow's attempt in the DAG when we claimed it (``retry`` events open new ones)."""


class ExecutionSupervisor:
    """Runs what this peer owns. ``run()`` is the loop; ``start()`` runs one workflow now."""

    def __init__(
        self,
        replica: Replica,
        options: PeerOptions,
        stats: Stats,
        *,
        workdir: Path,
        sandbox: Sandbox,
        clock: Callable[[], float],
        is_alive: Callable[[str], bool],
        caught_up: asyncio.Event,
    ) -> None:
        self._replica = replica
        self._options = options
        self._stats = stats
        self.workdir = workdir
        self.sandbox = sandbox
        """Every job process runs inside it (the repo, keys and database hidden; see ``sandbox``)."""
        self.run_files = RunFiles(replica.repo.path / "runs", workdir)
        self._now = clock
        self._is_alive = is_alive
        self._caught_up = caught_up
        self.peer_id = replica.peer_id
        self._running: dict[str, _Execution] = {}
        self._finishing: dict[str, _Execution] = {}
        """Runs whose process ended and whose Result is being written: they hold no slot, so the
        next claim is written right behind the Result (one group commit, one announcement)."""
        self._held: dict[str, float] = {}
        self._wakeup = asyncio.Event()
        self.active = False
        self.retries = RetryPlanner(replica, clock)
        """Writes ``retry`` events for failed workflows we own while their budget lasts."""

    # --- views for the other parts -------------------------------------------------------------

    @property
    def running(self) -> list[str]:
        return sorted(self._running)

    def is_running(self, wid: str) -> bool:
        """Whether ``wid`` runs here or its Result is being written (never re-run it meanwhile)."""
        return wid in self._running or wid in self._finishing

    def has_free_slot(self) -> bool:
        return len(self._running) < self._options.max_concurrent

    def runnable(self, rec: WorkflowRecord) -> bool:
        """Whether this peer would run ``rec`` now (not waiting for other workflows: ``after``)."""
        winner = rec.winner
        return (
            winner is not None
            and rec.waiting is None
            and (winner.workflow.run is not None or self._options.run_without_run_section)
        )

    def hold(self, wid: str, until: float) -> None:
        """Do not claim ``wid`` before ``until`` (a balancing transfer settling)."""
        self._held[wid] = until
        asyncio.get_running_loop().call_later(max(0.0, until - self._now()), self._wakeup.set)

    def held(self) -> list[str]:
        return list(self._held)

    def release(self, wid: str) -> None:
        self._held.pop(wid, None)

    def wake(self) -> None:
        self._wakeup.set()

    # --- lifecycle ------------------------------------------------------------------------------

    def open(self) -> None:
        """Kill what a previous incarnation left running; then accept work. (The work root is made
        by the first run: a peer that never runs a job leaves nothing in the user's cache.)"""
        self.reap_leftovers()
        self.active = True
        self._wakeup.set()

    async def close(self) -> None:
        """Kill running workflows (their claims stay: a restart re-runs them)."""
        self.active = False
        executions = [*self._running.values(), *self._finishing.values()]
        tasks = [e.task for e in executions if e.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._running.clear()
        self._finishing.clear()

    def on_heads(self) -> None:
        """The state changed: stop runs a ``cancel`` event finished (or whose attempt is no longer the
        workflow's current one), look for new work."""
        for execution in self._running.values():
            rec = self._replica.state.workflows.get(execution.workflow_id)
            stopped = rec is not None and (
                rec.status is WorkflowStatus.CANCELLED or rec.attempt != execution.dag_attempt
            )
            if stopped and not execution.cancel.is_set():
                execution.cancelled_by_event = True
                execution.cancel.set()
        self._wakeup.set()

    # --- the loop -------------------------------------------------------------------------------

    async def run(self) -> None:
        """The execute loop: after catching up, start the best runnable workflows while slots are free."""
        await self._caught_up.wait()
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            if self.active:
                await self.retries.run_due()
            batch: list[_Execution] = []
            while self.has_free_slot() and self.active:
                wid = await self.next_runnable()
                if wid is None:
                    break
                batch.append(self._reserve(wid))
            await self._claim_all(batch)

    async def _claim_all(self, batch: list[_Execution]) -> None:
        """Claim every reserved workflow at once: the claims queue back to back behind the replica's
        write lock and share the repo's group commit (one fsync for a full set of free slots instead of
        one per claim, each awaited before the next was written)."""
        if len(batch) == 1:
            await self._claim(batch[0])
            return
        outcomes = await asyncio.gather(*(self._claim(e) for e in batch), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

    def _eligible(self, wid: str, now: float) -> bool:
        if self.is_running(wid) or not self.runnable(self._replica.state.workflows[wid]):
            return False
        until = self._held.get(wid)
        return until is None or until <= now

    async def next_runnable(self) -> str | None:
        """The best workflow in our queue that we should run now (handing over superseded ones)."""
        state = self._replica.state
        while True:
            top = state.peek()
            if top is None:
                return None
            now = self._now()
            if self._eligible(top, now):
                chosen: str | None = top
            else:
                chosen = next((w for w in state.queued() if self._eligible(w, now)), None)
            if chosen is None:
                return None
            self._held.pop(chosen, None)
            if not await self.hand_over_if_superseded(state.workflows[chosen]):
                return chosen

    async def hand_over_if_superseded(self, rec: WorkflowRecord) -> bool:
        """*Newest claimer runs*: True (and a ``transfer`` written) when a live peer's claim is newer."""
        newer = self.newer_live_claimer(rec)
        if newer is None:
            return False
        await self._replica.append(Transfer(rec.workflow_id, newer, "a live peer holds a newer claim on it"))
        self._stats.handovers_written += 1
        log.info(
            "peer %s handed %s over to %s, which holds a newer claim",
            self.peer_id,
            rec.workflow_id,
            newer,
            extra={"event": "handover", "workflow": rec.workflow_id, "member": newer},
        )
        return True

    def newer_live_claimer(self, rec: WorkflowRecord) -> str | None:
        """A live member other than us whose claim is newer than all of ours (it may be running it)."""
        if rec.of_attempt(rec.completions) or rec.of_attempt(rec.failures):
            return None
        claims = rec.of_attempt(rec.claims)
        mine = max((r.stamp for r in claims if r.peer == self.peer_id), default=(0, b""))
        best = None
        for run in claims:
            if run.peer == self.peer_id or run.stamp <= mine:
                continue
            if not self._replica.state.is_present(run.peer) or not self._is_alive(run.peer):
                continue
            if best is None or run.stamp > best.stamp:
                best = run
        return None if best is None else best.peer

    # --- one run ----------------------------------------------------------------------------------

    async def start(self, wid: str, *, recovered: bool = False) -> None:
        """Claim ``wid`` and start running it (``recovered``: our claim from before a restart)."""
        await self._claim(self._reserve(wid), recovered=recovered)

    def _reserve(self, wid: str) -> _Execution:
        """Take a slot for ``wid`` now, before any await: the loop must not pick it twice."""
        rec = self._replica.state.workflows[wid]
        assert rec.winner is not None
        attempt = 1 + sum(1 for r in rec.claims.values() if r.peer == self.peer_id)
        execution = _Execution(wid, attempt, self._now(), secrets.token_hex(8), submitter=rec.winner.author)
        execution.dag_attempt = rec.attempt
        self._running[wid] = execution
        return execution

    async def _claim(self, execution: _Execution, *, recovered: bool = False) -> None:
        """Write the reserved workflow's claim (durable), then start its run; the slot is freed on failure.
        (A cancel or retry folded meanwhile stops the run through :meth:`on_heads`, as for any run.)"""
        wid = execution.workflow_id
        winner = self._replica.state.workflows[wid].winner
        assert winner is not None
        try:
            await self._replica.append(Claim(wid, winner.cid, attempt_field(execution.dag_attempt)))
        except BaseException:
            self._running.pop(wid, None)
            raise
        attempt = execution.attempt
        self._stats.claims_written += 1
        if recovered:
            self._stats.recovered_runs += 1
        log.info(
            "peer %s %s %s (attempt %d)",
            self.peer_id,
            "re-runs, after a restart," if recovered else "claimed",
            wid,
            attempt,
            extra={"event": "rerun" if recovered else "claim", "workflow": wid, "attempt": attempt},
        )
        execution.task = asyncio.create_task(
            self._run(execution, winner.workflow), name=f"{self.peer_id}:run:{wid}"
        )

    async def _run(self, execution: _Execution, workflow: WorkflowDefinition) -> None:
        wid = execution.workflow_id
        self._stats.executions_started += 1
        workdir = self.workdir / dir_name(wid) / f"{execution.attempt}-{execution.token}"
        run_file: Path | None = None
        try:
            self.workdir.mkdir(mode=0o700, parents=True, exist_ok=True)
            workdir.mkdir(parents=True, exist_ok=False)
            run_file = self.run_files.record(execution.token, wid, execution.attempt, workdir)
            try:
                scrubber = registered_scrubber(self._replica.repo.path)
            except (IpldSchedulerError, ValueError) as exc:  # no run whose output could not be masked
                reason = f"cannot register this peer's secrets for scrubbing: {exc}"[:MAX_REASON]
                outcome = RunOutcome(ResultStatus.REFUSED, None, 0.0, (), reason)
                scrubber = Scrubber()
            else:
                outcome = await self._outcome(workflow, workdir, execution, scrubber)
            self._finished(wid, outcome)
            # A run stopped by a cancel records its partial output too: the fold files a "cancelled"
            # result under the cancel, so the workflow stays cancelled (never turns "failed").
            result, blocks = self.result(wid, outcome, scrubber)
            self._finishing[wid] = self._running.pop(wid)
            self._wakeup.set()  # the execute loop claims the next workflow behind our Result
            await self._replica.record_result(wid, result, blocks, attempt=execution.dag_attempt)
            if outcome.status is ResultStatus.SUCCESS:
                self._stats.executions_succeeded += 1
            elif execution.cancelled_by_event and outcome.status is ResultStatus.CANCELLED:
                self._stats.executions_cancelled += 1
            else:
                self._stats.executions_failed += 1
        finally:
            self._running.pop(wid, None)
            self._finishing.pop(wid, None)
            self._wakeup.set()
            shutil.rmtree(workdir, ignore_errors=True)
            with contextlib.suppress(OSError):
                workdir.parent.rmdir()  # the workflow's directory, once no attempt of it is left
            if run_file is not None:
                run_file.unlink(missing_ok=True)

    def _finished(self, wid: str, outcome: RunOutcome) -> None:
        self._stats.recent_runs.append(RunRecord(wid, outcome.status, outcome.exit_code, outcome.duration_s))
        log.info(
            "peer %s ran %s: %s, exit code %s, %.3f s%s",
            self.peer_id,
            wid,
            outcome.status,
            "-" if outcome.exit_code is None else outcome.exit_code,
            outcome.duration_s,
            f" ({outcome.reason[:200]})" if outcome.reason else "",
            extra={
                "event": "run",
                "workflow": wid,
                "status": outcome.status,
                "exit_code": outcome.exit_code,
                "duration_seconds": round(outcome.duration_s, 4),
            },
        )

    async def _outcome(
        self, workflow: WorkflowDefinition, workdir: Path, execution: _Execution, scrubber: Scrubber
    ) -> RunOutcome:
        if workflow.run is None:
            return RunOutcome(ResultStatus.SUCCESS, 0, 0.0, (), None)
        try:
            replica = self._replica
            upstream = (
                await upstream_results(replica.state, replica.store.get, workflow) if workflow.after else ()
            )
            inputs = job_inputs(workflow, execution.submitter, self._options, replica.repo.path, upstream)
        except IpldSchedulerError as exc:
            reason = str(exc)[:MAX_REASON]
            return RunOutcome(ResultStatus.REFUSED, None, self._now() - execution.started, (), reason)
        try:
            return await execute(
                workflow.run,
                workdir=workdir,
                cancel=execution.cancel,
                sandbox=self.sandbox,
                store=self._replica.store,
                job_inputs=inputs,
                scrubber=scrubber,
                docker_image=self._options.docker_image,
                output_limit=self._options.output_limit,
                extra_env={
                    "IPLD_SCHEDULER_WORKFLOW_ID": workflow.workflow_id,
                    "IPLD_SCHEDULER_PEER_ID": self.peer_id,
                    "IPLD_SCHEDULER_ATTEMPT": str(execution.attempt),
                    RUN_TOKEN_ENV: execution.token,
                },
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the executor promises not to raise; if it does, record why
            log.exception("peer %s: executor failed on %s", self.peer_id, workflow.workflow_id)
            reason = f"executor error: {exc}"
            return RunOutcome(ResultStatus.FAILURE, None, self._now() - execution.started, (), reason)

    @property
    def keep_logs_local(self) -> bool:
        """This peer's own rule (``run --keep-logs-local``), whatever the network's policy says."""
        return self._options.keep_logs_local

    def logs_local(self) -> bool:
        """Whether job logs stay off the network: this peer's rule, or the network's policy as this
        peer sees it now (either suffices: a peer can be stricter than its network, never looser)."""
        authority = self._replica.authority
        if self._options.keep_logs_local or authority is None:
            return self._options.keep_logs_local
        return authority.current(self._replica.clock.head_cids).policy.policy.logs_local

    def result(
        self, wid: str, outcome: RunOutcome, scrubber: Scrubber | None = None
    ) -> tuple[Result, list[tuple[CID, bytes]]]:
        """The Result of a run plus its stdout/stderr blobs (partial output of cut runs included).

        Every registered secret is masked (again: the executor masked at capture) in the logs, the
        reason and the step rows. When the policy keeps logs local, the logs go to
        ``<repo>/logs/<result CID>/`` and the Result links a one-line note naming this peer instead.
        """
        scrub = scrubber if scrubber is not None else Scrubber()
        local = self.logs_local()
        blocks: list[tuple[CID, bytes]] = []
        links: dict[str, CID | None] = {}
        kept: dict[str, bytes] = {}
        for stream in ("stdout", "stderr"):
            raw = scrub.scrub(joined_log(outcome.steps, stream, self._options.output_limit))
            if raw and local:
                kept[stream] = raw
                raw = f"[{stream} kept local on peer {self.peer_id}]\n".encode()
            if raw:
                cid, data = encode_block(raw)
                blocks.append((cid, data))
                links[stream] = cid
            else:
                links[stream] = None
        reason = scrub.text(outcome.reason)[:MAX_REASON] if outcome.reason else None
        rows = tuple(step_row(s) for s in outcome.steps[:MAX_STEP_ROWS])
        result = Result(
            workflow_id=wid,
            peer=self.peer_id,
            status=outcome.status,
            duration_ms=max(0, int(outcome.duration_s * 1000)),
            exit_code=outcome.exit_code,
            reason=reason,
            stdout=links["stdout"],
            stderr=links["stderr"],
            steps=tuple({**row, "name": scrub.text(row["name"])} for row in rows),
            artifacts=outcome.artifacts,
            outputs=dict(outcome.outputs) or None,
            skipped=outcome.skipped,
        )
        if kept:
            try:
                LocalLogs(self._replica.repo.path).write(encode_value(result).cid, kept)
            except OSError as exc:  # the logs are lost, never published instead
                log.warning("peer %s could not keep the logs of %s: %s", self.peer_id, wid, exc)
        return result, blocks

    # --- crash leftovers ----------------------------------------------------------------------------

    def reap_leftovers(self) -> int:
        """Kill what runs of a previous incarnation left (:class:`~.leftovers.RunFiles`); how many groups."""
        killed = 0
        for leftover in self.run_files.reap():
            killed += len(leftover.groups)
            if leftover.groups:
                log.warning(
                    "peer %s killed %d leftover process group(s) of %s from its previous run",
                    self.peer_id,
                    len(leftover.groups),
                    leftover.workflow_id,
                    extra={"event": "leftover_killed", "workflow": leftover.workflow_id},
                )
        self._stats.leftovers_killed += killed
        return killed
