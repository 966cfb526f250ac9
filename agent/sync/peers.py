"""Known peers (sync/peers.json) and what sync last learnt about them
(sync/state.json). Both are written atomically (temp file, fsync, rename);
peers.json is changed under a lock file so two `peer add` runs cannot lose
each other's entry.

Both carry their own CRC (agent/fs.py write_json). A damaged peers.json is
an error that names it; a damaged state.json (only what sync last learnt)
is set aside and started afresh.

peers.json: {"version": 1, "peers": {DEVICE_ID: {"addr": "HOST:PORT", "added": unix,
                                                "name": str}}}
            (no addr: the peer only dials in; no name: none given)
state.json: {"version": 1, "device_id": ID, "vv": {actor_hex: seq}, "updated": unix,
             "peers": {DEVICE_ID: {"vv": {...}, "connected": bool, "last_sync": unix,
                                   "last_error": str|null}}}
"""
import fcntl
import os
import time

from .. import fs
from ..errors import StoreCorrupt, UsageError

__all__ = ["load_peers", "config_peers", "add_peer", "remove_peer", "rename_peer", "edit", "put",
           "check_name", "parse_addr", "format_addr", "load_state", "save_state", "write_json"]


def _paths(data_dir):
    d = os.path.join(data_dir, "sync")
    return d, os.path.join(d, "peers.json"), os.path.join(d, "state.json")


def write_json(path, obj) -> None:
    fs.write_json(path, obj)


def _read_json(path, default):
    return fs.read_json(path, "this device's known peers",
                        "Restore it from a backup, or move it away and add the peers again "
                        "with `mycelium peer add ID HOST:PORT`", default=default)


def parse_addr(text: str, listen: bool = False):
    """'HOST:PORT' -> (host, port); an IPv6 host is written in brackets,
    [fd00::20]:7420. With listen, ':PORT' means every address of this
    machine (host None) and port 0 a free port."""
    host, sep, port = (text or "").rpartition(":")
    ok = sep and port.isdigit() and (0 if listen else 1) <= int(port) < 65536
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        ok = ok and ":" in host
    elif ":" in host:
        raise UsageError("%r: write an IPv6 address in brackets, e.g. [%s]:%s"
                         % (text, host, port or "7420"))
    if not ok or not (host or listen) or "[" in host or "]" in host:
        raise UsageError("%r is not HOST:PORT (e.g. 192.168.1.20:7420%s)"
                         % (text, ", or :7420 for every address" if listen else ""))
    return host or None, int(port)


def format_addr(host, port) -> str:
    """(host, port) as HOST:PORT, an IPv6 host in brackets."""
    if host is None:
        host = "*"
    return "[%s]:%s" % (host, port) if ":" in host else "%s:%s" % (host, port)


def load_peers(data_dir) -> dict:
    """{device_id: {"addr": "HOST:PORT", ...}}: those of peers.json, and
    those mycelium.toml declares ([peers.NAME]; marked "config": True)."""
    _, path, _ = _paths(data_dir)
    peers = _read_json(path, {"version": 1, "peers": {}}).get("peers", {})
    declared = config_peers()
    if declared:
        peers = {k: v for k, v in peers.items() if k not in declared}
        peers.update(declared)
    return peers


def config_peers() -> dict:
    """The peers mycelium.toml declares (agent/config.py puts them in
    $MYCELIUM_PEERS), in load_peers' form."""
    raw = os.environ.get("MYCELIUM_PEERS")
    if not raw:
        return {}
    import json
    from ..config import _peers
    try:
        doc = json.loads(raw)
    except ValueError:
        raise UsageError("$MYCELIUM_PEERS is not JSON; set peers in mycelium.toml as "
                         "[peers.NAME] tables instead") from None
    from .devid import stored_id
    out = {}
    for name, e in _peers("$MYCELIUM_PEERS", doc).items():
        entry = out[stored_id(e["id"])] = {"name": name, "config": True}
        if e["addr"]:
            entry["addr"] = e["addr"]
        if e.get("metered"):
            entry["metered"] = True
    return out


def _not_declared(device_id):
    e = config_peers().get(device_id)
    if e is not None:
        raise UsageError("that peer is declared in mycelium.toml as [peers.%s]; change it "
                         "there (`mycelium config show` names the file) and restart serve"
                         % e["name"])


def edit(data_dir, fn):
    """Change peers.json under its lock: fn(peers) -> result."""
    d, path, _ = _paths(data_dir)
    fs.mkdir(d)
    lockfd = fs.open_fd(os.path.join(d, "peers.lock"), os.O_WRONLY | os.O_CREAT)
    with os.fdopen(lockfd, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        doc = _read_json(path, {"version": 1, "peers": {}})
        out = fn(doc.setdefault("peers", {}))
        write_json(path, doc)
    return out


def check_name(peers, device_id, name):
    if not name or len(name) > 64 or any(ch.isspace() or not ch.isprintable() for ch in name):
        raise UsageError("%r is not a peer name: use 1 to 64 characters without spaces, e.g. "
                         "garden-pi" % name)
    for other, e in peers.items():
        if other != device_id and e.get("name") == name:
            from .devid import display_id
            raise UsageError("the name %r is already peer %s's; pick another, or "
                             "`mycelium peer rename` that one first" % (name, display_id(other)))


def add_peer(data_dir, device_id, addr, name=None, metered=None) -> bool:
    """Add or update a peer (addr None: it only dials in; metered None: as
    it was); True if it was new."""
    _not_declared(device_id)
    new = edit(data_dir, lambda peers: put(peers, device_id, addr, name, metered))
    config_event(data_dir, device_id, "peer added" if new else "peer updated", addr=addr,
                  name=name, metered=metered)
    return new


def config_event(data_dir, device_id, what, **details):
    from ..events import record
    from .devid import display_id
    record(data_dir, "config", display_id(device_id), what=what,
           **{k: v for k, v in details.items() if v is not None})


def put(peers, device_id, addr, name=None, metered=None) -> bool:
    """Within edit(): add or update one entry (addr None: it only dials in;
    name or metered None: keep what it has); True if it was new. A bad or
    taken name is a UsageError, and then nothing is changed."""
    if name is not None:
        check_name({**peers, **config_peers()}, device_id, name)
    new = device_id not in peers
    entry = peers.setdefault(device_id, {"added": int(time.time())})
    if addr is None:
        entry.pop("addr", None)
    else:
        entry["addr"] = addr
    if name is not None:
        entry["name"] = name
    if metered is not None:
        if metered:
            entry["metered"] = True
        else:
            entry.pop("metered", None)
    return new


def remove_peer(data_dir, device_id) -> dict:
    """Forget a peer; returns its entry."""
    _not_declared(device_id)
    entry = edit(data_dir, lambda peers: peers.pop(device_id))
    config_event(data_dir, device_id, "peer removed")
    return entry


def rename_peer(data_dir, device_id, name) -> None:
    _not_declared(device_id)

    def rename(peers):
        check_name({**peers, **config_peers()}, device_id, name)
        peers[device_id]["name"] = name
    edit(data_dir, rename)
    config_event(data_dir, device_id, "peer renamed", name=name)


def peers_mtime(data_dir):
    try:
        return os.stat(_paths(data_dir)[1]).st_mtime_ns
    except FileNotFoundError:
        return 0


def load_state(data_dir) -> dict:
    path = _paths(data_dir)[2]
    try:
        return fs.read_json(path, "", "", default={"version": 1, "peers": {}})
    except StoreCorrupt:  # only what sync learnt last time: it learns it again
        return {"version": 1, "peers": {}, "damaged": True}


def save_state(data_dir, state) -> None:
    """Atomically replace state.json (DiskFull and the like are raised)."""
    d, _, path = _paths(data_dir)
    fs.mkdir(d)
    state.pop("damaged", None)
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


def note_refused(entry: dict, ev) -> None:
    """Count in a peer's state.json entry the changes refused from it
    (no signature vouched for them), with the last reason."""
    entry["refused"] = entry.get("refused", 0) + ev.count
    entry["last_refused"] = "%s: %s" % (time.strftime("%Y-%m-%d %H:%M:%S"), ev.reasons[0]
                                        if ev.reasons else "")
