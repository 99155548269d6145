#!/bin/sh
# Entry point of the compose peers: found (the admin) or join (the others) the peers' network on the
# first start, then `exec ipld-scheduler "$@"` with the `run` command line unchanged.
#
# Every repo belongs to a network (docs/trust.md): the admin's repo founds it with `init`, invites
# each peer it lists in --peers and leaves its history (a CAR) and one token per peer on the shared
# volume $NETWORK_DIR; each other peer joins with its token on its first start and deletes the token.
# A token is a one-time secret: the volume is mounted in the peers only. The admin then hears a
# joined peer at once (its announcements carry the redemption proof), no CAR goes back.
#
# Reads the --repo, --ipfs-api, --peer-id and --peers options from the run command line.
set -eu

admin="${NETWORK_ADMIN:-peer0}"
shared="${NETWORK_DIR:-/data/network}"
name="${NETWORK_NAME:-compose}"
repo="" api="" peer="" members=""
for arg in "$@"; do
    case "$arg" in
        --repo=*) repo="${arg#--repo=}" ;;
        --ipfs-api=*) api="${arg#--ipfs-api=}" ;;
        --peer-id=*) peer="${arg#--peer-id=}" ;;
        --peers=*) members="${arg#--peers=}" ;;
    esac
done
if [ -z "$repo" ] || [ -z "$peer" ]; then
    echo "network.sh: the command line needs --repo=DIR and --peer-id=NAME" >&2
    exit 2
fi

cli() {
    if [ -n "$api" ]; then
        ipld-scheduler --repo "$repo" --ipfs-api "$api" "$@"
    else
        ipld-scheduler --repo "$repo" "$@"
    fi
}

if cli status --json > /dev/null 2>&1; then
    : # the repo has its identity and network already (a restart)
elif [ "$peer" = "$admin" ]; then
    echo "network.sh: $peer founds network '$name' and invites: ${members:-nobody}"
    cli init --peer-id "$peer" --network "$name" > /dev/null
    for member in $(echo "$members" | tr ',' ' '); do
        cli invite "$member" > "$shared/$member.token.tmp"
    done
    cli export "$shared/network.car.tmp" > /dev/null  # the invitations' peer-adds included
    mv "$shared/network.car.tmp" "$shared/network.car"
    for member in $(echo "$members" | tr ',' ' '); do
        mv "$shared/$member.token.tmp" "$shared/$member.token"
    done
else
    echo "network.sh: $peer waits for its invitation from $admin"
    tries=0
    until [ -s "$shared/$peer.token" ] && [ -s "$shared/network.car" ]; do
        tries=$((tries + 1))
        if [ "$tries" -ge 300 ]; then
            echo "network.sh: no invitation for $peer in $shared after 300 s" >&2
            exit 1
        fi
        sleep 1
    done
    cli join "$(cat "$shared/$peer.token")" --car "$shared/network.car"
    rm -f "$shared/$peer.token"
fi
exec ipld-scheduler "$@"
