#!/bin/sh
# Kubo configuration for the ipld-scheduler compose setup (docker-compose.yml at the repo root).
#
# The ipfs/kubo image's entrypoint (start_ipfs) runs every /container-init.d/*.sh on EVERY start of
# the container: after `ipfs init` (first start only) and before `exec ipfs daemon`, as the
# unprivileged `ipfs` user, with the daemon not running yet (so `ipfs config` edits the repo's
# config file directly). This script is idempotent: each run sets the same values, so editing it
# and restarting a node (`docker compose restart ipfs1`) applies the change to an existing repo.
#
# What it sets up:
#   * a PRIVATE swarm: the pre-shared key mounted at $IPLD_SWARM_KEY_FILE is installed as
#     $IPFS_PATH/swarm.key (the compose file also sets LIBP2P_FORCE_PNET=1, so the daemon refuses
#     to start without one). docker/swarm.key is a DEMO key committed to the repository: everybody
#     who has the repository has it. Generate your own before running anything that matters:
#         printf '/key/swarm/psk/1.0.0/\n/base16/\n%s\n' "$(openssl rand -hex 32)" > docker/swarm.key
#   * no public network at all: no bootstrap peers, AutoConf off (Kubo >= 0.38 would otherwise fetch
#     public bootstrap peers, DNS resolvers and delegated routers), no delegated routing, AutoTLS
#     off, DHT routing among the private nodes only (`auto` routing is refused in private networks);
#   * TCP only on 4001: QUIC, WebTransport and WebRTC cannot carry a pre-shared key;
#   * the RPC API on 0.0.0.0:5001 INSIDE the container, which the compose file makes reachable from
#     the compose network only (no host port is published for 5001: the RPC API is admin access);
#     the gateway stays on the container's loopback;
#   * pubsub on (gossipsub): the scheduler peers announce their Merkle-clock heads over it.
#
# Peering between the three nodes is configured at run time by the one-shot `mesh` service
# (docker/mesh.py): Kubo peer IDs only exist after `ipfs init`, so they cannot be written here.
set -eu

repo="${IPFS_PATH:-/data/ipfs}"
key_source="${IPLD_SWARM_KEY_FILE:-/run/ipld-scheduler/swarm.key}"

log() {
    printf 'ipld-scheduler init: %s\n' "$*"
}

# --- private network ---------------------------------------------------------------------------
if [ ! -s "$key_source" ]; then
    log "no swarm key at $key_source (mount docker/swarm.key there); refusing to start a public node" >&2
    exit 1
fi
if ! head -n 1 "$key_source" | grep -q '^/key/swarm/psk/1.0.0/$'; then
    log "$key_source is not a swarm key (first line must be /key/swarm/psk/1.0.0/)" >&2
    exit 1
fi
if ! cmp -s "$key_source" "$repo/swarm.key" 2>/dev/null; then
    cat "$key_source" > "$repo/swarm.key.tmp"
    chmod 0400 "$repo/swarm.key.tmp"
    mv -f "$repo/swarm.key.tmp" "$repo/swarm.key"
    log "installed the swarm key from $key_source"
fi

ipfs bootstrap rm --all > /dev/null
ipfs config --json AutoConf.Enabled false
ipfs config --json DNS.Resolvers '{}'
ipfs config --json Routing.DelegatedRouters '[]'
ipfs config --json Ipns.DelegatedPublishers '[]'
ipfs config Routing.Type dht
ipfs config --json AutoTLS.Enabled false

# --- transports and listeners ------------------------------------------------------------------
ipfs config --json Addresses.Swarm '["/ip4/0.0.0.0/tcp/4001"]'
ipfs config --json Swarm.Transports.Network.QUIC false
ipfs config --json Swarm.Transports.Network.WebTransport false
ipfs config --json Swarm.Transports.Network.WebRTCDirect false
ipfs config Addresses.API /ip4/0.0.0.0/tcp/5001
ipfs config Addresses.Gateway /ip4/127.0.0.1/tcp/8080

# --- pubsub ------------------------------------------------------------------------------------
ipfs config --json Pubsub.Enabled true
ipfs config Pubsub.Router gossipsub

log "private swarm, pubsub on, RPC API on :5001 (compose network only); peer $(ipfs config Identity.PeerID)"
