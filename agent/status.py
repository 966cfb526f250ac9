"""`mycelium status`: this device, whether `serve` runs, its peers with lag
and last sync, and health, in one look; the exit code is for monitoring.

    0  healthy
    1  degraded: serve runs, but something needs looking at (what `mycelium
       check` finds; a peer that has not synced for --stale seconds, or never)
    2  down: serve is not running, or the data directory cannot be read

Read-only, like every read: it works beside a running serve.
"""
import json
import os
import time

from . import __version__
from .errors import AgentError

__all__ = ["status", "cmd_status", "EXIT_HEALTHY", "EXIT_DEGRADED", "EXIT_DOWN"]

EXIT_HEALTHY, EXIT_DEGRADED, EXIT_DOWN = 0, 1, 2
DEFAULT_STALE = 3600


def _ago(t, now):
    s = max(0, now - t)
    for div, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if s >= div:
            return "%d %s ago" % (s // div, unit)
    return "%d s ago" % s


def status(data_dir: str, stale: float = DEFAULT_STALE, now: float = None) -> dict:
    """Everything `status` shows, as a dict (health, reasons, exit)."""
    from .cli import _refused_from_peers, check_findings
    from .node import Node, read_identity
    from .store.lock import writer_holds
    now = time.time() if now is None else now
    out = {"data_dir": data_dir, "version": __version__, "device_id": None, "actor": None,
           "serve": False, "peers": [], "reasons": []}
    try:
        out["actor"] = read_identity(data_dir)["actor"]
        from .sync.devid import display_id
        from .sync.identity import device_id
        out["device_id"] = display_id(device_id(data_dir))
        out["serve"] = writer_holds(os.path.join(data_dir, "store"))
        with Node(data_dir, readonly=True) as n:
            stats = n.stats()
            ours = dict(n.vv)
        stats["refused_changes"] = _refused_from_peers(data_dir)
        from .sync.commands import peer_rows
        rows = peer_rows(data_dir, ours)
    except AgentError as e:
        out["reasons"].append("cannot read this device: %s" % e)
        return _verdict(out, down=True)
    out["records"] = stats["records"]
    for r in rows:
        if not out["serve"]:
            r["connected"] = False      # state.json of a serve that is gone
        who = r["name"] or r["device_id"][:7]
        if r["last_sync"] is None:
            out["reasons"].append("%s has never synced with this device%s" % (
                who, "" if r["addr"] else " (it has no address: it must dial in)"))
        elif now - r["last_sync"] > stale and not r["connected"]:
            out["reasons"].append("%s last synced %s%s" % (
                who, _ago(r["last_sync"], now),
                ": " + r["last_error"] if r["last_error"] else ""))
        lc = r.get("last_check")
        if lc and not lc.get("agree", True):
            out["reasons"].append("%s held %d record(s) different from this device's at the "
                                  "last convergence check: run `mycelium check %s`"
                                  % (who, lc.get("differ", 0), who))
    out["peers"] = rows
    for name, count, action in check_findings(stats):
        out["reasons"].append("%s: %d. %s" % (name, count, action))
    if not out["serve"]:
        out["reasons"].insert(0, "`mycelium serve` is not running on this data directory "
                                 "(sudo systemctl start mycelium, or run it)")
    return _verdict(out, down=not out["serve"])


def _verdict(out, down):
    if down:
        out["health"], out["exit"] = "down", EXIT_DOWN
    elif out["reasons"]:
        out["health"], out["exit"] = "degraded", EXIT_DEGRADED
    else:
        out["health"], out["exit"] = "healthy", EXIT_HEALTHY
    return out


def cmd_status(args):
    now = time.time()
    s = status(args.data_dir, args.stale, now)
    if args.json:
        print(json.dumps(s))
        return s["exit"]
    print("device   %s  (actor %s, version %s)" % (s["device_id"] or "?", s["actor"] or "?",
                                                  s["version"]))
    print("data     %s%s" % (s["data_dir"], ", %d record(s)" % s["records"]
                             if "records" in s else ""))
    print("serve    %s" % ("running" if s["serve"] else "not running"))
    print("peers    %d" % len(s["peers"]))
    for r in s["peers"]:
        if r["behind"] is None:
            lag = "never synced"
        else:
            lag = "lacks %d of our changes, has %d we lack" % (r["behind"], r["ahead"])
        print("  %-12s %s  %s%s%s" % (
            r["name"] or "-", r["device_id"], "connected; " if r["connected"] else "", lag,
            "; last sync %s" % _ago(r["last_sync"], now) if r["last_sync"] else ""))
    print("health   %s" % s["health"])
    for why in s["reasons"]:
        print("  - %s" % why)
    return s["exit"]
