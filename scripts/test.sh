#!/usr/bin/env bash
# The README's test command: installs everything the tests need from scratch, then runs them.
#   - a venv in .venv with the package and its [test] extras
#   - js-ipfs (pinned, npm) for the integration tests against real IPFS daemons
#   - Debian chromium for the dashboard's browser test
# Extra arguments go to pytest (e.g. `bash scripts/test.sh -k clock`).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[test]'

bash scripts/install-test-ipfs.sh

# Debian packages: chromium (dashboard browser test), bubblewrap (the job sandbox).
missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -x /usr/bin/bwrap ] || missing+=(bubblewrap)
[ -x /usr/bin/promtool ] || missing+=(prometheus)
if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}") >/dev/null
    else
        echo "note: missing ${missing[*]} (sudo apt-get install ${missing[*]}): tests that need them skip" >&2
    fi
fi

set +e
.venv/bin/python -m pytest "$@"
status=$?
set -e
if [ "$status" = 5 ]; then
    echo "pytest collected no tests" >&2
    exit 1
fi
exit "$status"
