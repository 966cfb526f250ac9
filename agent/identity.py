"""This device's actor id: `identity.json` in the data directory (a small
JSON file with its own CRC, agent/fs.py). The actor id is also recorded in
`reserve`, so a damaged identity.json can be told apart and repaired."""
import os
import time

from . import fs
from .errors import StoreCorrupt, UsageError

__all__ = ["init_identity", "read_identity", "identity_path"]

FIX = ("Restore it from a backup of this data directory; if there is none, "
       "run `mycelium repair`, which takes the actor id from the file `reserve`")


def identity_path(data_dir: str) -> str:
    return os.path.join(data_dir, "identity.json")


def init_identity(data_dir: str) -> dict:
    """Create a data directory with a fresh actor id (idempotent)."""
    try:
        fs.mkdir(data_dir)
    except OSError as e:
        raise fs.error(e, "create", data_dir) from None
    path = identity_path(data_dir)
    if os.path.exists(path):
        return read_identity(data_dir)
    from .keys import new_actor_key
    ident = {"version": 1, "actor": "%016x" % new_actor_key(data_dir),
             "created": int(time.time())}
    fs.write_json(path, ident)
    return ident


def read_identity(data_dir: str) -> dict:
    path = identity_path(data_dir)
    ident = fs.read_json(path, "this device's actor id", FIX)
    if ident is None:
        raise UsageError("%s is not a Mycelium data directory; run `mycelium init` "
                         "(or pass --data-dir)" % data_dir)
    try:
        actor = int(ident["actor"], 16)
        if not 0 < actor < 1 << 64:
            raise ValueError
    except (KeyError, TypeError, ValueError):
        raise StoreCorrupt("%s has no valid actor id. %s" % (path, FIX)) from None
    return ident
