#!/usr/bin/env bash
# Run the original prototype's own test suite against ipld_scheduler, changing only its import path.
#
#   bash scripts/check-prototype-tests.sh PATH/TO/test_p2p_workflow_scheduler.py [pytest args...]
#
# The test file is the prototype's (the public ipfs_datasets_py repository, tests/
# test_p2p_workflow_scheduler.py). It is NOT part of this repository (its repository's licence files
# disagree), so keep your copy outside the tree; this script copies it into a temporary directory,
# rewrites the import path there and runs pytest on the copy. Nothing else in the file changes:
#   from ipfs_datasets_py[.p2p_networking].p2p_workflow_scheduler import ...  ->  from ipld_scheduler import ...
#   import ipfs_datasets_py[.p2p_networking].p2p_workflow_scheduler as m      ->  import ipld_scheduler.scheduler as m
# (the prototype kept its public names and its `_scheduler_instance` global in one module; ours
# exports the names from the package and keeps the global in `ipld_scheduler.scheduler`).
# The last line printed is pytest's summary; the exit status is pytest's.
set -euo pipefail

if [ "$#" -lt 1 ] || [ ! -f "$1" ]; then
    echo "usage: $0 PATH/TO/test_p2p_workflow_scheduler.py [pytest args...]" >&2
    exit 2
fi
src=$(realpath "$1")
shift
root=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$root/.venv/bin/python}
[ -x "$python" ] || python=python3

work=$(mktemp -d "${TMPDIR:-/tmp}/prototype-tests.XXXXXX")
trap 'rm -rf "$work"' EXIT

module='ipfs_datasets_py\(\.p2p_networking\)\{0,1\}\.p2p_workflow_scheduler'
sed -e "/^[[:space:]]*from[[:space:]]/s/$module/ipld_scheduler/" \
    -e "/^[[:space:]]*import[[:space:]]/s/$module/ipld_scheduler.scheduler/" \
    "$src" > "$work/test_prototype.py"

if grep -nE '^[[:space:]]*(from|import)[[:space:]]+ipfs_datasets_py' "$work/test_prototype.py" >&2; then
    echo "$0: import lines above were not rewritten" >&2
    exit 2
fi

# An empty ini in the temp dir: the copy runs with pytest's defaults, not with this repository's
# configuration (the prototype's tests mark their async test themselves).
: > "$work/pytest.ini"
cd "$work"
exec "$python" -m pytest -p no:cacheprovider -c "$work/pytest.ini" --rootdir "$work" \
    -o asyncio_default_fixture_loop_scope=function "$@" test_prototype.py
