"""Compaction: the store's state written as a snapshot, then the log
segments that the snapshot holds and every active peer holds are dropped.

    compact(node) -> dict       what it did (mycelium compact, serve)

Order, so that a crash at any step loses nothing: seal the segment being
written (everything so far is in sealed segments, on disk); checkpoint the
store; write the snapshot (temp file, fsync, rename) naming the changes
about to be dropped; only then delete those segments. A crash before the
rename leaves the old snapshot and every segment; after it, a segment not
yet deleted is only read again (merges are idempotent).
"""
import os
import time

from ..errors import AgentError
from ..store import BlobCorrupt
from .snapshot import write_store

__all__ = ["compact", "snapshot_header", "write_snapshot"]


def snapshot_header(node, dropped) -> dict:
    return {"v": 1, "actor": "%016x" % node.actor, "time": int(time.time()),
            "log": list(node.log.end()), "known": node.known.to_json(),
            "dropped": dropped.to_json(), "clock": node.clock.last,
            "heads": {"%016x" % a: [s, h.hex()] for a, (s, h) in node.heads.items()}}


def compact(node, drop: bool = True) -> dict:
    """Write a new snapshot of node's store and drop the log segments it
    makes redundant (drop=False: the snapshot only)."""
    node._writable()
    t0 = time.monotonic()
    log = node.log
    before = log.size()
    log.seal()
    node.checkpoint()
    idx = node.log_index
    frontier = node.frontier
    frontier.expect(_configured(node.data_dir))
    candidates = []
    if drop and _all_hold(frontier, node.known):
        # every active peer holds all this device holds: every sealed segment
        # goes, and no segment index needs building (a lone device, a fleet
        # in step: the usual case)
        candidates = list(idx.sealed())
        dropped = node.dropped.union(node.known) if candidates else node.dropped
    else:
        if drop:
            for n in idx.sealed():
                if frontier.stable(idx.runs(n)):
                    candidates.append(n)
        dropped = node.dropped.union(idx.known_of(candidates)) if candidates else node.dropped
    path = node.snapshot_path
    os.makedirs(os.path.dirname(path), exist_ok=True)
    header = snapshot_header(node, dropped)
    got = write_snapshot(node, path, header)
    node.dropped = dropped
    node.snapshot_damaged = None
    for n in candidates:
        log.drop(n)
        idx.forget(n)
    frontier.save()
    out = {"snapshot_bytes": got["bytes"], "records": got["records"],
           "segments_dropped": len(candidates), "log_bytes_before": before,
           "log_bytes_after": log.size(), "seconds": round(time.monotonic() - t0, 3),
           "time": header["time"]}
    left = idx.sealed()
    out["held_back_by"] = sorted(pid for pid, k in frontier.active().items()
                                 if left and not idx.held_by(left[0], k))
    node.last_compaction = out
    node._log_at_compaction = log.written
    return out


def write_snapshot(node, path, header) -> dict:
    """write_store, repairing a damaged record first: a snapshot never lacks one."""
    while True:
        try:
            return write_store(path, node.store, header)
        except BlobCorrupt as e:
            node.repair({e.kid})


def _all_hold(frontier, known) -> bool:
    if frontier.damaged:
        return False
    return all(not k.lacks_any(known) for k in frontier.active().values())


def _configured(data_dir) -> dict:
    """The peers this device was told of (sync/peers.json); none if unreadable
    (history is then held back only by the peers heard from)."""
    from ..sync.peers import load_peers
    try:
        got = load_peers(data_dir)
    except (AgentError, OSError, ValueError):
        return {}
    return got if isinstance(got, dict) else {}


def safe_compact(node, log=None) -> dict:
    """compact() for serve: a failure (a full disk) is reported, not raised."""
    try:
        return compact(node)
    except AgentError as e:
        node.events.append("compaction failed (%s); retrying later" % e)
        node.timeline.emit("error", what="compaction", msg=str(e))
        if log is not None:
            log("compaction failed: %s" % e)
        return None
