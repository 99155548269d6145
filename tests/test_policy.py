"""The ``policy`` event kind, as a user drives it: ``ipld-scheduler policy show`` / ``policy set``.

Two peers of one network (``init --network``, ``invite``, ``join``) exchange history by CAR files, the
way the CLI moves it between machines. Pins: only an admin changes the policy; a change governs the
events written on top of it (downstream), never the ones written concurrently (which every peer
keeps), on the writer and on every peer that imports them; the rate limits of a policy refuse a run
of one author's events with the fixed reason ``rate_limited``.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from cli_runner import cli_json, cli_run

PAD = "x" * 600
"""Metadata that makes a workflow block larger than the 400-byte limit the admin sets below."""


def _cli(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return cli_run(repo, "--json", *args, timeout=120)


def _ok(repo: Path, *args: str) -> dict[str, Any]:
    return cli_json(repo, *args, timeout=120)


def _refused(repo: Path, *args: str) -> dict[str, Any]:
    proc = _cli(repo, *args)
    assert proc.returncode != 0, (args, proc.stdout)
    answer: dict[str, Any] = json.loads(proc.stdout)
    assert answer["success"] is False
    return answer


def _schedule(repo: Path, wid: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return _cli(repo, "schedule", "--manual", "--id", wid, "--tags", "p2p_eligible", *extra)


def _ids(repo: Path) -> list[str]:
    return sorted(w["workflow_id"] for w in _ok(repo, "workflows")["workflows"])


def _team(tmp_path: Path) -> tuple[Path, Path]:
    alpha, beta = tmp_path / "alpha", tmp_path / "beta"
    _ok(alpha, "init", "--peer-id", "alpha", "--network", "team")
    token = _ok(alpha, "invite", "beta", "--roles", "submitter,worker")["token"]
    _ok(alpha, "export", str(tmp_path / "a.car"))
    _ok(beta, "join", token, "--car", str(tmp_path / "a.car"))
    return alpha, beta


def _sync(src: Path, dst: Path, car: Path) -> dict[str, Any]:
    _ok(src, "export", str(car))
    return _ok(dst, "import", str(car))


def test_policy_changes_govern_downstream_events_not_concurrent_ones(tmp_path: Path) -> None:
    alpha, beta = _team(tmp_path)
    shown = _ok(alpha, "policy", "show")
    assert shown["set_by"] is None and shown["height"] == 0  # the genesis policy
    assert shown["policy"]["max_workflow_bytes"] == 256 * 1024
    assert set(shown["policy"]["roles"]) == {"admin", "submitter", "worker"}

    # only admins change the policy: beta's attempt is refused before anything is written
    denied = _refused(beta, "policy", "set", "--max-workflow-bytes", "400")
    assert "not_admin" in denied["error"]
    assert _ok(beta, "policy", "show")["set_by"] is None

    # alpha tightens the size limit; beta, not having seen it yet, schedules a large workflow
    changed = _ok(alpha, "policy", "set", "--max-workflow-bytes", "400")
    assert changed["changed"] is True and changed["set_by"] == "alpha"
    assert changed["policy"]["max_workflow_bytes"] == 400
    again = _ok(alpha, "policy", "set", "--max-workflow-bytes", "400")
    assert again["changed"] is False and again["event_cid"] is None
    assert _schedule(beta, "concurrent-big", "--metadata", f"pad={PAD}").returncode == 0

    # the concurrent event stays valid on alpha, which has the policy
    imported = _sync(beta, alpha, tmp_path / "b.car")
    assert imported["applied"] >= 1 and not imported.get("rejected_by_reason")
    assert "concurrent-big" in _ids(alpha)

    # downstream of the policy a large workflow is refused, on alpha at once ...
    refused = _refused(
        alpha,
        "schedule",
        "--manual",
        "--id",
        "late-big",
        "--tags",
        "p2p_eligible",
        "--metadata",
        f"pad={PAD}",
    )
    assert "too_large" in refused["error"]
    # ... and on beta once it has the policy in its past; small ones still pass
    _sync(alpha, beta, tmp_path / "a2.car")
    seen = _ok(beta, "policy", "show")
    assert seen["set_by"] == "alpha" and seen["policy"]["max_workflow_bytes"] == 400
    refused = _refused(
        beta,
        "schedule",
        "--manual",
        "--id",
        "later-big",
        "--tags",
        "p2p_eligible",
        "--metadata",
        f"pad={PAD}",
    )
    assert "too_large" in refused["error"]
    assert _schedule(beta, "small").returncode == 0
    assert _ids(beta) == ["concurrent-big", "small"]
    assert "late-big" not in _ids(alpha)


def test_role_rights_and_rate_limits_set_by_the_cli(tmp_path: Path) -> None:
    alpha, beta = _team(tmp_path)
    _sync(beta, alpha, tmp_path / "joined.car")  # alpha's policy event then builds on beta's join
    bad = _refused(alpha, "policy", "set", "--role", "ci=submit,deploy")
    assert "unknown right" in bad["error"] and bad["code"] == "invalid"
    unknown = _refused(alpha, "policy", "set", "--drop-role", "nobody")
    assert "'nobody' is not in the policy" in unknown["error"]
    assert _ok(alpha, "policy", "show")["set_by"] is None  # refused changes write nothing
    set_ = _ok(
        alpha,
        "policy",
        "set",
        "--role",
        "ci=submit,tags:gpu+linux",
        "--drop-role",
        "worker",
        "--rate-window",
        "6",
        "--rate-events",
        "2",
    )
    rules = set_["policy"]
    assert rules["roles"]["ci"] == {"run": False, "tags": ["gpu", "linux"], "submit": True}
    assert "worker" not in rules["roles"] and (rules["rate_window"], rules["rate_events"]) == (6, 2)
    _sync(alpha, beta, tmp_path / "a.car")
    # beta's own run of events (its lineage restarts on alpha's head): two fit in the window of six
    # heights, the third is refused with the fixed reason and nothing is written
    assert _schedule(beta, "one").returncode == 0
    assert _schedule(beta, "two").returncode == 0
    limited = _refused(beta, "schedule", "--manual", "--id", "three", "--tags", "p2p_eligible")
    assert "rate_limited" in limited["error"]
    assert _ids(beta) == ["one", "two"]
    human = cli_run(beta, "policy", "show", timeout=120)
    assert human.returncode == 0 and "set by alpha" in human.stdout and "gpu, linux" in human.stdout
