"""A sync session's events on the timeline (agent/events.py): the one map
from Session events to timeline kinds, used by `serve` and `mycelium sync`.

Forks, quarantines, held and refused changes, snapshots, records joined by
a convergence check (sync.mended) and session ends
are written one by one; changes sent and merged are tallied per peer.
"""
from .devid import display_id

__all__ = ["note"]


def note(timeline, ev, peer_id) -> None:
    """Put one Session event on the timeline; peer_id: the session's peer."""
    k = ev.kind
    dev = display_id(peer_id) if peer_id else None
    emit = timeline.emit
    if k == "connected":
        emit("sync.connected", dev)
    elif k == "received":
        if ev.changes:
            timeline.tally("sync.merged", dev, changes=ev.changes, new=ev.new)
    elif k == "sent":
        if ev.changes:
            timeline.tally("sync.sent", dev, changes=ev.changes, skipped=ev.skipped,
                           bytes=ev.wire_bytes)
    elif k == "forked":
        emit("fork", dev, why=ev.why)
    elif k == "pended":
        reasons = "; ".join(ev.reasons[:3])
        if ev.held:
            emit("held", dev, count=ev.held, why=reasons)
        if ev.quarantined or ev.refused:
            emit("quarantine", dev, count=ev.quarantined, not_taken=ev.refused, why=reasons)
    elif k == "refused":
        emit("refused", dev, count=ev.count, why="; ".join(ev.reasons))
    elif k == "snapshot_sent":
        emit("snapshot.sent", dev, bytes=ev.bytes, can_take=ev.can_take)
    elif k == "snapshot_taken":
        emit("snapshot.taken", dev, bytes=ev.bytes, records=ev.records)
    elif k == "mended":
        if ev.changed:
            emit("sync.mended", dev, records=ev.records, changed=ev.changed[:100])
    elif k == "caught_up":
        emit("sync.caught_up", dev)
    elif k == "closed":
        if ev.error is not None:
            emit("sync.closed", dev, error="%s: %s" % (type(ev.error).__name__, ev.error))
        else:
            emit("sync.closed", dev, reason=str(ev.reason))
