"""The package's shape, checked by parsing every module with ``ast`` (no imports, nothing run).

Pins two rules of issue 8:

(a) event kinds and workflow statuses are enums (``model.EventKind``, ``model.WorkflowStatus``): no
    module but ``model`` compares a string literal spelling one of them (``kind == "claim"``,
    ``status in ("completed", "failed")``), matches on one (``case "claim":``), or keys a dispatch
    table by them (a dict literal whose keys are two or more such spellings). Docstrings, help text
    and messages are untouched: only comparisons, ``match`` patterns and dict keys count.
(b) layers: faces (cli, web, mcp_tools, demo, scheduler, testing) -> operations (ops, client,
    routes, access) -> runtime (peer and its parts, executor, daemon, sandbox, gha, actions, metrics,
    backends, config, logs) -> replica (replica, repo, group_commit, embedded, kubo) -> core (codec,
    model, events, blocks, clock, state, assign, heap, sync, identity, car, dagjson, reasons, errors,
    options, liveness, announce, ports, trust, genesis). A module may import its own layer or lower
    ones, never a higher one (lazy imports inside functions included).

Each rule has a test over the modules the core owns and a whole-package test; all of them are
strict (issue 8's "done when"). A stop cause, a step status or act's job result that happens to be
spelled like a kind or status (``"cancel"``, ``"cancelled"``) gets an enum of its own
(``executor.StopCause``, ``executor.StepStatus``, ``gha.act.ActResult``) or uses
``model.ResultStatus``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from ipld_scheduler.model import EventKind, WorkflowStatus

PACKAGE = Path(__file__).resolve().parent.parent / "ipld_scheduler"

SPELLINGS = frozenset(k.value for k in EventKind) | frozenset(s.value for s in WorkflowStatus)
"""String values that must only be spelled as enum members outside ``model``."""

CORE_OWNED = frozenset(
    {
        "model",
        "events",
        "blocks",
        "state",
        "codec",
        "sync",
        "replica",
        "identity",
        "car",
        "dagjson",
        "ops",
        "assign",
        "heap",
    }
)
"""Modules this branch reshaped: held to both rules strictly."""

FACES, OPERATIONS, RUNTIME, REPLICA, CORE = 4, 3, 2, 1, 0
LAYERS: dict[str, int] = {
    "cli": FACES,
    "web": FACES,
    "mcp_tools": FACES,
    "demo": FACES,
    "scheduler": FACES,
    "testing": FACES,
    "wording": FACES,
    "ops": OPERATIONS,
    "client": OPERATIONS,
    "joining": OPERATIONS,
    "routes": OPERATIONS,
    "access": OPERATIONS,
    "indexes": OPERATIONS,
    "answers": OPERATIONS,
    "peer": RUNTIME,
    "runtime": RUNTIME,
    "executor": RUNTIME,
    "daemon": RUNTIME,
    "sandbox": RUNTIME,
    "gha": RUNTIME,
    "metrics": RUNTIME,
    "backends": RUNTIME,
    "config": RUNTIME,
    "logs": RUNTIME,
    "replica": REPLICA,
    "network": REPLICA,
    "repo": REPLICA,
    "repo_perms": REPLICA,
    "group_commit": REPLICA,
    "collector": REPLICA,
    "embedded": REPLICA,
    "kubo": REPLICA,
    "staging": REPLICA,
    "backfill": REPLICA,
    "car_chunks": REPLICA,
    **dict.fromkeys(
        [
            "codec",
            "model",
            "events",
            "blocks",
            "lru",
            "clock",
            "state",
            "assign",
            "heap",
            "sync",
            "identity",
            "car",
            "dagjson",
            "reasons",
            "errors",
            "options",
            "liveness",
            "announce",
            "ports",
            "trust",
            "genesis",
            "authority",
            "schemas",
            "scrub",
            "runner_labels",
            "derived",
            "waits",
            "snapshot",
            "checkpoint",
        ],
        CORE,
    ),
}
"""Top-level module or sub-package name -> layer (higher imports lower, never the reverse)."""


def _modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts == ("__init__",):
            continue  # the package's public surface re-exports from every layer by design
        yield ".".join(parts), path


def _top(module: str) -> str:
    return module.split(".")[0]


def _docstrings(tree: ast.AST) -> set[int]:
    ids: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def _spelled(node: ast.AST) -> list[str]:
    """Kind/status spellings ``node`` is (a constant) or holds (a tuple/list/set of constants)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in SPELLINGS:
        return [node.value]
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return [v for item in node.elts for v in _spelled(item)]
    return []


NOT_KINDS = frozenset({"OPERATIONS"})
"""Tables whose keys only look like kinds: ``ops.OPERATIONS`` maps *operation* names (``schedule``,
``cancel``) to the functions behind every interface."""


def literal_dispatch(tree: ast.AST) -> list[tuple[int, str]]:
    """``(line, what)`` for every comparison, match pattern or dispatch table spelled in strings."""
    found: list[tuple[int, str]] = []
    exempt = {
        id(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign | ast.AnnAssign)
        and any(
            isinstance(t, ast.Name) and t.id in NOT_KINDS
            for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
        )
    }
    for node in ast.walk(tree):
        if id(node) in exempt:
            continue
        if isinstance(node, ast.Compare):
            for operand in [node.left, *node.comparators]:
                for value in _spelled(operand):
                    found.append((node.lineno, f"compares with {value!r}"))
        elif isinstance(node, ast.MatchValue):
            for value in _spelled(node.value):
                found.append((node.lineno, f"matches {value!r}"))
        elif isinstance(node, ast.Dict):
            keys = [v for k in node.keys if k is not None for v in _spelled(k)]
            if len(keys) >= 2:
                found.append((node.lineno, f"dispatch table keyed by {sorted(keys)}"))
    return sorted(found)


def upward_imports(module: str, tree: ast.AST) -> list[tuple[int, str]]:
    """``(line, target)`` for every import of a package module in a higher layer than ``module``."""
    mine = LAYERS.get(_top(module))
    assert mine is not None, f"{module} has no layer: add it to LAYERS"
    package = module.split(".")[:-1]
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                stem = [*base, *(node.module.split(".") if node.module else [])]
                targets = [
                    ".".join([*stem, a.name]) if not node.module else ".".join(stem) for a in node.names
                ]
            elif node.module and node.module.startswith("ipld_scheduler."):
                targets = [node.module.removeprefix("ipld_scheduler.")]
        elif isinstance(node, ast.Import):
            targets = [
                a.name.removeprefix("ipld_scheduler.")
                for a in node.names
                if a.name.startswith("ipld_scheduler.")
            ]
        for target in targets:
            if not target:
                continue
            layer = LAYERS.get(_top(target))
            if layer is not None and layer > mine:
                found.append((node.lineno, target))
    return sorted(found)


def _violations(check: str, modules: frozenset[str] | None) -> list[str]:
    out: list[str] = []
    for module, path in _modules():
        if modules is not None and module not in modules:
            continue
        if check == "literals" and module == "model":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        hits = literal_dispatch(tree) if check == "literals" else upward_imports(module, tree)
        out += [f"{module}:{line}: {what}" for line, what in hits]
    return out


def test_every_module_has_a_layer() -> None:
    missing = sorted({_top(m) for m, _ in _modules()} - set(LAYERS))
    assert not missing, f"modules without a layer: {missing}"


def test_core_modules_spell_kinds_and_statuses_as_enums() -> None:
    assert _violations("literals", CORE_OWNED) == []


def test_core_modules_import_only_their_layer_or_lower() -> None:
    assert _violations("imports", CORE_OWNED) == []


def test_no_module_spells_kinds_or_statuses_as_strings() -> None:
    assert _violations("literals", None) == []


def test_no_module_imports_a_higher_layer() -> None:
    assert _violations("imports", None) == []


# --- the checks themselves can fail ---------------------------------------------------------------


def test_the_literal_check_sees_comparisons_patterns_and_tables() -> None:
    source = '''
"""docstring mentioning claim and completed is fine"""
def f(kind, status):
    """so is "claim" here"""
    if kind == "claim": pass
    if status in ("completed", "failed"): pass
    match kind:
        case "evict": pass
    table = {"schedule": 1, "cancel": 2}
    OPERATIONS = {"schedule": 1, "cancel": 2}
    body = {"id": 1, "schedule": 2}
    log = "claim"
    help_text = click.option("--status", help="pending, running or completed")
'''
    hits = literal_dispatch(ast.parse(source))
    assert [line for line, _ in hits] == [5, 6, 6, 8, 9]


def test_the_layer_check_sees_relative_absolute_and_lazy_imports() -> None:
    source = """
from .ops import schedule
from . import cli
import ipld_scheduler.peer
from .codec import CID
def later():
    from .web.api import make_app
"""
    hits = upward_imports("replica", ast.parse(source))
    assert hits == [(2, "ops"), (3, "cli"), (4, "peer"), (7, "web.api")]
    assert upward_imports("web.api", ast.parse("from ..ops import status\nfrom .. import replica")) == []
