#!/usr/bin/env python3
"""Schedule-time acceptance of a corpus of GitHub Actions workflow files.

Runs ``ipld_scheduler.gha.plan.plan_workflow`` over every ``*.yml``/``*.yaml`` file of a directory
(default: tests/data/workflows) and prints the corpus size, the acceptance rate, the refusal reasons
with their counts, file-level errors, and what the accepted jobs ask of act (actions, reusable
workflows, dynamic matrices, Docker). Exits 1 when a file makes the planner crash.

Usage: python scripts/gha-corpus-report.py [DIR] [--no-docker] [--json]
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import traceback
from pathlib import Path

from ipld_scheduler.gha.plan import WorkflowFileError, plan_workflow

DEFAULT_DIR = Path(__file__).resolve().parent.parent / "tests" / "data" / "workflows"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", nargs="?", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--no-docker", action="store_true", help="plan for a peer without Docker")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    files = sorted(p for p in args.directory.iterdir() if p.suffix in (".yml", ".yaml"))
    accepted = refused = runs = crashes = 0
    reasons: collections.Counter[str] = collections.Counter()
    file_errors: collections.Counter[str] = collections.Counter()
    actions: collections.Counter[str] = collections.Counter()
    features: collections.Counter[str] = collections.Counter()
    for path in files:
        try:
            plan = plan_workflow(
                path.read_text(encoding="utf-8"), docker_available=False if args.no_docker else None
            )
        except WorkflowFileError as exc:
            file_errors[exc.reason.value] += 1
            print(f"{path.name}: {exc}", file=sys.stderr)
            continue
        except Exception:  # a crash is what this report exists to find
            crashes += 1
            print(f"{path.name}: CRASH\n{traceback.format_exc()}", file=sys.stderr)
            continue
        accepted += len(plan.jobs)
        refused += len(plan.refusals)
        for refusal in plan.refusals:
            reasons[refusal.reason.value] += 1
        for job in plan.jobs:
            runs += max(1, len(job.matrix_legs))
            actions.update(action.split("@")[0] for action in job.uses)
            features["reusable workflow (uses:)"] += job.calls is not None
            features["matrix evaluated by act"] += job.matrix_dynamic
            features["runs-on evaluated by act"] += not job.runs_on.resolved and (
                not job.matrix_legs or any(not leg.runs_on.resolved for leg in job.matrix_legs)
            )
            features["needs Docker"] += job.requires_docker
            features["has needs"] += bool(job.needs)
    total = accepted + refused
    rate = accepted / total if total else 0.0
    report = {
        "files": len(files),
        "jobs": total,
        "job_runs_with_matrix_legs": runs,
        "accepted": accepted,
        "acceptance": round(rate, 4),
        "refusal_reasons": dict(reasons.most_common()),
        "file_errors": dict(file_errors.most_common()),
        "crashes": crashes,
        "features": dict(features.most_common()),
        "top_actions": dict(actions.most_common(15)),
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 1 if crashes else 0
    print(f"files: {len(files)}")
    print(f"jobs: {total} ({runs} runs counting matrix legs)")
    print(f"acceptance: {accepted}/{total} = {100 * rate:.1f} %")
    print("refusal reasons:" + ("" if reasons else " none"))
    for reason, count in reasons.most_common():
        print(f"  {count:4d}  {reason}")
    print("file-level errors:" + ("" if file_errors else " none"))
    for reason, count in file_errors.most_common():
        print(f"  {count:4d}  {reason}")
    print(f"crashes: {crashes}")
    print("accepted jobs that rely on act:")
    for feature, count in features.most_common():
        print(f"  {count:4d}  {feature}")
    print("most used actions:")
    for action, count in actions.most_common(15):
        print(f"  {count:4d}  {action}")
    return 1 if crashes else 0


if __name__ == "__main__":
    sys.exit(main())
