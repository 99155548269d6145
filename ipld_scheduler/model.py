"""The block types of the DAG (Workflow, Event, Result) as plain values, and their validation.

Owns: field names and meaning, the mapping between dataclasses and IPLD data (the shapes written in
``schemas/*.ipldsch``; ``tests/test_schemas.py`` checks the two agree), tag normalisation and the
P2P eligibility rule, and the enums the rest of the package spells kinds and statuses with
(:class:`EventKind`, :class:`WorkflowStatus`, :class:`ResultStatus`). ``Event`` is the generic
signed envelope; the typed payload of each kind is in ``events``. Must not: do I/O, sign, hash or
touch CBOR bytes (that is ``codec`` and ``identity``). Everything decoded from the network passes
``*.from_ipld``, which raises :class:`ModelError` naming the offending field rather than trusting
any shape.

Dicts built here list their keys in DAG-CBOR order (shorter first, then bytewise) so the codec's
fast path never has to re-sort them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any, Final

from .codec import CID, CodecError, decode, decode_canonical, keys_in_order, link_of, links_of
from .errors import InvalidInput
from .runner_labels import check_peer_labels

__all__ = [
    "EVENT_KINDS",
    "FORMAT_VERSION",
    "Event",
    "EventKind",
    "ModelError",
    "Result",
    "ResultStatus",
    "Waiting",
    "WorkflowDefinition",
    "WorkflowStatus",
    "WorkflowTag",
    "eligibility",
    "normalize_tags",
]

FORMAT_VERSION: Final = 1
MAX_ID_LEN: Final = 256
MAX_NAME_LEN: Final = 1024
MAX_TAGS: Final = 32
MAX_PARENTS: Final = 256
MAX_METADATA_ENTRIES: Final = 256


class ModelError(InvalidInput, ValueError):
    """A value that is not a well-formed block of its type; the message names the field."""


class WorkflowStatus(StrEnum):
    """A workflow's status as the fold derives it (values are what the CLI, API and metrics show)."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (WorkflowStatus.COMPLETED, WorkflowStatus.FAILED, WorkflowStatus.CANCELLED)


class Waiting(StrEnum):
    """Why a pending workflow is not runnable yet (the fold derives it; values are what readers show)."""

    NO_RUNNER = "no-matching-runner"

    NEEDS = "waiting-for-needs"
    """Some workflow of its ``after`` list is not finished (or not scheduled) yet."""


class WorkflowTag(StrEnum):
    """Tags that decide whether a workflow may run on the P2P network (values are the wire form)."""

    GITHUB_API = "github_api"
    P2P_ELIGIBLE = "p2p_eligible"
    P2P_ONLY = "p2p_only"
    UNIT_TEST = "unit_test"
    CODE_GEN = "code_gen"
    WEB_SCRAPE = "web_scrape"
    DATA_PROCESSING = "data_processing"

    def __str__(self) -> str:
        return self.value


_P2P_TAGS: Final = frozenset({"p2p_only", "p2p_eligible", "code_gen", "web_scrape", "data_processing"})
_GITHUB_TAGS: Final = frozenset({"github_api", "unit_test"})


def _normalize_tag(tag: str | WorkflowTag) -> str:
    if isinstance(tag, WorkflowTag):
        return tag.value
    if not isinstance(tag, str):
        raise ModelError(f"tags: {tag!r} is not a string")
    text = tag.strip().lower().replace("-", "_").replace(" ", "_")
    if text.startswith("workflowtag."):
        text = text[len("workflowtag.") :]
    if not text or len(text) > 64:
        raise ModelError(f"tags: {tag!r} is empty or longer than 64 characters")
    return text


def normalize_tags(tags: Iterable[str | WorkflowTag] | str | None) -> tuple[str, ...]:
    """Canonical tag tuple: lower-case, underscores (``p2p-eligible`` == ``p2p_eligible``), sorted, unique.

    Accepts a comma-separated string too, because that is how the CLI and env vars carry them.
    Unknown tags are kept (users label work freely); only known ones affect eligibility.
    """
    if tags is None:
        return ()
    if isinstance(tags, str | WorkflowTag):
        items: Iterable[str | WorkflowTag] = (
            [tags] if isinstance(tags, WorkflowTag) else [t for t in tags.split(",") if t.strip()]
        )
    else:
        items = tags
    out = sorted({_normalize_tag(t) for t in items})
    if len(out) > MAX_TAGS:
        raise ModelError(f"tags: at most {MAX_TAGS} tags, got {len(out)}")
    return tuple(out)


def eligibility(tags: Iterable[str]) -> str | None:
    """None when the tags make a workflow P2P work, else the reason it must stay off the network.

    ``p2p_only`` with a GitHub tag is a contradiction (it must run here and must not); a GitHub tag
    without any P2P tag, or no tags at all, means the job needs the GitHub API.
    """
    tagset = set(tags)
    if "p2p_only" in tagset and tagset & _GITHUB_TAGS:
        return "conflicting tags: p2p_only cannot be combined with github_api or unit_test"
    if tagset & _P2P_TAGS:
        return None
    return "requires GitHub API: tag it p2p_eligible, p2p_only, code_gen, web_scrape or data_processing"


def _str(value: Any, name: str, limit: int = MAX_NAME_LEN, *, empty: bool = False) -> str:
    if type(value) is not str:
        raise ModelError(f"{name}: expected a string, got {type(value).__name__}")
    if len(value) > limit or (not value and not empty):
        raise ModelError(f"{name}: must be 1..{limit} characters")
    return value


def _int(value: Any, name: str, low: int = 0, high: int = 2**63 - 1) -> int:
    if type(value) is not int or not low <= value <= high:
        raise ModelError(f"{name}: expected an integer in [{low}, {high}], got {value!r}")
    return value


def _float(value: Any, name: str) -> float:
    if type(value) is not float or not math.isfinite(value):
        raise ModelError(f"{name}: expected a finite float, got {value!r}")
    return value


def _link(value: Any, name: str) -> CID:
    if type(value) is not CID:
        raise ModelError(f"{name}: expected a link, got {type(value).__name__}")
    return value


def _link_list(value: Any, name: str, limit: int) -> list[CID]:
    """A list of 1..``limit`` distinct links (a ``schedule-batch`` names each workflow once)."""
    if type(value) is not list or not 0 < len(value) <= limit:
        raise ModelError(f"{name}: expected a list of 1..{limit} links")
    for item in value:
        _link(item, name)
    if len({item.raw for item in value}) != len(value):
        raise ModelError(f"{name}: a workflow is listed twice")
    return value


def _bytes(value: Any, name: str, size: int) -> bytes:
    if type(value) is not bytes or len(value) != size:
        raise ModelError(f"{name}: expected {size} bytes")
    return value


def _true(value: Any, name: str) -> bool:
    """A flag written only when set (``peer-add``'s ``rotate`` / ``invite``): absent means false."""
    if value is not True:
        raise ModelError(f"{name}: expected true (leave the field out for false)")
    return value


def _role_list(value: Any, name: str) -> list[str]:
    """Role names (``trust`` checks each name's grammar): a sorted list of unique short strings."""
    if type(value) is not list or len(value) > 16:
        raise ModelError(f"{name}: expected a list of at most 16 role names")
    for role in value:
        _str(role, name, 32)
    if value != sorted(set(value)):
        raise ModelError(f"{name}: role names must be sorted and unique")
    return value


def _label_list(value: Any, name: str) -> list[str]:
    """A peer's runner labels: canonical, sorted and unique (``runner_labels.check_peer_labels``)."""
    try:
        return check_peer_labels(value)
    except ValueError as exc:
        raise ModelError(f"{name}: {exc}") from None


def _map(value: Any, name: str, limit: int = MAX_METADATA_ENTRIES) -> dict[str, Any]:
    if type(value) is not dict or len(value) > limit:
        raise ModelError(f"{name}: expected a map of at most {limit} entries")
    return value


def _exact_keys(
    data: Mapping[str, Any], required: frozenset[str], optional: frozenset[str], name: str
) -> None:
    keys = data.keys()
    missing = required - keys
    if missing:
        raise ModelError(f"{name}: missing field(s) {', '.join(sorted(missing))}")
    extra = keys - required - optional
    if extra:
        raise ModelError(f"{name}: unknown field(s) {', '.join(sorted(map(str, extra)))}")


def _version(value: Any, name: str) -> None:
    """The format version must be the integer 1: ``1.0`` or ``True`` compare equal in Python but
    encode to different bytes, so accepting them would give one logical block several CIDs."""
    if type(value) is not int or value != FORMAT_VERSION:
        raise ModelError(f"{name}: unsupported format version {value!r}")


def _plain(value: Any, name: str, depth: int = 0) -> Any:
    """Metadata and run sections are free-form IPLD data, but never links (they would escape the DAG walk)."""
    if depth > 16:
        raise ModelError(f"{name}: nested too deeply")
    kind = type(value)
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str:
                raise ModelError(f"{name}: map keys must be strings")
            _plain(item, f"{name}.{key}", depth + 1)
    elif kind is list or kind is tuple:
        for item in value:
            _plain(item, name, depth + 1)
    elif kind is float:
        _float(value, name)
    elif kind not in (str, int, bool, bytes) and value is not None:
        raise ModelError(f"{name}: {kind.__name__} values are not allowed here")
    return value


# --- Workflow ---------------------------------------------------------------------------------

_WF_REQUIRED: Final = frozenset({"v", "id", "name", "tags", "type", "metadata", "priority"})
_WF_OPTIONAL: Final = frozenset({"run", "workspace", "actions", "context", "after"})
MAX_PINNED_ACTIONS: Final = 64
MAX_AFTER: Final = 512
"""Most workflows one workflow may wait for (``after``): a job needing two 256-leg matrix jobs."""
_CONTEXT_KEYS: Final = frozenset({"repository", "sha", "ref", "ref_name", "event_name", "event"})
_ACTION_KEY: Final = re.compile(
    r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}/[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}@[A-Za-z0-9_][A-Za-z0-9_./+-]{0,199}"
)
_COMMIT: Final = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


def _pinned_actions(value: Any, name: str) -> dict[str, Any]:
    """``{"owner/repo@ref": {"commit": hex, "tree": link}}``: the shape only; ``gha.pin`` reads the values."""
    actions = _map(value, name, MAX_PINNED_ACTIONS)
    if not actions:
        raise ModelError(f"{name}: an empty map is written as no field")
    for key, pin in actions.items():
        if type(key) is not str or not _ACTION_KEY.fullmatch(key):
            raise ModelError(f"{name}: key {str(key)[:80]!r} is not owner/repo@ref")
        _exact_keys(
            _map(pin, f"{name}.{key}", 2), frozenset({"commit", "tree"}), frozenset(), f"{name}.{key}"
        )
        if type(pin["commit"]) is not str or not _COMMIT.fullmatch(pin["commit"]):
            raise ModelError(f"{name}.{key}.commit: expected a full commit hash")
        _link(pin["tree"], f"{name}.{key}.tree")
    return actions


def _after(value: Any, name: str, own_id: str) -> tuple[str, ...]:
    """``after``: 1..``MAX_AFTER`` workflow ids, sorted and unique (one set, one encoding), never
    the workflow's own id."""
    if type(value) not in (list, tuple) or not 0 < len(value) <= MAX_AFTER:
        raise ModelError(f"{name}: expected a list of 1 to {MAX_AFTER} workflow ids (leave it out for none)")
    for item in value:
        _str(item, name, MAX_ID_LEN)
    if list(value) != sorted(set(value)):
        raise ModelError(f"{name}: workflow ids must be sorted and unique")
    if own_id in value:
        raise ModelError(f"{name}: a workflow cannot wait for itself")
    return tuple(value)


def _github_context(value: Any, name: str) -> dict[str, Any]:
    """The ``github`` context's shape (exact keys, no links); ``gha.context`` checks each value."""
    context = _map(value, name, len(_CONTEXT_KEYS))
    _exact_keys(context, _CONTEXT_KEYS, frozenset(), name)
    for key, item in context.items():
        if key == "event":
            _plain(_map(item, f"{name}.event"), f"{name}.event")
        else:
            _str(item, f"{name}.{key}", 255)
    return context


@dataclass(frozen=True, init=False)
class WorkflowDefinition:
    """A unit of work. Identity (and so its CID and owner) depends only on these fields: no clocks.

    ``priority``: lower runs first. ``run``: the executable section (see ``executor``), absent for
    workflows that are only queued and popped by their owner through ``get_next_workflow``.
    ``after``: ids of workflows that must be finished (completed, failed or cancelled) before this
    one is runnable (the fold keeps it out of every queue until then: :class:`Waiting`); the
    constructor sorts and deduplicates them; absent (empty) changes nothing in the block.
    """

    workflow_id: str
    name: str
    tags: tuple[str, ...] = ()
    priority: float = 1.0
    metadata: Mapping[str, Any] | None = None
    run: Mapping[str, Any] | None = None
    workspace: CID | None = None
    actions: Mapping[str, Any] | None = None
    context: Mapping[str, Any] | None = None
    after: tuple[str, ...] = ()

    def __init__(
        self,
        workflow_id: str,
        name: str,
        tags: Iterable[str | WorkflowTag] | str | None = (),
        priority: float = 1.0,
        metadata: Mapping[str, Any] | None = None,
        run: Mapping[str, Any] | None = None,
        *,
        workspace: CID | None = None,
        actions: Mapping[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
        after: Iterable[str] | None = None,
    ) -> None:
        object.__setattr__(self, "workflow_id", _str(workflow_id, "workflow_id", MAX_ID_LEN))
        object.__setattr__(self, "name", _str(name, "name", empty=True))
        object.__setattr__(self, "tags", normalize_tags(tags))
        if isinstance(priority, bool) or not isinstance(priority, int | float):
            raise ModelError(f"priority: expected a number, got {priority!r}")
        object.__setattr__(self, "priority", _float(float(priority), "priority"))
        meta = dict(metadata) if metadata else {}
        _plain(_map(meta, "metadata"), "metadata")
        object.__setattr__(self, "metadata", meta)
        if run is not None:
            _plain(_map(dict(run), "run", 64), "run")
            run = dict(run)
        object.__setattr__(self, "run", run)
        # A GitHub Actions job's inputs (gha/submission.py): its source tree, pinned actions and
        # ``github`` context. Absent unless given, so workflows without them keep their CIDs.
        object.__setattr__(self, "workspace", None if workspace is None else _link(workspace, "workspace"))
        pinned = (
            None if actions is None else _pinned_actions({k: dict(v) for k, v in actions.items()}, "actions")
        )
        object.__setattr__(self, "actions", pinned)
        object.__setattr__(
            self, "context", None if context is None else _github_context(dict(context), "context")
        )
        if isinstance(after, str):
            raise ModelError("after: expected a list of workflow ids, not one string")
        waits = list(after or ())
        if any(type(item) is not str for item in waits):
            raise ModelError("after: workflow ids must be strings")
        ordered = sorted(set(waits))
        object.__setattr__(self, "after", _after(ordered, "after", self.workflow_id) if ordered else ())

    def __hash__(self) -> int:
        return hash((self.workflow_id, self.name, self.tags, self.priority))

    def to_ipld(self) -> dict[str, Any]:
        # Keys listed in DAG-CBOR order (v, id, run, name, tags, type, [actions, context,] metadata,
        # priority[, workspace]).
        if self.workspace is not None or self.actions is not None or self.context is not None or self.after:
            return self._to_ipld_with_inputs()
        if self.run is None:
            return {
                "v": FORMAT_VERSION,
                "id": self.workflow_id,
                "name": self.name,
                "tags": list(self.tags),
                "type": "workflow",
                "metadata": dict(self.metadata or {}),
                "priority": self.priority,
            }
        return {
            "v": FORMAT_VERSION,
            "id": self.workflow_id,
            "run": dict(self.run),
            "name": self.name,
            "tags": list(self.tags),
            "type": "workflow",
            "metadata": dict(self.metadata or {}),
            "priority": self.priority,
        }

    @classmethod
    def from_ipld(cls, data: Any) -> WorkflowDefinition:
        data = _map(data, "workflow", 16)
        _exact_keys(data, _WF_REQUIRED, _WF_OPTIONAL, "workflow")
        if type(data["v"]) is not int or data["v"] != FORMAT_VERSION or data["type"] != "workflow":
            raise ModelError(f"workflow: unsupported version/type {data['v']!r}/{data['type']!r}")
        tags = data["tags"]
        if type(tags) is not list or any(type(t) is not str for t in tags):
            raise ModelError("workflow.tags: expected a list of strings")
        if list(normalize_tags(tags)) != tags:
            raise ModelError("workflow.tags: must be normalised, sorted and unique")
        # ``run`` present must be a map: ``None`` or a list of pairs would be accepted by the
        # constructor yet re-encode differently (one workflow, two CIDs).
        run = _map(data["run"], "workflow.run", 64) if "run" in data else None
        return cls(
            data["id"],
            data["name"],
            tags,
            _float(data["priority"], "workflow.priority"),
            _map(data["metadata"], "workflow.metadata"),
            run,
            workspace=_link(data["workspace"], "workflow.workspace") if "workspace" in data else None,
            actions=_pinned_actions(data["actions"], "workflow.actions") if "actions" in data else None,
            context=_github_context(data["context"], "workflow.context") if "context" in data else None,
            after=_after(data["after"], "workflow.after", data["id"]) if "after" in data else None,
        )

    def _to_ipld_with_inputs(self) -> dict[str, Any]:
        data: dict[str, Any] = {"v": FORMAT_VERSION, "id": self.workflow_id}
        if self.run is not None:
            data["run"] = dict(self.run)
        data.update(name=self.name, tags=list(self.tags), type="workflow")
        if self.after:
            data["after"] = list(self.after)
        if self.actions is not None:
            data["actions"] = {k: dict(v) for k, v in self.actions.items()}
        if self.context is not None:
            data["context"] = dict(self.context)
        data.update(metadata=dict(self.metadata or {}), priority=self.priority)
        if self.workspace is not None:
            data["workspace"] = self.workspace
        return data

    def job_inputs(self) -> dict[str, Any]:
        """The ``workspace``/``actions``/``context`` fields present, as the block carries them
        (``gha.submission.JobInputs.from_block_fields`` decodes them)."""
        fields: dict[str, Any] = {}
        if self.workspace is not None:
            fields["workspace"] = self.workspace
        if self.actions is not None:
            fields["actions"] = self.actions
        if self.context is not None:
            fields["context"] = self.context
        return fields

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly view for CLI, MCP and dashboard output (seed-compatible key names)."""
        return {
            "workflow_id": self.workflow_id,
            "name": self.name,
            "tags": list(self.tags),
            "priority": self.priority,
            "metadata": dict(self.metadata or {}),
            "run": dict(self.run) if self.run is not None else None,
            **({"workspace": str(self.workspace)} if self.workspace is not None else {}),
            **(
                {
                    "actions": {
                        k: {"commit": v["commit"], "tree": str(v["tree"])} for k, v in self.actions.items()
                    }
                }
                if self.actions is not None
                else {}
            ),
            **({"context": dict(self.context)} if self.context is not None else {}),
            **({"after": list(self.after)} if self.after else {}),
        }

    def is_p2p_eligible(self) -> bool:
        """Whether ``schedule_workflow`` accepts it: the rule of :func:`eligibility`, not the
        prototype's two-tag test (its ``code_gen``-only workflows were refused)."""
        return eligibility(self.tags) is None

    def requires_github_api(self) -> bool:
        """Whether it must stay on GitHub: not P2P eligible, and not ``p2p_only`` (``p2p_only``
        with a GitHub tag is a contradiction, refused for both)."""
        return not self.is_p2p_eligible() and WorkflowTag.P2P_ONLY not in self.tags


# --- Event ------------------------------------------------------------------------------------


class EventKind(StrEnum):
    """What an event records. The value is the wire spelling."""

    SCHEDULE = "schedule"
    CANCEL = "cancel"
    REPRIORITIZE = "reprioritize"
    PEER_ADD = "peer-add"
    PEER_REMOVE = "peer-remove"
    CLAIM = "claim"
    COMPLETE = "complete"
    FAIL = "fail"
    EVICT = "evict"
    TRANSFER = "transfer"
    CHECKPOINT = "checkpoint"
    RETRY = "retry"
    POLICY = "policy"
    SCHEDULE_BATCH = "schedule-batch"


MAX_ATTEMPT: Final = 2**31 - 1
"""Bound on ``attempt`` in event bodies (absent means attempt 0, so a present one is at least 1)."""
MAX_RETRIES: Final = 100
"""Bound on a schedule's automatic retry budget (``retries`` in the schedule event's body)."""
MAX_BATCH: Final = 1024
"""Bound on the workflows one ``schedule-batch`` event lists (~42 KB of links, far below a block's
size limit)."""

EVENT_KINDS: Final = frozenset(k.value for k in EventKind)

# kind -> (required body fields, optional body fields); value checkers live in _BODY_CHECKS.
_BODY_FIELDS: Final[dict[str, tuple[frozenset[str], frozenset[str]]]] = {
    "schedule": (frozenset({"workflow"}), frozenset({"retries"})),
    "cancel": (frozenset({"id"}), frozenset({"reason", "schedule", "attempt"})),
    "reprioritize": (frozenset({"id", "priority"}), frozenset({"schedule"})),
    "peer-add": (frozenset({"peer"}), frozenset({"key", "roles", "rotate", "invite", "labels"})),
    "peer-remove": (frozenset({"peer"}), frozenset({"reason"})),
    "claim": (frozenset({"id", "schedule"}), frozenset({"attempt"})),
    "complete": (frozenset({"id", "result"}), frozenset({"claim", "attempt"})),
    "fail": (frozenset({"id", "result"}), frozenset({"reason", "claim", "attempt"})),
    "evict": (frozenset({"peer"}), frozenset({"reason"})),
    "transfer": (frozenset({"id", "to"}), frozenset({"reason", "schedule"})),
    "checkpoint": (frozenset({"state"}), frozenset()),
    "retry": (frozenset({"id", "attempt"}), frozenset({"schedule"})),
    "policy": (frozenset({"policy"}), frozenset()),
    "schedule-batch": (frozenset({"workflows"}), frozenset({"retries"})),
}
_BODY_CHECKS: Final[dict[str, Any]] = {
    "workflow": lambda v: _link(v, "body.workflow"),
    "schedule": lambda v: _link(v, "body.schedule"),
    "result": lambda v: _link(v, "body.result"),
    "state": lambda v: _link(v, "body.state"),
    "id": lambda v: _str(v, "body.id", MAX_ID_LEN),
    "peer": lambda v: _str(v, "body.peer", MAX_ID_LEN),
    "to": lambda v: _str(v, "body.to", MAX_ID_LEN),
    "reason": lambda v: _str(v, "body.reason", empty=True),
    "priority": lambda v: _float(v, "body.priority"),
    "key": lambda v: _bytes(v, "body.key", 32),
    "attempt": lambda v: _int(v, "body.attempt", 1, MAX_ATTEMPT),
    "retries": lambda v: _int(v, "body.retries", 1, MAX_RETRIES),
    "claim": lambda v: _link(v, "body.claim"),
    "roles": lambda v: _role_list(v, "body.roles"),
    "rotate": lambda v: _true(v, "body.rotate"),
    "invite": lambda v: _true(v, "body.invite"),
    "labels": lambda v: _label_list(v, "body.labels"),
    "policy": lambda v: _policy(v, "body.policy"),
    "workflows": lambda v: _link_list(v, "body.workflows", MAX_BATCH),
}


def _policy(value: Any, name: str) -> Any:
    """A whole ``genesis.Policy`` map, strictly (the genesis module owns its rules; it imports this one)."""
    from .genesis import GenesisError, Policy

    try:
        Policy.from_ipld(value)
    except GenesisError as exc:
        raise ModelError(f"{name}: {exc}") from None
    return value


_EV_REQUIRED: Final = frozenset({"v", "key", "sig", "body", "kind", "author", "height", "parents"})
_BODY_ALLOWED: Final = {kind: (req, req | opt) for kind, (req, opt) in _BODY_FIELDS.items()}
"""kind -> (required, required | optional): precomputed so decoding an event builds no sets."""
_LINK_FIELDS: Final = frozenset({"workflow", "schedule", "result", "state", "claim"})
_LINK_LIST_FIELDS: Final = frozenset({"workflows"})
"""Body fields holding a list of links (``schedule-batch``): converted item by item on decode."""
_body_orders: dict[tuple[str, ...], tuple[str, ...] | None] = {}
"""Cache: body key tuple -> keys in DAG-CBOR order (None when already ordered); bounded."""


def _body_key(key: str) -> tuple[int, bytes]:
    raw = key.encode()
    return len(raw), raw


def _ordered_body(body: Mapping[str, Any]) -> dict[str, Any]:
    """A fresh dict of ``body`` with keys in DAG-CBOR order (shorter first, then bytewise)."""
    keys = tuple(body)
    order = _body_orders.get(keys, keys)
    if order is keys:  # not cached yet
        ordered = tuple(sorted(keys, key=_body_key))
        order = None if ordered == keys else ordered
        if len(_body_orders) < 1024:
            _body_orders[keys] = order
    return dict(body) if order is None else {k: body[k] for k in order}


@dataclass(frozen=True, slots=True)
class Event:
    """One signed node of the Merkle clock.

    ``parents`` are all heads the author held, sorted by CID bytes (equal head sets give equal
    CIDs); ``height`` = 1 + max parent height, so (height, CID) is a total order that respects
    causality; ``key`` is the author's Ed25519 public key and ``sig`` signs :meth:`signing_bytes`.
    """

    kind: str
    author: str
    height: int
    parents: tuple[CID, ...]
    body: Mapping[str, Any]
    key: bytes
    sig: bytes = b""
    v: int = FORMAT_VERSION

    def unsigned_ipld(self) -> dict[str, Any]:
        return {
            "v": self.v,
            "key": self.key,
            "body": _ordered_body(self.body),
            "kind": self.kind,
            "author": self.author,
            "height": self.height,
            "parents": list(self.parents),
        }

    def to_ipld(self) -> dict[str, Any]:
        # Built directly (not from unsigned_ipld): this runs for every event written.
        return {
            "v": self.v,
            "key": self.key,
            "sig": self.sig,
            "body": _ordered_body(self.body),
            "kind": self.kind,
            "author": self.author,
            "height": self.height,
            "parents": list(self.parents),
        }

    def links(self) -> list[CID]:
        """Every CID this event points at: parents first, then body links (workflow, result...)."""
        return [
            *self.parents,
            *(v for v in self.body.values() if type(v) is CID),
            *(link for name in _LINK_LIST_FIELDS for link in self.body.get(name, ())),
        ]

    @staticmethod
    def from_block(data: bytes) -> Event:
        """Strictly decode and validate the bytes of an event block (see ``_event_from_block``)."""
        return _event_from_block(data)

    @classmethod
    def from_ipld(cls, data: Any) -> Event:
        # Hot path (every event replayed or received): checks are inlined in the order of the
        # generic helpers, which are only called to produce the error message.
        if type(data) is not dict:
            raise ModelError("event: expected a map")
        try:  # 8 entries and every required key found: exactly the required keys
            version, kind, body, parents = data["v"], data["kind"], data["body"], data["parents"]
            height, author, key, sig = data["height"], data["author"], data["key"], data["sig"]
        except KeyError:
            version = None
        if version is None or len(data) != len(_EV_REQUIRED):
            _exact_keys(data, _EV_REQUIRED, frozenset(), "event")
        if type(version) is not int or version != FORMAT_VERSION:
            _version(version, "event")
        fields = _BODY_ALLOWED.get(kind) if type(kind) is str else None
        if fields is None:
            raise ModelError(f"event.kind: unknown kind {kind!r}")
        if type(body) is not dict or len(body) > 8:
            _map(body, "event.body", 8)
        required, allowed = fields
        if not required <= body.keys() <= allowed:
            _exact_keys(body, required, allowed, f"event.body ({kind})")
        for name, value in body.items():
            if type(value) is not CID or name not in _LINK_FIELDS:
                _BODY_CHECKS[name](value)
        if type(parents) is not list or len(parents) > MAX_PARENTS:
            raise ModelError(f"event.parents: expected a list of at most {MAX_PARENTS} links")
        previous = b""
        for parent in parents:
            if type(parent) is not CID:
                _link(parent, "event.parents")
            raw = parent.raw
            if raw <= previous:
                raise ModelError("event.parents: must be sorted by CID bytes without duplicates")
            previous = raw
        if type(height) is not int or not 1 <= height <= 2**62:
            _int(height, "event.height", 1, 2**62)
        if not parents and height != 1:
            raise ModelError("event.height: an event without parents has height 1")
        if type(author) is not str or not 0 < len(author) <= MAX_ID_LEN:
            _str(author, "event.author", MAX_ID_LEN)
        if type(key) is not bytes or len(key) != 32:
            _bytes(key, "event.key", 32)
        if type(sig) is not bytes or len(sig) != 64:
            _bytes(sig, "event.sig", 64)
        if cls is not Event:
            return cls(kind, author, height, tuple(parents), body, key, sig)
        # Every field validated above: fill the slots directly, skipping the frozen dataclass
        # __init__ (eight object.__setattr__ calls, ~40% of this method's time).
        event = _new_object(Event)
        _set_kind(event, kind)
        _set_author(event, author)
        _set_height(event, height)
        _set_parents(event, tuple(parents))
        _set_body(event, body)
        _set_key(event, key)
        _set_sig(event, sig)
        _set_v(event, FORMAT_VERSION)
        return event


_EV_WIRE_ORDER: Final = ("v", "key", "sig", "body", "kind", "author", "height", "parents")


def _event_from_block(data: bytes) -> Event:
    """Decode + validate an event block in one pass over its items (the hot path of sync and replay).

    ``codec.decode_canonical`` proves the bytes canonical; this converts the only places links may
    stand (parents, link fields of the body) and checks key order, and ``Event.from_ipld`` checks
    every field's type, so no item escapes validation. Anything unexpected falls back to the
    generic ``decode`` so errors carry its precise messages.
    """
    raw = decode_canonical(data)
    if type(raw) is not dict or tuple(raw) != _EV_WIRE_ORDER:
        return Event.from_ipld(decode(data))
    parents = raw["parents"]
    body = raw["body"]
    if type(parents) is not list or type(body) is not dict or not keys_in_order(tuple(body)):
        return Event.from_ipld(decode(data))
    try:
        raw["parents"] = links_of(parents)
        for name in body:
            if name in _LINK_FIELDS:
                body[name] = link_of(body[name])
            elif name in _LINK_LIST_FIELDS and type(body[name]) is list:
                body[name] = links_of(body[name])
    except CodecError as exc:
        raise ModelError(f"event: {exc}") from exc
    return Event.from_ipld(raw)


_EVENT_FIELDS: Final = ("kind", "author", "height", "parents", "body", "key", "sig", "v")
if tuple(f.name for f in fields(Event)) != _EVENT_FIELDS:  # keep the fast path in step with the class
    raise ImportError("Event fields changed: update Event.from_ipld's slot setters")
_new_object = object.__new__
_set_kind, _set_author, _set_height, _set_parents, _set_body, _set_key, _set_sig, _set_v = (
    Event.__dict__[name].__set__ for name in _EVENT_FIELDS
)


# --- Result -----------------------------------------------------------------------------------

_RESULT_REQUIRED: Final = frozenset({"v", "id", "peer", "type", "status", "duration_ms"})
_RESULT_OPTIONAL: Final = frozenset(
    {"steps", "reason", "stderr", "stdout", "outputs", "skipped", "artifacts", "exit_code"}
)
MAX_ARTIFACTS: Final = 64
"""Artifacts one Result may link (``actions/upload-artifact`` names; ``gha/artifacts.py``)."""
_BAD_ARTIFACT_CHARS: Final = frozenset('/\\\0"<>|*?:\r\n')


def artifact_name(name: Any, where: str = "result.artifacts") -> str:
    """An artifact name as ``actions/upload-artifact`` allows it: one path component of 1..255
    characters without ``/ \\ NUL " < > | * ? :`` CR LF; else :class:`ModelError`."""
    _str(name, where, 255)
    if name in (".", "..") or _BAD_ARTIFACT_CHARS & set(name):
        raise ModelError(f"{where}: invalid artifact name {name[:60]!r}")
    return str(name)


def _artifacts(value: Any) -> tuple[tuple[str, CID], ...]:
    """``{name: link}``: at most ``MAX_ARTIFACTS`` entries, names checked by :func:`artifact_name`."""
    if type(value) is not dict or not 0 < len(value) <= MAX_ARTIFACTS:
        raise ModelError(f"result.artifacts: expected a map of 1..{MAX_ARTIFACTS} entries")
    for name, link in value.items():
        artifact_name(name)
        _link(link, f"result.artifacts.{name[:60]}")
    return tuple(sorted(value.items()))


MAX_OUTPUTS: Final = 64
MAX_OUTPUT_NAME: Final = 100
MAX_OUTPUT_BYTES: Final = 64 * 1024
"""Bound on one job output's value (UTF-8 bytes); a Result holds at most ``MAX_OUTPUTS`` of them."""


def _outputs(value: Any, name: str) -> dict[str, str]:
    """A job's outputs: 1..``MAX_OUTPUTS`` names (GitHub's id syntax) to strings."""
    outputs = _map(value, name, MAX_OUTPUTS)
    if not outputs:
        raise ModelError(f"{name}: an empty map is written as no field")
    for key, item in outputs.items():
        if type(key) is not str or not _OUTPUT_NAME.fullmatch(key):
            raise ModelError(f"{name}: {str(key)[:40]!r} is not an output name")
        if type(item) is not str or len(item.encode("utf-8", "surrogatepass")) > MAX_OUTPUT_BYTES:
            raise ModelError(f"{name}.{key}: expected a string of at most {MAX_OUTPUT_BYTES} bytes")
    return outputs


_OUTPUT_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,99}")


class ResultStatus(StrEnum):
    """How one run ended, as a Result block's ``status`` says (values are the wire spelling).

    ``SUCCESS`` is recorded with a ``complete`` event, every other outcome with ``fail``. (Not to
    be confused with ``executor.RunOutcome``, what the executor hands the runtime.)
    """

    SUCCESS = "success"
    FAILURE = "failure"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    REFUSED = "refused"


RESULT_STATUSES: Final = frozenset(o.value for o in ResultStatus)
_RESULT_STATUS: Final = {o.value: o for o in ResultStatus}
"""value -> member: a dict lookup, where ``ResultStatus(value)`` costs a microsecond per result."""


@dataclass(frozen=True, slots=True)
class Result:
    """What one execution of a workflow produced. Logs are separate blocks (``stdout``/``stderr``
    links to raw byte-string blocks) so a result stays small however much a job prints."""

    workflow_id: str
    peer: str
    status: str
    duration_ms: int
    exit_code: int | None = None
    reason: str | None = None
    stdout: CID | None = None
    stderr: CID | None = None
    steps: tuple[Mapping[str, Any], ...] = ()
    outputs: Mapping[str, str] | None = None
    """A GitHub Actions job's outputs (``needs.<job>.outputs`` of the jobs after it); None: none."""
    skipped: bool = False
    """The job did not run: its ``if:`` (or a needed job's result) skipped it; status is success."""
    artifacts: tuple[tuple[str, CID], ...] = ()
    """``(name, root link)`` sorted by name: what the job uploaded, one ``gha/workspace.py`` tree
    each; written as the ``artifacts`` map only when there is one, so other Results keep their CIDs."""

    @property
    def outcome(self) -> ResultStatus:
        """``status`` as the enum (a Result built in code may carry an unchecked string)."""
        status = self.status
        return status if type(status) is ResultStatus else ResultStatus(status)

    def to_ipld(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "v": FORMAT_VERSION,
            "id": self.workflow_id,
            "peer": self.peer,
            "type": "result",
            "steps": [dict(s) for s in self.steps],
            "reason": self.reason,
            "status": str(self.status),
            "stderr": self.stderr,
            "stdout": self.stdout,
            "outputs": dict(self.outputs) if self.outputs else None,
            "skipped": True if self.skipped else None,
            "artifacts": {name: link for name, link in self.artifacts} if self.artifacts else None,
            "exit_code": self.exit_code,
            "duration_ms": self.duration_ms,
        }
        return {k: v for k, v in data.items() if v is not None}

    @classmethod
    def from_ipld(cls, data: Any) -> Result:
        data = _map(data, "result", 16)
        _exact_keys(data, _RESULT_REQUIRED, _RESULT_OPTIONAL, "result")
        if type(data["v"]) is not int or data["v"] != FORMAT_VERSION or data["type"] != "result":
            raise ModelError("result: unsupported version/type")
        status = data["status"]
        if type(status) is not str or status not in RESULT_STATUSES:
            raise ModelError(f"result.status: unknown status {status!r}")
        steps = data.get("steps", [])
        if type(steps) is not list or len(steps) > 256:
            raise ModelError("result.steps: expected a list of at most 256 maps")
        for step in steps:
            _plain(_map(step, "result.steps", 16), "result.steps")
        exit_code = None
        if "exit_code" in data:  # present means an integer: a ``null`` here is not "absent"
            exit_code = _int(data["exit_code"], "result.exit_code", -(2**31), 2**31)
        return cls(
            workflow_id=_str(data["id"], "result.id", MAX_ID_LEN),
            peer=_str(data["peer"], "result.peer", MAX_ID_LEN),
            status=_RESULT_STATUS[status],
            duration_ms=_int(data["duration_ms"], "result.duration_ms"),
            exit_code=exit_code,
            reason=None if "reason" not in data else _str(data["reason"], "result.reason", 4096, empty=True),
            stdout=_link(data["stdout"], "result.stdout") if "stdout" in data else None,
            stderr=_link(data["stderr"], "result.stderr") if "stderr" in data else None,
            steps=tuple(steps),
            outputs=_outputs(data["outputs"], "result.outputs") if "outputs" in data else None,
            skipped=_true(data["skipped"], "result.skipped") if "skipped" in data else False,
            artifacts=_artifacts(data["artifacts"]) if "artifacts" in data else (),
        )
