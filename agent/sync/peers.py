"""Known peers (sync/peers.json) and what sync last learnt about them
(sync/state.json). Both are written atomically (temp file, fsync, rename);
peers.json is changed under a lock file so two `peer add` runs cannot lose
each other's entry.

peers.json: {"version": 1, "peers": {DEVICE_ID: {"addr": "HOST:PORT", "added": unix}}}
state.json: {"version": 1, "device_id": ID, "vv": {actor_hex: seq}, "updated": unix,
             "peers": {DEVICE_ID: {"vv": {...}, "connected": bool, "last_sync": unix,
                                   "last_error": str|null}}}
"""
import fcntl
import json
import os
import time

from ..errors import StoreError, UsageError

__all__ = ["load_peers", "add_peer", "parse_addr", "load_state", "save_state", "write_json"]


def _paths(data_dir):
    d = os.path.join(data_dir, "sync")
    return d, os.path.join(d, "peers.json"), os.path.join(d, "state.json")


def write_json(path, obj) -> None:
    tmp = "%s.%d.tmp" % (path, os.getpid())
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _read_json(path, default):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return default
    except ValueError:
        raise StoreError("%s is damaged; fix or delete it (peers can be added again "
                         "with `mycelium peer add`)" % path) from None


def parse_addr(text: str):
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise UsageError("%r is not HOST:PORT (e.g. 192.168.1.20:7420)" % text)
    return host.strip("[]"), int(port)


def load_peers(data_dir) -> dict:
    """{device_id: {"addr": "HOST:PORT", ...}}"""
    _, path, _ = _paths(data_dir)
    return _read_json(path, {"version": 1, "peers": {}}).get("peers", {})


def add_peer(data_dir, device_id, addr) -> bool:
    """Add or update a peer; returns True if it was new."""
    d, path, _ = _paths(data_dir)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "peers.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        doc = _read_json(path, {"version": 1, "peers": {}})
        peers = doc.setdefault("peers", {})
        new = device_id not in peers
        entry = peers.setdefault(device_id, {"added": int(time.time())})
        entry["addr"] = addr
        write_json(path, doc)
    return new


def peers_mtime(data_dir):
    try:
        return os.stat(_paths(data_dir)[1]).st_mtime_ns
    except FileNotFoundError:
        return 0


def load_state(data_dir) -> dict:
    return _read_json(_paths(data_dir)[2], {"version": 1, "peers": {}})


def save_state(data_dir, state) -> None:
    d, _, path = _paths(data_dir)
    os.makedirs(d, exist_ok=True)
    state["version"] = 1
    state["updated"] = int(time.time())
    write_json(path, state)


def vv_hex(vv: dict) -> dict:
    return {"%016x" % a: s for a, s in vv.items()}


def vv_int(vv: dict) -> dict:
    return {int(a, 16): s for a, s in vv.items()}


def behind(ours: dict, theirs: dict) -> int:
    """How many of our changes the holder of `theirs` lacks."""
    return sum(max(0, s - theirs.get(a, 0)) for a, s in ours.items())
