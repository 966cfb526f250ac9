"""`mycelium repair`: check a data directory end to end and rebuild what is
damaged. Opening a node already repairs what it meets; this also reads every
record and the whole op log, so damage nothing has touched yet is found."""
import os

from . import fs
from .errors import StoreCorrupt
from .identity import identity_path, read_identity
from .store import BlobCorrupt
from .store.keyindex import NO_CLASS

__all__ = ["repair"]


def _identity(data_dir, events):
    """A damaged identity.json is rewritten from the actor id in `reserve`."""
    try:
        read_identity(data_dir)
        return
    except StoreCorrupt as e:
        err = e
    try:
        with open(os.path.join(data_dir, "reserve"), "rb") as f:
            import json
            actor = json.loads(f.read())["actor"]
        int(actor, 16)
    except (OSError, ValueError, KeyError, TypeError):
        raise StoreCorrupt("%s; the file `reserve` cannot give the actor id either: restore "
                           "the data directory from a backup" % err) from None
    fs.write_json(identity_path(data_dir), {"version": 1, "actor": actor, "recovered": True})
    events.append("%s: rewritten with actor %s from `reserve`" % (err, actor))


def repair(data_dir: str, accept_loss: bool = False, rebuild: bool = False) -> dict:
    from .node import Node
    events = []
    _identity(data_dir, events)
    node = Node(data_dir, durable=True)
    try:
        events += node.events
        rebuilt_store = bool(node.events) and any("rebuilt the store" in m for m in node.events)
        if rebuild:
            node.rebuild_store()
            rebuilt_store = True
        store = node.store
        bad = set()
        try:
            for kid, cls, slot in list(store.keys.entries()):
                if cls == NO_CLASS:
                    continue
                try:
                    store.load_id(kid)
                except BlobCorrupt:
                    bad.add(kid)
        except StoreCorrupt as e:
            node.rebuild_store(str(e))
            rebuilt_store = True
            bad = set()
        if bad:
            node.repair(bad)
        entries = sum(1 for _ in node.log.read())
        node.scan_log()
        if accept_loss and node.incomplete:
            events.append("accepted as lost: %s" % node.incomplete)
            node.accept_loss()
        node.checkpoint()
        report = {"records": node.count(), "log_entries": entries, "rebuilt_records": len(bad),
                  "rebuilt_store": rebuilt_store, "log_damaged_bytes": node.log.damaged_bytes(),
                  "missing_changes": node.known.missing(), "incomplete": node.incomplete}
        events += [m for m in node.events if m not in events]
    finally:
        node.close()
    report["events"] = events
    return report
