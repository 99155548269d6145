"""The peer runtime in parts (cf. go-ds-crdt's heads/set/broadcaster files); :mod:`.peer` wires them.

* :mod:`.policy`: pure helpers (balance offer, queue order, work-directory names, log joining);
* :mod:`.stats`: :class:`~.stats.Stats`, the typed runtime figures metrics and status read, and the
  enums of their labels (:class:`~.stats.Loop`, :class:`~.stats.SyncDrop`);
* :mod:`.announcer`: announcing heads, jittered rebroadcast that doubles as the heartbeat;
* :mod:`.watch`: who we hear (liveness view of the members, persisted "ever heard" set);
* :mod:`.syncqueue`: received announcements through the gate, queued merges, "caught up";
* :mod:`.supervisor`: claim, run with the executor, record the Result;
* :mod:`.leftovers`: run files, and killing what a crashed incarnation's runs left running;
* :mod:`.workroot`: where jobs run, a per-repo directory outside the repo (user cache dir);
* :mod:`.membership`: evict, rejoin, recover orphaned claims, balance;
* :mod:`.peer`: :class:`~.peer.Peer`, the only module that knows all the parts.

Every part writes events as the typed payloads of :mod:`ipld_scheduler.events`
(``Replica.append(Claim(...))``), never as a kind string and a dict.

Must not: import :mod:`.peer` from any part (parts are handed what they need), or anything above the
runtime layer (ops, faces). This package ``__init__`` imports nothing, so importing a part never
drags the peer in.
"""
