#!/usr/bin/env python3
"""Run a local network of js-ipfs test daemons from the command line (wraps ``tests/ipfs_net.py``).

    scripts/ipfs-testnet.py install [--force]      # npm ci of the pinned js-ipfs (tests/ipfs)
    scripts/ipfs-testnet.py start 3 [--dir .ipfs-test] [--json]   # prints one RPC API URL per daemon
    scripts/ipfs-testnet.py status [--dir .ipfs-test]
    scripts/ipfs-testnet.py stop [--dir .ipfs-test] [--remove]

The daemons are detached (they outlive this command) until ``stop``. ``--dir`` defaults to ``.ipfs-test``
(git-ignored).

Owns: argument parsing and printing. Must not: implement any daemon handling itself (the harness does),
or stop processes it cannot prove are its daemons.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import ipfs_net

DEFAULT_DIR = Path(".ipfs-test")


def _start(count: int, root: Path, as_json: bool) -> int:
    if (root / ipfs_net.STATE_FILE).exists():
        net = ipfs_net.IpfsNet.load(root)
        if len(net) != count:
            print(f"{root} holds a network of {len(net)} nodes; stop --remove it first", file=sys.stderr)
            return 2
    else:
        net = ipfs_net.IpfsNet.create(root, count)
    net.start(detach=True)
    if as_json:
        print(json.dumps([node.to_json() for node in net], indent=2))
    else:
        for node in net:
            print(node.api_url)
    return 0


def _status(root: Path) -> int:
    net = ipfs_net.IpfsNet.load(root)
    for node in net:
        state = f"running pid {node.pid}" if node.running() else "stopped"
        print(f"{node.name}  {node.api_url}  {node.peer_id or '?'}  {state}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    install = sub.add_parser("install", help="install the pinned js-ipfs into tests/ipfs/node_modules")
    install.add_argument("--force", action="store_true", help="reinstall even if up to date")
    start = sub.add_parser("start", help="start N daemons (created on first use) and print their API URLs")
    start.add_argument("count", type=int)
    start.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="directory of the repos and net.json")
    start.add_argument("--json", action="store_true", help="print node details as JSON")
    stop = sub.add_parser("stop", help="stop the daemons of a network")
    stop.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    stop.add_argument("--remove", action="store_true", help="also delete the directory")
    status = sub.add_parser("status", help="list the nodes of a network")
    status.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    args = parser.parse_args(argv)

    try:
        if args.command == "install":
            if args.force:
                os.environ["FORCE"] = "1"
            ipfs_net.install()
            return 0
        if args.command == "start":
            if args.count < 1:
                parser.error("count must be at least 1")
            return _start(args.count, args.dir, args.json)
        if args.command == "status":
            return _status(args.dir)
        net = ipfs_net.IpfsNet.load(args.dir)
        if args.remove:
            net.remove()
        else:
            net.stop()
        return 0
    except ipfs_net.IpfsNetError as exc:
        print(f"ipfs-testnet: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
