"""Online backup and restore: `mycelium backup FILE`, `mycelium restore FILE`.

A backup is a snapshot file (docs/FORMAT.md, "Snapshot"): every record
with its full CRDT metadata, what this device holds (`known`), the signed
heads and the clock, as of one moment. `serve` writes it in its own loop
when it runs (the control socket's "backup"), so writes before it are in
it and writes after it are not: consistent, with no pause beyond the
write itself. Written to a temp file, fsynced and renamed: FILE is whole or
absent.

A restore makes a new data directory from a backup, with a fresh actor id
and a fresh device id: a restored copy never writes under the old actor's
ids (so it cannot fork with the device it was taken from, which may still
be running), and its peers see it as a new device (add it with `peer add`).
It holds everything the backup held; what was written after the backup
comes back from peers when it syncs. The file is checked whole (every CRC,
every record) before anything is made, and a restore cut short (power cut)
leaves `restore.partial` behind, so that running it again starts afresh.
"""
import os
import shutil
import time

from .. import fs
from ..errors import UsageError
from .compact import snapshot_header, write_snapshot

__all__ = ["backup", "restore", "PARTIAL"]

PARTIAL = "restore.partial"     # there while a restore runs: a cut-short one starts again


def backup(node, path: str) -> dict:
    """Write node's state to path (absolute) as a snapshot file."""
    node._writable()
    t0 = time.monotonic()
    d = os.path.dirname(path) or "."
    if not os.path.isdir(d):
        raise UsageError("%s: no such directory for the backup" % d)
    node.checkpoint()
    got = write_snapshot(node, path, snapshot_header(node, node.dropped))
    return {"path": path, "records": got["records"], "bytes": got["bytes"],
            "seconds": round(time.monotonic() - t0, 3)}


def restore(path: str, data_dir: str, durable: bool = False) -> dict:
    """A new data directory at data_dir from the backup at path."""
    from ..identity import init_identity
    from ..node import Node
    from ..sync.devid import display_id
    from ..sync.identity import ensure_identity
    from .catchup import _check, absorb
    marker = os.path.join(data_dir, PARTIAL)
    if os.path.exists(marker):              # a restore cut short: start it again
        shutil.rmtree(data_dir)
    elif os.path.exists(data_dir) and os.listdir(data_dir):
        raise UsageError("%s is not empty; restore into a new directory (--data-dir), which "
                         "gets its own actor id and device id" % data_dir)
    try:
        _, records = _check(path)           # whole, before anything is made
    except FileNotFoundError:
        raise UsageError("%s: no such backup file" % path) from None
    fs.mkdir(data_dir)
    fs.atomic_write(marker, b"a restore from %s is under way\n" % os.fsencode(path))
    ident = init_identity(data_dir)
    did = ensure_identity(data_dir)
    with Node(data_dir, durable=durable) as node:
        work = os.path.join(data_dir, "restore.snap")
        shutil.copyfile(path, work)          # absorb consumes its file
        absorb(node, work)                   # ends with this device's own snapshot, fsynced
        out = {"data_dir": data_dir, "records": records, "actor": ident["actor"],
               "device_id": display_id(did), "known_changes": sum(node.vv.values())}
    fs.unlink(marker)
    fs.fsync_dir(data_dir)
    return out
