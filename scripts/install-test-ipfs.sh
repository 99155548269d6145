#!/usr/bin/env bash
# Install the js-ipfs 0.66.1 test daemons (tests/ipfs/node_modules) exactly as pinned in
# tests/ipfs/package-lock.json. Used by .ci/run and by `scripts/ipfs-testnet.py install`.
#
# Idempotent: skips the install when node_modules was built from the same lockfile with the same
# Node version (stamp file); FORCE=1 or --force reinstalls. ~35 s with a warm npm cache, ~3 min cold.
# --ignore-scripts: none of the install scripts is needed on Linux x64 (classic-level ships prebuilds,
# the others build browser files or print notices), and npm >= 11 would skip them anyway.
set -euo pipefail

cd "$(dirname "$0")/.."
dir=tests/ipfs

if [[ "${1:-}" == "--force" ]]; then
    FORCE=1
fi
for tool in node npm; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "install-test-ipfs: '$tool' not found; js-ipfs test daemons need Node >= 18 and npm" >&2
        exit 1
    fi
done

stamp_file="$dir/node_modules/.ipld-scheduler-stamp"
stamp="$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1) node-$(node --version)"
if [[ "${FORCE:-0}" != 1 && -f "$dir/node_modules/ipfs/src/cli.js" && -f "$stamp_file" ]] \
    && [[ "$(cat "$stamp_file")" == "$stamp" ]]; then
    echo "install-test-ipfs: $dir/node_modules is up to date"
    exit 0
fi

echo "install-test-ipfs: npm ci in $dir (about 35 s with a warm cache, 3 min cold)"
npm ci --prefix "$dir" \
    --fetch-retries="${NPM_FETCH_RETRIES:-4}" \
    --fetch-retry-mintimeout=2000 \
    --fetch-retry-maxtimeout=30000 \
    --ignore-scripts \
    --no-audit \
    --no-fund

if [[ ! -f "$dir/node_modules/ipfs/src/cli.js" ]]; then
    echo "install-test-ipfs: npm ci finished but $dir/node_modules/ipfs/src/cli.js is missing" >&2
    exit 1
fi
echo "$stamp" > "$stamp_file"
echo "install-test-ipfs: ok ($(node -p "require('./$dir/node_modules/ipfs/package.json').version" 2>/dev/null || echo '?'))"
