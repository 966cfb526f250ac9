"""`mycelium serve | sync | peer add|list|remove|rename | id`.

Their arguments are in parser.py (agent/cli.py adds them). Each command
takes args with data_dir, json and durable and returns an exit code.
"""
import asyncio
import json
import os
import signal
import sys
import time

from ..errors import RemoteError, UsageError, SyncError
from . import journal
from . import peers as P
from .errors import PeerUnreachable
from .devid import display_id, normalize_id, resolve
from .identity import ensure_identity
from .daemon import Daemon, _known, _size, raise_fd_limit, tune_malloc
from .session import Session
from .transport import client_context, connect, drive

__all__ = ["cmd_serve", "cmd_sync", "cmd_check_peer", "cmd_peer_add", "cmd_peer_list", "cmd_peer_remove",
           "cmd_peer_rename", "cmd_id", "cmd_invite", "cmd_join", "peer_rows"]



def _open_node(args):
    from ..node import Node
    return Node(args.data_dir, durable=args.durable, max_skew_ms=int(args.max_skew * 1000))


# -- id, peer add, peer list


def _adopt_signed_actor(node):
    from .session import sync_parts
    from .signing import adopt_signed_actor
    return adopt_signed_actor(node, sync_parts(node)[0])


def cmd_id(args):
    did = display_id(ensure_identity(args.data_dir))
    print(json.dumps({"device_id": did}) if args.json else did)
    return 0


def cmd_invite(args):
    import os
    from . import invite as I
    from .parser import DEFAULT_LISTEN
    from ..store.lock import writer_holds
    did = ensure_identity(args.data_dir)
    if args.addr:
        addrs = [P.format_addr(*P.parse_addr(a)) for a in args.addr]
    else:
        listen = os.environ.get("MYCELIUM_LISTEN") or DEFAULT_LISTEN
        host, port = P.parse_addr(listen, listen=True)
        if port == 0:
            raise UsageError("serve listens on a port it picks (%s): give the address with "
                             "--addr HOST:PORT" % listen)
        addrs = I.local_addrs(port) if host in (None, "0.0.0.0", "::") else \
            [P.format_addr(host, port)]
    token = I.make_token(did, addrs, I.open_invite(args.data_dir, args.ttl, args.name))
    serving = writer_holds(os.path.join(args.data_dir, "store"))
    if args.json:
        print(json.dumps({"token": token, "addrs": addrs, "expires": int(time.time() + args.ttl),
                          "serve": serving}))
        return 0
    if args.qr == "yes" or (args.qr == "auto" and sys.stdout.isatty()):
        print(I.qr_text(token))
    print(token)
    print("On the other device run:  mycelium join %s" % token)
    print("It pairs once, within %s, reaching this device at %s."
          % (_ttl_text(args.ttl), ", ".join(addrs)))
    if not serving:
        print("mycelium: serve is not running here; start it (sudo systemctl start mycelium, "
              "or mycelium serve) before the other device joins", file=sys.stderr)
    return 0


def _ttl_text(t):
    for div, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if t >= div and t % div == 0:
            return "%d %s" % (t // div, unit)
    return "%d s" % t


def cmd_join(args):
    from . import invite as I
    addr = P.format_addr(*P.parse_addr(args.addr)) if args.addr else None
    if args.name is not None:
        P.check_name(_known(args.data_dir), None, args.name)
    inviter, at, name = I.join(args.data_dir, args.token, my_addr=addr, name=args.name)
    shown = display_id(inviter) + (" (%s)" % name if name else "")
    if args.json:
        print(json.dumps({"device_id": display_id(inviter), "addr": at, "name": name}))
    else:
        print("paired with %s at %s; `mycelium serve` here syncs with it (or run "
              "`mycelium sync %s` once)" % (shown, at, name or display_id(inviter)[:7]))
    return 0


def cmd_peer_add(args):
    did = normalize_id(args.id, unchecked=args.unchecked)
    addr = None
    if args.addr is not None:
        addr = P.format_addr(*P.parse_addr(args.addr))
    if did == ensure_identity(args.data_dir):
        raise UsageError("%s is this device's own id; add the id another device prints "
                         "with `mycelium id`" % display_id(did))
    metered = getattr(args, "metered", None)
    new = P.add_peer(args.data_dir, did, addr, name=args.name, metered=metered)
    shown = display_id(did) + (" (%s)" % args.name if args.name else "")
    if metered:
        from .orchestrate import METERED_EVERY
        shown += ", metered: synced every %.0f s" % float(
            os.environ.get("MYCELIUM_METERED_SYNC_S") or METERED_EVERY)
    if args.json:
        print(json.dumps({"device_id": display_id(did), "addr": addr, "name": args.name,
                          "new": new, "metered": metered}))
    elif addr is None:
        print("%s peer %s; it has no address, so this device waits for it to dial in"
              % ("added" if new else "updated", shown))
    else:
        print("%s peer %s at %s" % ("added" if new else "updated", shown, addr))
    return 0


def cmd_peer_remove(args):
    did = resolve(_known(args.data_dir), args.peer)
    entry = P.remove_peer(args.data_dir, did)
    shown = display_id(did) + (" (%s)" % entry["name"] if entry.get("name") else "")
    print(json.dumps({"device_id": display_id(did), "removed": True}) if args.json else
          "removed peer %s: a running serve stops syncing with it within a second and "
          "refuses its connections" % shown)
    return 0


def cmd_peer_rename(args):
    did = resolve(_known(args.data_dir), args.peer)
    P.rename_peer(args.data_dir, did, args.name)
    print(json.dumps({"device_id": display_id(did), "name": args.name}) if args.json else
          "peer %s is now %s" % (display_id(did), args.name))
    return 0


def peer_rows(data_dir, ours) -> list:
    """Each known peer, as `peer list` and `status` show it: id (as shown),
    name, addr, behind/ahead (None: never synced), connected, last_sync,
    last_error, last_check (the last convergence check: time, agree, differ)."""
    peers = _known(data_dir)
    state = P.load_state(data_dir)
    rows = []
    for did, entry in sorted(peers.items()):
        st = state.get("peers", {}).get(did, {})
        pvv = P.vv_int(st["vv"]) if "vv" in st else None
        rows.append({"device_id": display_id(did), "name": entry.get("name"),
                     "addr": entry.get("addr"),
                     "behind": P.behind(ours, pvv) if pvv is not None else None,
                     "ahead": P.behind(pvv, ours) if pvv is not None else None,
                     "connected": st.get("connected", False),
                     "last_sync": st.get("last_sync"), "last_error": st.get("last_error"),
                     "last_check": st.get("last_check"),
                     "metered": bool(entry.get("metered")),
                     "sync": st.get("sync"), "route": st.get("route"),
                     "declared": bool(entry.get("config"))})
    return rows


def _our_vv(data_dir):
    """Our version vector, read from the store (read-only, beside a running
    serve too)."""
    from ..node import Node
    with Node(data_dir, readonly=True) as n:
        return dict(n.vv)


def cmd_peer_list(args):
    rows = peer_rows(args.data_dir, _our_vv(args.data_dir))
    if args.json:
        for r in rows:
            print(json.dumps(r))
        return 0
    if not rows:
        print("no peers yet; add one with `mycelium peer add ID HOST:PORT`", file=sys.stderr)
        return 0
    from ..observe.colours import badge, fleet_colours, use_colour
    colours = fleet_colours([display_id(ensure_identity(args.data_dir))] +
                            [r["device_id"] for r in rows])
    for r in rows:
        if r["behind"] is None:
            lag = "never synced"
        else:
            lag = "lacks %d of our changes, has %d we lack" % (r["behind"], r["ahead"])
        when = (" (last sync %s)" % time.strftime("%Y-%m-%d %H:%M:%S",
                                                   time.localtime(r["last_sync"]))
                if r["last_sync"] else "")
        name = r["name"] or "-"
        shown = badge(name, colours[r["device_id"]]) + " " * max(0, 12 - len(name)) \
            if use_colour(sys.stdout) else "%-12s" % name
        print("%s  %s %-21s  %s%s%s%s%s%s" % (
            r["device_id"], shown, r["addr"] or "(dials in)", lag, when,
            "  connected" if r["connected"] else "",
            "  (%s)" % r["sync"] if r["sync"] and r["sync"] != "live" else "",
            "  last error: " + r["last_error"] if r["last_error"] else "",
            "  (mycelium.toml)" if r["declared"] else ""))
    print("(our vector from the store)", file=sys.stderr)
    return 0


# -- sync PEER (one catch-up)


class _Progress:
    def __init__(self, enabled):
        self.enabled = enabled
        self.total = 0
        self.to_recv = 0
        self.last = 0.0

    def start(self, to_send, to_recv):
        self.total = max(1, to_send + to_recv)
        self.to_recv = to_recv

    def show(self, s, final=False):
        if not self.enabled:
            return
        now = time.monotonic()
        if not final and now - self.last < 0.1:
            return
        self.last = now
        st = s.stats
        # received: what the peer had that we lacked at the start and hold
        # now, so that a snapshot's changes count as they are absorbed
        got = st["recv_changes"]
        if s.peer_vv is not None and self.total:
            got = max(got, self.to_recv - P.behind(s.peer_vv, s.node.vv))
        done = st["sent_changes"] + st["skipped"] + got
        frac = min(1.0, done / self.total) if self.total else 1.0
        bar = "#" * int(frac * 30)
        snap = ("  snapshot %s" % _size(st["snap_in"])) if st["snap_in"] else ""
        sys.stderr.write("\r[%-30s] %3d%%  sent %d  received %d%s  %s on the wire"
                         % (bar, frac * 100, st["sent_changes"], st["recv_changes"], snap,
                            _size(st["wire_out"] + st["wire_in"])))
        if final:
            sys.stderr.write("\n")
        sys.stderr.flush()


def _resolve_peer(data_dir, text):
    peers = _known(data_dir)
    did = resolve(peers, text)
    if not peers[did].get("addr"):
        raise UsageError("peer %s has no address (it only dials in): give it one with "
                         "`mycelium peer add %s HOST:PORT`, or wait for it to dial this "
                         "device's serve" % (display_id(did), display_id(did)))
    return did, peers[did]


async def sync_once(node, data_dir, my_id, peer_id, addr, progress=None, timeout=None,
                    accept_unsigned=None):
    host, port = P.parse_addr(addr)
    reader, writer = await connect(host, port, client_context(data_dir), peer_id)
    session = Session(node, my_id, peer_id, accept_unsigned=accept_unsigned)
    session.refusals = []

    def on_event(s, ev):
        journal.note(node.timeline, ev, peer_id)
        if ev.kind == "refused":
            s.refusals.append(ev)
        if progress is not None:
            if ev.kind == "connected":
                progress.start(P.behind(node.vv, ev.peer_vv), P.behind(ev.peer_vv, node.vv))
            progress.show(s, final=ev.kind == "closed")

    await drive(session, reader, writer, until_caught_up=True, on_event=on_event)
    return session


def _record(data_dir, peer_id, session, node, error=None):
    state = P.load_state(data_dir)
    state["vv"] = P.vv_hex(node.vv)
    entry = state.setdefault("peers", {}).setdefault(peer_id, {})
    if session is not None and session.peer_vv is not None:
        entry["vv"] = P.vv_hex(session.peer_vv)
    if session is not None and session.caught_up:
        entry["last_sync"] = int(time.time())
    for ev in getattr(session, "refusals", ()):
        P.note_refused(entry, ev)
    entry["connected"] = False
    entry["last_error"] = None if error is None else str(error)
    P.save_state(data_dir, state)


def cmd_sync(args):
    my_id = ensure_identity(args.data_dir)
    peer_id, entry = _resolve_peer(args.data_dir, args.peer)
    progress = _Progress(args.progress or sys.stderr.isatty())
    t0 = time.monotonic()
    with _open_node(args) as node:
        session = None
        adopted = _adopt_signed_actor(node)
        if adopted:
            print("mycelium: %s" % adopted, file=sys.stderr)
        try:
            session = asyncio.run(sync_once(node, args.data_dir, my_id, peer_id, entry["addr"],
                                            progress, accept_unsigned=args.accept_unsigned))
        except SyncError as e:
            _record(args.data_dir, peer_id, session, node, e)
            raise
        err = session.error
        _record(args.data_dir, peer_id, session, node, err)
        forks = list(node.fork_events)
    for msg in forks:
        print("mycelium: warning: %s" % msg, file=sys.stderr)
    refused = sum(ev.count for ev in session.refusals)
    if refused:
        print("mycelium: warning: refused %d change(s) from %s that no signature of their "
              "device vouches for: %s" % (refused, peer_id, "; ".join(
                  sorted({r for ev in session.refusals for r in ev.reasons})[:3])),
              file=sys.stderr)
    if err is not None:
        raise err
    if session.peer_vv is None:
        from .errors import PeerRefused
        raise PeerRefused("%s closed the connection before the sync began: it may not know "
                          "this device; on it run `mycelium peer add %s HOST:PORT`"
                          % (display_id(peer_id), display_id(my_id)))
    if not session.caught_up:
        raise PeerUnreachable("the connection to %s closed before the sync finished: %s"
                              % (peer_id, "run `mycelium sync` again"))
    st = session.stats
    out = {"peer": display_id(peer_id), "sent_changes": st["sent_changes"], "skipped_by_bloom": st["skipped"],
           "received_changes": st["recv_changes"], "new": st["new"], "duplicates": st["dup"],
           "wire_bytes_out": st["wire_out"], "wire_bytes_in": st["wire_in"],
           "seconds": round(time.monotonic() - t0, 3), "forks": forks, "refused": refused}
    if args.json:
        print(json.dumps(out))
    else:
        print("synced with %s in %.2f s: sent %d change(s) (%s on the wire), received %d "
              "(%d new, %s on the wire)" % (peer_id, out["seconds"], out["sent_changes"],
                                             _size(st["wire_out"]), out["received_changes"],
                                             out["new"], _size(st["wire_in"])))
    return 0


# -- check PEER (the convergence check: agent/sync/check.py)


async def check_once(node, data_dir, my_id, peer_id, addr, repair=True, accept_unsigned=None):
    """Sync with the peer until both are caught up, then compare digest
    trees (and repair). Returns the session; its .compare holds the result."""
    from .check import Compare
    host, port = P.parse_addr(addr)
    reader, writer = await connect(host, port, client_context(data_dir), peer_id)
    session = Session(node, my_id, peer_id, accept_unsigned=accept_unsigned)
    session.compare = Compare(session, repair)
    await drive(session, reader, writer, until_caught_up=True,
                on_event=lambda s, ev: journal.note(node.timeline, ev, peer_id))
    return session


def check_result(session) -> dict:
    """The report of a check session; raises what ended it early."""
    c = session.compare
    if session.error is not None and not (c is not None and c.done):
        raise session.error
    if session.peer_vv is None:
        from .errors import PeerRefused
        raise PeerRefused("%s closed the connection before the check began: it may not "
                          "know this device" % display_id(session.expect_peer))
    if c is None or not c.done:
        raise PeerUnreachable("the connection to %s closed before the check finished: run "
                              "`mycelium check` again" % display_id(session.expect_peer))
    return dict(c.report(), peer=display_id(session.expect_peer))


def cmd_check_peer(args):
    """`mycelium check PEER` / `check --fleet`: exit 0 when this device holds
    the same records as the peer (each known peer), after repairing them
    unless --no-repair; 11 when any differs or cannot be reached (--fleet)."""
    from ..errors import StoreLocked
    my_id = ensure_identity(args.data_dir)
    peers = _known(args.data_dir)
    targets = sorted(peers) if args.fleet else [resolve(peers, args.peer)]
    repair = not args.no_repair
    results = []
    try:
        node = _open_node(args)
    except StoreLocked:
        from ..cli import _remote
        remote = _remote(args.data_dir)
        if remote is None:
            raise
        with remote:
            for pid in targets:
                results.append(_one(lambda: remote.check(pid, repair), pid, args.fleet))
    else:
        with node:
            for pid in targets:
                if not args.fleet:
                    _resolve_peer(args.data_dir, args.peer)     # it needs an address
                elif not peers[pid].get("addr"):
                    results.append({"peer": display_id(pid), "agree": False,
                                    "error": "it has no address (it dials in): run the "
                                             "check on it, or beside this device's serve"})
                    continue
                results.append(_one(lambda: check_result(asyncio.run(check_once(
                    node, args.data_dir, my_id, pid, peers[pid]["addr"], repair,
                    args.accept_unsigned))), pid, args.fleet))
        _note_checks(args.data_dir, zip(targets, results))
    if not args.fleet:
        out = results[0]
        print(json.dumps(out)) if args.json else _print_check(out, repair)
        return 0 if out["agree"] else 11
    agree = all(r["agree"] for r in results)
    if args.json:
        print(json.dumps({"agree": agree, "peers": results}))
    elif not results:
        print("no peers to check; add one with `mycelium peer add ID HOST:PORT`")
    else:
        for r in results:
            if "error" in r:
                print("%s: not checked: %s" % (r["peer"], r["error"]))
            else:
                _print_check(r, repair)
        print("%d of %d peers hold the same records as this device"
              % (sum(1 for r in results if r["agree"]), len(results)))
    return 0 if agree else 11


def _one(run, pid, fleet):
    """One peer's check; with --fleet a failure is a row, not the end."""
    try:
        return run()
    except (SyncError, RemoteError) as e:
        if not fleet:
            raise
        return {"peer": display_id(pid), "agree": False,
                "error": "%s: %s" % (type(e).__name__, e)}


def _note_checks(data_dir, done):
    """Each check's result in state.json (peer list, status, the dashboard)."""
    state = P.load_state(data_dir)
    for pid, out in done:
        if "error" in out:
            continue
        state.setdefault("peers", {}).setdefault(pid, {})["last_check"] = {
            "time": int(time.time()), "agree": out["agree"], "differ": len(out["differ"]),
            "repaired_here": len(out["repaired_here"])}
    P.save_state(data_dir, state)


def _print_check(out, repair):
    differ = out["differ"]
    shown = ", ".join(differ[:20]) + (" and %d more" % (len(differ) - 20) if len(differ) > 20
                                      else "")
    how = "%d round trip(s), %s, %.1f ms" % (out["round_trips"], _size(out["wire_bytes"]),
                                             out["seconds"] * 1000)
    if not differ:
        print("%s holds the same records as this device (%s)" % (out["peer"], how))
    elif not repair:
        print("%d record(s) differ from %s: %s (%s). Run without --no-repair to join them "
              "on both devices" % (len(differ), out["peer"], shown, how))
    elif out["agree"]:
        print("%d record(s) differed from %s: %s; both devices now hold their join (%d "
              "changed here) (%s)" % (len(differ), out["peer"], shown,
                                      len(out["repaired_here"]), how))
    else:
        print("%d record(s) differed from %s: %s; after %d walks the devices still differ "
              "(writes going on? run it again) (%s)" % (len(differ), out["peer"], shown,
                                                        out["walks"], how))


# -- serve


def cmd_serve(args):
    my_id = ensure_identity(args.data_dir)
    host, port = P.parse_addr(args.listen, listen=True)

    def listening(h, p):
        # stdout carries this line only with --json (for scripts); the log
        # line on stderr says it for people, once
        if args.json:
            out = {"listening": P.format_addr(h, p), "device_id": display_id(my_id)}
            if d.dashboard is not None:
                out["http"] = d.dashboard.url()
            print(json.dumps(out), flush=True)

    raise_fd_limit()
    tune_malloc()
    with _open_node(args) as node:
        adopted = _adopt_signed_actor(node)
        d = Daemon(node, args.data_dir, my_id, accept_unsigned=args.accept_unsigned,
                   log_format=args.log_format,
                   http=P.parse_addr(args.http, listen=True) if args.http else None)
        if adopted:
            d.log(adopted)

        async def main():
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                try:
                    loop.add_signal_handler(sig, d.stop.set)
                except (NotImplementedError, RuntimeError):  # pragma: no cover
                    pass
            await d.run(host, port, listening)

        asyncio.run(main())
    return 0
