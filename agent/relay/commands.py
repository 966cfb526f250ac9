"""`mycelium relay add | show | remove`: set up the fleet's NATS relay."""
import json
import time

from . import config as RC

__all__ = ["cmd_relay_add", "cmd_relay_show", "cmd_relay_remove"]


def cmd_relay_add(args):
    cfg = RC.save(args.data_dir, args.url, args.fleet, args.creds)
    if args.json:
        print(json.dumps(cfg))
    else:
        print("relay set: %s, fleet %s%s. A running serve takes it up within a second; each "
              "device of the fleet needs the same fleet name (`mycelium relay add %s --fleet "
              "%s` there)." % (cfg["url"], cfg["fleet"],
                               ", credentials %s" % cfg["creds"] if cfg["creds"] else "",
                               cfg["url"], cfg["fleet"]))
    return 0


def cmd_relay_show(args):
    from ..sync import peers as P
    cfg = RC.load(args.data_dir)
    live = P.load_state(args.data_dir).get("relay") if cfg else None
    if args.json:
        print(json.dumps({"relay": cfg, "state": live}))
        return 0
    if cfg is None:
        print("no relay: this device syncs with direct peers only (set one up with "
              "`mycelium relay add nats://HOST:4222 --fleet NAME`)")
        return 0
    print("relay     %s" % cfg["url"])
    print("fleet     %s (stream %s)" % (cfg["fleet"], RC.stream_name(cfg["fleet"])))
    if cfg.get("creds"):
        print("creds     %s" % cfg["creds"])
    if not live:
        print("state     not used yet (is `mycelium serve` running?)")
        return 0
    if live.get("connected"):
        print("state     connected since %s" % time.strftime(
            "%Y-%m-%d %H:%M:%S", time.localtime(live.get("since") or 0)))
    elif live.get("stopped"):
        print("state     not running (%s)" % live["stopped"])
    else:
        print("state     not connected: %s" % (live.get("last_error") or "connecting"))
    print("sent      %d change(s) in %d message(s)" % (live.get("published_changes", 0),
                                                     live.get("published_msgs", 0)))
    print("received  %d message(s), %d new change(s), %d skipped as damaged" % (
        live.get("received_msgs", 0), live.get("new", 0), live.get("bad_msgs", 0)))
    return 0


def cmd_relay_remove(args):
    gone = RC.remove(args.data_dir)
    print("relay removed: serve syncs with direct peers only" if gone else "no relay was set")
    return 0
