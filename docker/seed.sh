#!/bin/sh
# Schedule the sample workflows of the compose setup (the one-shot `seed` service).
#
# Runs in the network namespace of peer0 with peer0's repo volume mounted read-only, so the CLI finds
# the running peer through <repo>/api exactly as `docker compose exec peer0 ipld-scheduler ...` does.
# Idempotent: scheduling the same definition under the same id again is a no-op, so re-running
# `docker compose up seed` (or the whole stack) does not duplicate work.
#
# Every workflow below carries a P2P tag; the owning peer (the same on every peer, derived from the
# DAG) runs its `--run` command with bash and records stdout/stderr and the exit status as IPLD blocks.
set -eu

repo="${IPLD_SCHEDULER_REPO:-/data/repo}"
cli() {
    ipld-scheduler --repo "$repo" "$@"
}

echo "seed: waiting for the peer serving $repo"
tries=0
until cli status --json > /dev/null 2>&1; do
    tries=$((tries + 1))
    if [ "$tries" -ge 120 ]; then
        echo "seed: no peer answered for $repo after 120 tries" >&2
        cli status || true
        exit 1
    fi
    sleep 1
done

cli schedule --id demo-hello --tags p2p_eligible \
    --run 'echo "hello from $IPLD_SCHEDULER_PEER_ID (workflow $IPLD_SCHEDULER_WORKFLOW_ID)"'

for i in 1 2 3 4 5 6; do
    cli schedule --id "demo-data-$i" --tags data_processing --priority "$i" \
        --metadata "batch=$i" \
        --run "python3 -c 'import hashlib; print(hashlib.sha256(b\"batch $i\").hexdigest())'; sleep 2"
done

cli schedule --id demo-scrape --tags web_scrape \
    --run 'printf "pretend we fetched %s\n" https://example.org; sleep 1'

# A failure is recorded too (status failed, exit code 3, stderr kept as a block).
cli schedule --id demo-fails --tags p2p_eligible --run 'echo "about to fail" >&2; exit 3'

echo "seed: scheduled; the owners run them now. Watch: docker compose logs -f peer0 peer1 peer2"
cli workflows
