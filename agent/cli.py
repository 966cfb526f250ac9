"""The `mycelium` command."""
import argparse
import base64
import json
import os
import sys
import time

from .errors import AgentError, UsageError
from .sync import parser as sync_parser

EXIT_OK, EXIT_NOT_FOUND = 0, 1

PUT_HELP = """\
Each FIELD argument names a field and says what to do with it:

  name=Ada          lww register, string value
  photo=@cat.jpg    lww register, the content of a file (text if it is UTF-8, else
                    bytes); one write is at most 1 MiB (MYCELIUM_MAX_WRITE_MB), a
                    record at most 16 MiB. A string starting with @: name:='"@x"'
  age:=36           lww register, JSON value (number, true/false, null, "text")
  visits+=1         counter: add 1            visits-=2   counter: subtract 2
  mood|=calm        multi-value register: write "calm" (concurrent writes are all kept)
  tags[]+=red       add-wins set: add "red"   tags[]-=red set: remove "red"

A field keeps the kind it was first written with; writing it as another kind
is refused with a hint.

examples:
  mycelium put sensor:1 site=kitchen temp:=21.5 readings+=1 tags[]+=indoor
  mycelium put sensor:1 tags[]-=indoor
"""

EPILOG = """\
exit codes: 0 ok, 1 not found, 2 bad usage, 3 storage fault (an I/O error
from the disk: check it, then `mycelium repair`), 4 data directory in use by
another process, 5 engine fault, 6 bad data from a peer or file, 7 sync
fault, 8 disk full (nothing was written: free space and retry), 9 other
error, 10 damaged data that could not be repaired here, or records that may
miss changes (the message says what to do: often `mycelium repair`), 11
`mycelium check` found something to act on, 12 `serve` cannot listen where
it was told (the address is in use or not this machine's), 130 interrupted.

Reads (get, scan, stats, watch, peer list) open the data directory read-only
and write nothing; they work beside a running writer.

The data directory defaults to $XDG_DATA_HOME/mycelium, else
~/.local/share/mycelium (for root, /var/lib/mycelium when the service's is
there); set it with --data-dir or MYCELIUM_DATA_DIR. As root, on a data
directory another user owns (the service's), only reads run: run writes as
that user (sudo -u mycelium mycelium ...), so that no root-owned file is left
there. Its files are the owner's alone (0600, 0700); MYCELIUM_GROUP=NAME makes
what is created readable by group NAME (0640, 02750).
"""


MAX_FILE_VALUE = 16 << 20


def parse_assignment(arg: str):
    """'field<op>value' -> (field, value-for-Node.put)."""
    from .values import Inc, MV, Add, Remove
    for sep in ("[]+=", "[]-=", "+=", "-=", "|=", ":="):
        i = arg.find(sep)
        j = arg.find("=")
        if i > 0 and (j < 0 or i + len(sep) - 1 == j or i < j):
            name, raw = arg[:i], arg[i + len(sep):]
            if name.endswith("[]"):         # tags[]=x, tags[]|=x: no such form
                raise _bad_field(arg)
            if sep == "[]+=":
                return name, Add(raw)
            if sep == "[]-=":
                return name, Remove(raw)
            if sep in ("+=", "-="):
                try:
                    n = int(raw)
                except ValueError:
                    raise UsageError("%s: a counter takes an integer, e.g. %s+=1" % (arg, name)) from None
                return name, Inc(n if sep == "+=" else -n)
            if sep == "|=":
                return name, MV(raw)
            try:
                v = json.loads(raw, parse_constant=_no_constant)
            except _Constant as e:
                raise UsageError("%s: %s is not a number JSON allows, and cannot be stored; "
                                 "use null or a string (%s=%s)" % (arg, e, name, raw)) from None
            except ValueError:
                raise UsageError("%s: %r is not JSON; quote text as '\"...\"' or use %s=TEXT"
                                 % (arg, raw, name)) from None
            if isinstance(v, (list, dict)):
                raise UsageError("%s: a field holds one value; use tags[]+=x for sets" % arg)
            return name, v
    i = arg.find("=")
    if i <= 0:
        raise _bad_field(arg)
    name, raw = arg[:i], arg[i + 1:]
    if name.endswith("[]"):
        raise _bad_field(arg)
    if raw.startswith("@"):
        return name, _read_value(arg, raw[1:])
    return name, raw


def _bad_field(arg):
    from .clihelp import FIELD_FORMS
    return UsageError("%r is not a field write; the forms are %s (see `mycelium put --help`)"
                      % (arg, FIELD_FORMS))


class _Constant(ValueError):
    pass


def _no_constant(name):
    raise _Constant(name)


def _read_value(arg, path):
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_VALUE + 1)
    except OSError as e:
        raise UsageError("%s: cannot read %s: %s" % (arg, path, e.strerror or e)) from None
    if len(data) > MAX_FILE_VALUE:
        raise UsageError("%s: %s is larger than %d bytes" % (arg, path, MAX_FILE_VALUE))
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data


def _jsonable(v):
    """A stored value as JSON can hold it: bytes as {"$bytes": BASE64}, a
    float JSON has no word for (a peer's NaN) as {"$float": "nan"}."""
    if isinstance(v, bytes):
        return {"$bytes": base64.b64encode(v).decode()}
    if type(v) is float and v - v != 0.0:
        return {"$float": repr(v)}
    if isinstance(v, list):
        return [_jsonable(x) for x in v]
    return v


def _print_record(key, rec, kinds, as_json):
    if as_json:
        print(json.dumps({"key": key, "fields": {k: _jsonable(v) for k, v in rec.items()},
                          "kinds": kinds}, ensure_ascii=False, allow_nan=False))
        return
    print(key)
    width = max(len(k) for k in rec)
    for name, v in rec.items():
        print("  %-*s = %s  (%s)" % (width, name, json.dumps(_jsonable(v), ensure_ascii=False),
                                     kinds.get(name, "?")))


def _remote(data_dir):
    """A stand-in asking the running `mycelium serve` over its control
    socket, or None if no serve holds the data directory."""
    from .control import RemoteNode, socket_path
    from .store.lock import writer_holds
    path = socket_path(data_dir)
    if not os.path.exists(path) or not writer_holds(os.path.join(data_dir, "store")):
        return None
    try:
        return RemoteNode(path)
    except OSError:
        return None


def _open(args, local_only=False, write=True):
    """The data directory's node (read-only unless write); when a running
    `mycelium serve` holds it, a stand-in that asks the daemon over its
    control socket."""
    from .errors import StoreLocked
    from .node import Node
    if not write:
        remote = None if local_only else _remote(args.data_dir)
        return _warn(remote or Node(args.data_dir, readonly=True))
    try:
        return _warn(Node(args.data_dir, durable=args.durable))
    except StoreLocked:
        remote = None if local_only else _remote(args.data_dir)
        if remote is None:
            raise
        return remote


def _warn(node):
    """Print what opening found (damage skipped, records rebuilt) on stderr."""
    for msg in node.events:
        print("mycelium: warning: %s" % msg, file=sys.stderr)
    return node


def _incomplete(node, code):
    """Exit code for a read: non-zero if records may miss changes."""
    if node.incomplete:
        print("mycelium: %s; fetch them again from a peer (`mycelium serve` or `mycelium sync "
              "PEER`) or accept the loss with `mycelium repair --accept-loss`"
              % node.incomplete, file=sys.stderr)
        from .errors import StoreCorrupt
        return StoreCorrupt.exit_code
    return code


def cmd_init(args):
    from .node import init_identity
    from .sync.identity import ensure_identity
    from .sync.devid import display_id
    existed = os.path.exists(os.path.join(args.data_dir, "identity.json"))
    ident = init_identity(args.data_dir)
    old = ident.get("device_id")
    device_id = display_id(ensure_identity(args.data_dir, new=args.new_identity))
    if args.new_identity and old and display_id(old) != device_id:
        print("mycelium: this device has a new id, %s (it was %s): on every peer run "
              "`mycelium peer remove %s` and `mycelium peer add %s HOST:PORT`"
              % (device_id, display_id(old), display_id(old)[:7], device_id), file=sys.stderr)
    with _open(args, local_only=True):
        pass
    if args.json:
        print(json.dumps({"data_dir": args.data_dir, "actor": ident["actor"],
                          "device_id": device_id, "existed": existed}))
    else:
        print("%s data directory %s (actor %s)" % (
            "already initialised:" if existed else "initialised", args.data_dir, ident["actor"]))
        print("device id %s  (give it to peers: mycelium peer add ID HOST:PORT)" % device_id)
    return EXIT_OK


def combine(assignments):
    """Fold repeated fields of one put: n+=3 n-=1 is n+=2, tags[]+=a tags[]+=b adds both."""
    from .values import Inc, Add, Remove
    fields = {}
    for name, v in assignments:
        if name not in fields:
            fields[name] = v
            continue
        old = fields[name]
        if type(old) is Inc and type(v) is Inc:
            fields[name] = Inc(old.delta + v.delta)
        elif type(old) is type(v) and type(v) in (Add, Remove):
            fields[name] = type(v)(*old.values, *v.values)
        else:
            raise UsageError("field %r is given twice in different ways; split it into two puts"
                             % name)
    return fields


def cmd_put(args):
    fields = combine(parse_assignment(a) for a in args.fields)
    with _open(args) as n:
        n.put(args.key, fields)
    if args.json:
        print(json.dumps({"key": args.key, "ok": True}))
    return EXIT_OK


def cmd_get(args):
    with _open(args, write=False) as n:
        got = n.get(args.key, with_kinds=True)
        if got is None:
            if args.json:
                print(json.dumps({"key": args.key, "fields": None}))
            else:
                print("%s: not found" % args.key, file=sys.stderr)
            return _incomplete(n, EXIT_NOT_FOUND)
        _print_record(args.key, got[0], got[1], args.json)
        return _incomplete(n, EXIT_OK)


def cmd_del(args):
    with _open(args) as n:
        ok = n.delete(args.key)
    if args.json:
        print(json.dumps({"key": args.key, "deleted": ok}))
    elif not ok:
        print("%s: not found" % args.key, file=sys.stderr)
    return EXIT_OK if ok else EXIT_NOT_FOUND


def cmd_scan(args):
    with _open(args, write=False) as n:
        shown = 0
        for key, rec, kinds in n.scan(args.prefix, with_kinds=True, limit=args.limit):
            if args.keys_only:
                print(json.dumps(key) if args.json else key)
            else:
                _print_record(key, rec, kinds, args.json)
            shown += 1
            if args.limit and shown >= args.limit:
                break
        if not args.json and not args.keys_only:
            print("(%d record%s)" % (shown, "" if shown == 1 else "s"), file=sys.stderr)
        return _incomplete(n, EXIT_OK)


def cmd_watch(args):
    """Follow the op log (no lock: works beside a running writer)."""
    from .core.opread import describe
    from .oplog.follow import follow
    from .node import read_identity
    read_identity(args.data_dir)
    seen = 0
    deadline = time.monotonic() + args.timeout if args.timeout else None
    if not args.json:
        print("watching %r in %s (Ctrl-C to stop)" % (args.prefix, args.data_dir), file=sys.stderr)
    sys.stdout.flush()
    from .observe.colours import badge, colour_of, use_colour
    coloured = not args.json and use_colour(sys.stdout)
    for c in follow(args.data_dir, deadline=deadline):
        for key, text in describe(c):
            if key.startswith(args.prefix):
                if args.json:
                    print(json.dumps({"key": key, "op": text, "actor": "%016x" % c.actor,
                                      "seq": c.seq}), flush=True)
                else:
                    who = "%016x" % c.actor
                    if coloured:    # a change names its actor, not its device
                        who = badge(who, colour_of(who))
                    print("%s  %s  (actor %s)" % (key, text, who), flush=True)
                seen += 1
                if args.count and seen >= args.count:
                    return EXIT_OK
    return EXIT_OK


def _refused_from_peers(data_dir) -> int:
    """Changes peers sent that no signature vouched for (sync/state.json)."""
    try:
        with open(os.path.join(data_dir, "sync", "state.json")) as f:
            peers = json.load(f).get("peers", {})
        return sum(int(p.get("refused", 0)) for p in peers.values())
    except (OSError, ValueError, AttributeError, TypeError):
        return 0


def cmd_stats(args):
    with _open(args, write=False) as n:
        s = n.stats()
    s["refused_changes"] = _refused_from_peers(args.data_dir)
    if args.json:
        print(json.dumps(s))
    else:
        for k, v in s.items():
            print("%-18s %s" % (k, v))
    return EXIT_OK


EXIT_CHECK = 11


def check_findings(s: dict) -> list:
    """What an operator should look at, from stats (refused_changes included):
    [(name, count, what to do)]. Empty: nothing found."""
    out = []
    if s["forks"]:
        out.append(("forks", len(s["forks"]),
                    "two devices wrote under one actor id (a copied or restored data "
                    "directory): see `mycelium --json stats` (forks) and docs/SYNC.md "
                    "\"Forks\"; the other side's changes are kept in forks/. Once the records "
                    "are repaired, delete forks.json"))
    if s["quarantined_changes"]:
        out.append(("quarantined_changes", s["quarantined_changes"],
                    "changes from peers this build cannot apply: upgrade it "
                    "(`mycelium pending` lists them)"))
    if s["held_changes"]:
        out.append(("held_changes", s["held_changes"],
                    "changes stamped ahead of this device's clock: check the clocks "
                    "(`mycelium pending`; `--release` applies them)"))
    if s["missing_changes"]:
        out.append(("missing_changes", s["missing_changes"],
                    "changes this device knows of but does not hold: run `mycelium serve` "
                    "or `mycelium sync PEER` to fetch them"))
    if s["incomplete"]:
        out.append(("incomplete", 1, "%s: run `mycelium repair`" % s["incomplete"]))
    if s["refused_changes"]:
        out.append(("refused_changes", s["refused_changes"],
                    "peers sent changes no signature of their device vouches for: see "
                    "`sync/state.json` (refused, last_refused) for which peer"))
    return out


def cmd_check(args):
    """This device's own health: exit 0 when nothing needs looking at.
    With PEER: the convergence check with that peer (agent/sync/check.py)."""
    if args.peer or args.fleet:
        if args.peer and args.fleet:
            raise UsageError("give PEER or --fleet, not both")
        from .sync.commands import cmd_check_peer
        return cmd_check_peer(args)
    with _open(args, write=False) as n:
        s = n.stats()
    s["refused_changes"] = _refused_from_peers(args.data_dir)
    found = check_findings(s)
    if args.json:
        print(json.dumps({"ok": not found, "findings": [
            {"name": k, "count": c, "action": a} for k, c, a in found]}))
    elif not found:
        print("ok: no forks, no held or quarantined changes, nothing missing or refused")
    else:
        for k, c, a in found:
            print("%s: %d. %s" % (k, c, a))
    return EXIT_CHECK if found else EXIT_OK


def cmd_pending(args):
    if args.release:
        actor = None
        if args.release != "all":
            try:
                actor = int(args.release, 16)
            except ValueError:
                raise UsageError("--release takes an actor id in hex as `mycelium pending` "
                                 "lists it, or 'all'") from None
        with _open(args) as n:
            done = n.release_due(force=True, actor=actor)
            left = n.pending_list()
        print(json.dumps({"applied": done, "pending": len(left)}) if args.json else
              "applied %d change(s); %d still pending" % (done, len(left)))
        return EXIT_OK
    with _open(args, write=False) as n:
        items = n.pending_list()
    if args.json:
        print(json.dumps(items))
        return EXIT_OK
    for it in items:
        print("%-11s %s seq %-8d %s" % (it["kind"], it["actor"], it["seq"], it["why"]))
    print("(%d pending)" % len(items), file=sys.stderr)
    return EXIT_OK


def cmd_compact(args):
    """Snapshot the store and drop the log history every active peer holds."""
    with _open(args) as n:
        got = n.compact(drop=not args.keep_log)
    if args.json:
        print(json.dumps(got))
        return EXIT_OK
    print("snapshot of %d record(s), %s; log %s -> %s (%d segment(s) dropped) in %.2f s"
          % (got["records"], _mb(got["snapshot_bytes"]), _mb(got["log_bytes_before"]),
             _mb(got["log_bytes_after"]), got["segments_dropped"], got["seconds"]))
    if got["held_back_by"]:
        print("mycelium: history is kept for peer(s) that lack it: %s (a peer silent for "
              "MYCELIUM_RETIRE_DAYS, 14 by default, stops holding it back)"
              % ", ".join(got["held_back_by"]), file=sys.stderr)
    return EXIT_OK


def cmd_backup(args):
    """A consistent snapshot of this device, also while serve runs."""
    with _open(args) as n:
        got = n.backup(args.file)
    if args.json:
        print(json.dumps(got))
    else:
        print("backed up %d record(s) to %s (%s) in %.2f s%s" % (
            got["records"], got["path"], _mb(got["bytes"]), got["seconds"],
            " by the running serve" if getattr(n, "remote", False) else ""))
    return EXIT_OK


def cmd_restore(args):
    from .history.backup import restore
    got = restore(os.path.abspath(args.file), args.data_dir, durable=args.durable)
    if args.json:
        print(json.dumps(got))
    else:
        print("restored %d record(s) into %s: a new device, actor %s, device id %s"
              % (got["records"], got["data_dir"], got["actor"], got["device_id"]))
        print("add it on its peers (mycelium peer add %s HOST:PORT) and they send it what "
              "was written after the backup" % got["device_id"], file=sys.stderr)
    return EXIT_OK


def _mb(n):
    return "%.1f MB" % (n / 1e6) if n >= 100_000 else "%d B" % n


def cmd_repair(args):
    """Check everything, rebuild what is damaged, report what is missing."""
    from .repair import repair
    report = repair(args.data_dir, accept_loss=args.accept_loss, rebuild=args.rebuild)
    for msg in report["events"]:
        print("mycelium: %s" % msg, file=sys.stderr)
    if args.json:
        print(json.dumps(report))
    else:
        print("checked %d records and %d log entries: %d record(s) rebuilt, %d damaged log "
              "byte(s) skipped, %d change(s) to fetch from peers%s"
              % (report["records"], report["log_entries"], report["rebuilt_records"],
                 report["log_damaged_bytes"], report["missing_changes"],
                 "; the store was rebuilt from the op log" if report["rebuilt_store"] else ""))
        if report["incomplete"]:
            print("still incomplete: %s. Run `mycelium serve` (or `mycelium sync PEER`) to "
                  "fetch the missing changes, or `mycelium repair --accept-loss`"
                  % report["incomplete"], file=sys.stderr)
    return 10 if report["incomplete"] else EXIT_OK


def cmd_demo(args):
    from . import demo
    return demo.run(args.demo_dir)


def _count(text):
    try:
        n = int(text)
        if n < 0:
            raise ValueError
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not a count (0, 1, 2, ...)" % text) from None
    return n


def build_parser():
    from . import __version__
    from .clihelp import add_command
    p = argparse.ArgumentParser(
        prog="mycelium", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Local-first sync agent: CRDT records on this device, synced with peers.")
    p.add_argument("--data-dir", default=_default_data_dir(),
                   help="where the store and log live (default: %(default)s)")
    p.add_argument("--version", action="version", version="mycelium " + __version__)
    p.add_argument("--json", action="store_true",
                   help="machine-readable output: JSON on stdout, also for errors")
    p.add_argument("--durable", action="store_true",
                   default=os.environ.get("MYCELIUM_DURABLE", "") not in ("", "0", "false"),
                   help="fsync every write before acknowledging it (default: fsync every 100 "
                        "ms; or durable = true in mycelium.toml, MYCELIUM_DURABLE=1)")
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND")
    sub.required = True
    s = add_command(sub, "init", "create the data directory and this device's identity")
    s.add_argument("--new-identity", action="store_true",
                   help="replace this device's key and certificate (lost or damaged) with "
                        "new ones: the device gets a new id, which every peer must add; its "
                        "records and actor stay")
    s.set_defaults(fn=cmd_init)
    s = add_command(sub, "put", "write fields of a record", description=PUT_HELP)
    s.add_argument("key")
    s.add_argument("fields", nargs="+", metavar="FIELD")
    s.set_defaults(fn=cmd_put)
    s = add_command(sub, "get", "print a record (exit 1 if absent)")
    s.add_argument("key")
    s.set_defaults(fn=cmd_get)
    s = add_command(sub, "del", "delete a record (a later write revives it)")
    s.add_argument("key")
    s.set_defaults(fn=cmd_del)
    s = add_command(sub, "scan", "print the records whose key starts with PREFIX")
    s.add_argument("prefix", nargs="?", default="")
    s.add_argument("--keys-only", action="store_true",
                   help="print only the keys, one per line (quicker: no record is decoded)")
    s.add_argument("--limit", type=_count, default=0, metavar="N",
                   help="print at most N records, the first in key order (default: all)")
    s.set_defaults(fn=cmd_scan)
    s = add_command(sub, "watch", "print changes under PREFIX as they land")
    s.add_argument("prefix", nargs="?", default="")
    s.add_argument("--count", type=_count, default=0, metavar="N",
                   help="stop after N changes (default: never)")
    s.add_argument("--timeout", type=float, default=0, metavar="SECONDS",
                   help="stop after SECONDS (default: never)")
    s.set_defaults(fn=cmd_watch)
    s = add_command(sub, "demo", "run the demo: three devices write apart, sync over TLS "
                    "and agree")
    s.add_argument("--demo-dir", default=None,
                   help="where the demo keeps its data (reset on each run; "
                        "default: $XDG_DATA_HOME/mycelium-demo)")
    s.set_defaults(fn=cmd_demo)
    s = add_command(
        sub, "compact", "snapshot the store and drop log history every peer holds",
        description="Write a snapshot of every record (with its CRDT metadata) and delete the "
        "op-log segments it holds that every active peer has acknowledged. A peer silent for "
        "longer than MYCELIUM_RETIRE_DAYS (14) no longer holds history back; it, and any new "
        "device, catches up from the snapshot. `serve` compacts by itself once the log has "
        "grown by MYCELIUM_COMPACT_MB (8) since the last time. Safe to interrupt: a crash "
        "leaves the old snapshot and every segment.")
    s.add_argument("--keep-log", action="store_true",
                   help="write the snapshot only; drop no log segment")
    s.set_defaults(fn=cmd_compact)
    s = add_command(
        sub, "status", "this device, serve, its peers and health; exit 0 healthy, 1 "
        "degraded, 2 down",
        description="This device, whether `mycelium serve` runs on it, each peer with its "
        "lag and last sync, and health. Exit 0 when healthy; 1 when degraded (serve runs, "
        "but `mycelium check` finds something, or a peer has not synced for --stale "
        "seconds, or never); 2 when down (serve is not running, or the data directory "
        "cannot be read). Read-only: it works beside serve.")
    s.add_argument("--stale", type=float, default=3600, metavar="SECONDS",
                   help="a peer not synced for this long makes the device degraded "
                        "(default %(default)s)")
    s.set_defaults(fn=_lazy(".status", "cmd_status"))
    s = add_command(
        sub, "events", "the timeline: syncs, forks, quarantines, compactions, errors",
        description="What this device did and saw, oldest first, from its timeline (a ring "
        "of at most 1 MiB in the data directory, events.log): sync sessions and the "
        "changes merged and sent (summed per minute), forks, held and quarantined changes, "
        "refused changes, snapshots, compactions, warnings and errors, configuration "
        "changes, serve's starts and stops. Read-only: it works beside serve.\n\n"
        "Kinds: sync.connected sync.merged sync.sent sync.caught_up sync.closed fork held "
        "quarantine refused snapshot.sent snapshot.taken held.released compaction config "
        "serve.start serve.stop notice warning error")
    s.add_argument("--since", metavar="WHEN",
                   help="only events since WHEN: a span (30s, 15m, 1h, 2d, 1w) or a UTC "
                        "date and time (2026-12-03T12:00)")
    s.add_argument("--kind", action="append", metavar="K",
                   help="only kind K, or a family (sync = sync.*); repeat or give a comma "
                        "list for several")
    s.add_argument("--follow", "-f", action="store_true",
                   help="keep printing events as they come (Ctrl-C to stop)")
    s.add_argument("--lines", "-n", type=_count, default=0, metavar="N",
                   help="only the last N events (default: all)")
    s.add_argument("--timeout", type=float, default=0, metavar="SECONDS",
                   help="with --follow, stop after SECONDS (default: never)")
    s.set_defaults(fn=_lazy(".observe.events_cmd", "cmd_events"))
    s = add_command(
        sub, "backup", "write this device's whole state to FILE, also while serve runs",
        description="Write every record with its CRDT metadata, what this device holds and "
        "its signed heads to FILE (a snapshot file, docs/FORMAT.md), consistent as of one "
        "moment. While `mycelium serve` runs, serve writes it (its user must be able to "
        "write FILE). FILE is written whole or not at all. `mycelium restore` makes a new "
        "device from it.")
    s.add_argument("file", metavar="FILE")
    s.set_defaults(fn=cmd_backup)
    s = add_command(
        sub, "restore", "make a new data directory from a backup (a new device)",
        description="Make --data-dir (new or empty) from a backup FILE. The restored device "
        "gets a fresh actor id and device id, so it never writes under the old device's "
        "ids; add it on its peers, which send it what was written after the backup. The "
        "file is checked whole first; a restore cut short is started again by running it "
        "again.")
    s.add_argument("file", metavar="FILE")
    s.set_defaults(fn=cmd_restore)
    s = add_command(sub, "stats", "counts, sizes and the engine in use")
    s.set_defaults(fn=cmd_stats)
    s = add_command(
        sub, "check", "is this device healthy? exit 11 if anything needs looking at",
        description="Look at this device's own state and list what an operator should act "
                    "on, each with what to do:\n"
                    "  forks                two devices wrote under one actor id\n"
                    "  quarantined_changes  changes from peers this build cannot apply\n"
                    "  held_changes         changes stamped ahead of this device's clock\n"
                    "  missing_changes      changes known of but not held (a damaged log)\n"
                    "  incomplete           records that may miss changes\n"
                    "  refused_changes      changes no signature vouched for\n"
                    "Exit 0 when there is none, 11 when there is any. Read-only: it works "
                    "beside `mycelium serve`.\n\n"
                    "With PEER (its name, id or the start of its id): the convergence check. "
                    "The two devices catch up, then compare a tree of digests of every "
                    "record (names, values and CRDT metadata), so it also finds what version "
                    "vectors cannot see: a fork, a lost change, a record damaged on disk. "
                    "The keys that differ are listed and, unless --no-repair, each device "
                    "joins the other's state of them, so both end holding the same. A few "
                    "round trips whatever the number of records. Exit 0 when the two agree "
                    "at the end, 11 when they differ. Beside a running serve it runs in "
                    "serve's session with the peer (and serve runs one by itself with each "
                    "peer every hour: $MYCELIUM_CHECK_EVERY seconds, 0 for never).")
    s.add_argument("peer", nargs="?", metavar="PEER",
                   help="compare the records with this peer's")
    s.add_argument("--fleet", action="store_true",
                   help="the convergence check with every known peer, one after another: "
                        "exit 0 only when all hold the same records as this device")
    s.add_argument("--no-repair", action="store_true",
                   help="with PEER or --fleet: only list the keys that differ")
    from .sync.parser import _add_skew, _add_unsigned
    _add_skew(s)
    _add_unsigned(s)
    s.set_defaults(fn=cmd_check)
    s = add_command(
        sub, "repair", "check every file, rebuild what is damaged from the op log",
        description="Check the store and the op log end to end. A damaged record is rebuilt "
                    "from the log; a damaged store is moved to store.damaged and rebuilt whole; "
                    "changes the log lost are asked of peers the next time this device syncs "
                    "(`mycelium serve` or `mycelium sync PEER`). Stop `mycelium serve` first.")
    s.add_argument("--rebuild", action="store_true",
                   help="rebuild the whole store from the op log even if it checks out")
    s.add_argument("--accept-loss", action="store_true",
                   help="stop reporting records as incomplete: accept that changes in damaged "
                        "log entries, which no peer could send again, are lost")
    s.set_defaults(fn=cmd_repair)
    s = add_command(
        sub, "pending", "changes from peers that are held (clock) or quarantined",
        description="A change from a peer that this device cannot take yet is kept, not "
                    "dropped, and does not stop sync:\n"
                    "  held         its stamp is further ahead of this device's clock than "
                    "--max-skew\n"
                    "               (or an earlier change of its device is held); it is "
                    "applied by itself\n"
                    "               once the clock reaches it\n"
                    "  quarantined  this build cannot apply it; it is retried after an "
                    "upgrade\n"
                    "Check the clock of the device that wrote a held change before releasing "
                    "it: a released\nchange stamped in the future wins every "
                    "last-writer-wins field until the clocks meet.")
    s.add_argument("--release", metavar="ACTOR",
                   help="apply the pending changes of ACTOR (its hex id, as listed) now, "
                        "whatever their stamps; 'all' for every device")
    s.set_defaults(fn=cmd_pending)
    sync_parser.register(sub)
    s = add_command(sub, "config", "the settings in effect and where each comes from",
                    description="Settings come from flags, then the environment, then "
                    "DATA_DIR/mycelium.toml, then /etc/mycelium/mycelium.toml, then the "
                    "defaults (docs/OPERATIONS.md, \"Configuration\").")
    csub = s.add_subparsers(dest="config_cmd", metavar="ACTION")
    csub.required = True
    c = add_command(csub, "show", "print each setting, its value and its source",
                    key="config show")
    c.set_defaults(fn=_lazy(".config", "cmd_config_show"))
    return p


def _group_access():
    """MYCELIUM_GROUP=NAME: what this run creates is readable by group NAME."""
    name = os.environ.get("MYCELIUM_GROUP")
    if not name:
        return
    import grp
    from .fs import set_group_access
    try:
        gid = grp.getgrnam(name).gr_gid
    except KeyError:
        raise UsageError("MYCELIUM_GROUP=%s: no such group (create it, or unset the variable)"
                         % name) from None
    set_group_access(gid)


SERVICE_DATA_DIR = "/var/lib/mycelium"   # packaging/systemd/mycelium.service


def _default_data_dir():
    """$MYCELIUM_DATA_DIR, else for root the service's directory when there
    is one (root's own would be a second, empty device), else the user's."""
    from .node import default_data_dir
    env = os.environ.get("MYCELIUM_DATA_DIR")
    if env:
        return env
    if os.geteuid() == 0 and os.path.exists(os.path.join(SERVICE_DATA_DIR, "identity.json")):
        return SERVICE_DATA_DIR
    return default_data_dir()


READ_ONLY = {"get", "scan", "stats", "status", "watch", "check", "id", "demo", "config"}


def _lazy(module, name):
    """A command whose module loads only when it runs."""
    def run(args):
        import importlib
        return getattr(importlib.import_module(module, __package__), name)(args)
    return run


def _as_owner(args):
    """Root may read a data directory another user owns (the service's), but
    a write would leave root-owned files there that the service, running as
    that user, could not open ("Permission denied"): refused, with the
    command to run instead."""
    if os.geteuid() != 0:
        return
    try:
        st = os.stat(args.data_dir)
    except OSError:
        return              # init makes it: root's, as asked
    if st.st_uid == 0:
        return
    sub = getattr(args, "peer_cmd", None)
    if (args.cmd in READ_ONLY and not getattr(args, "peer", None)) or (
            args.cmd == "peer" and sub == "list") or (
            args.cmd == "pending" and not args.release):
        return
    user = _owner(st)
    raise UsageError("%s belongs to user %s (the service's?); a write as root would leave "
                     "files there that %s cannot open. Run it as that user: sudo -u %s "
                     "mycelium --data-dir %s %s ..." % (args.data_dir, user, user, user,
                                                        args.data_dir, args.cmd))


def _owner(st) -> str:
    """The name of the user owning a stat result's file."""
    import pwd
    try:
        return pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        return "#%d" % st.st_uid


def _can_enter(data_dir):
    """A data directory this user may not enter (the service's, 0750) is
    reported as such, not as "not a Mycelium data directory"."""
    from .config import closed
    if not closed(data_dir):
        return
    try:
        st = os.stat(data_dir)
    except PermissionError:
        raise UsageError("%s cannot be reached by this user: a directory on its path is "
                         "closed to it; run the command as the owner of the data directory"
                         % data_dir) from None
    user = _owner(st)
    raise UsageError("%s belongs to user %s and is closed to this user; run the command as "
                     "%s (sudo -u %s mycelium ...) or as a member of its group "
                     "(docs/OPERATIONS.md, 'Permissions')" % (data_dir, user, user, user))


def main(argv=None) -> int:
    from .config import apply
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        sources = apply(argv, _default_data_dir)
    except AgentError as e:
        print("mycelium: %s" % e, file=sys.stderr)
        if not {"-h", "--help", "--version"} & set(argv):   # help still helps
            return e.exit_code
        sources = {}
    args = build_parser().parse_args(argv)
    args.config_sources, args.argv = sources, argv
    try:
        _group_access()
        _as_owner(args)
        if args.cmd not in ("config", "demo"):
            _can_enter(args.data_dir)
        if args.cmd not in ("init", "demo", "config", "restore") and not os.path.exists(
                os.path.join(args.data_dir, "identity.json")):
            raise UsageError("%s is not a Mycelium data directory; run `mycelium init` "
                             "first (or pass --data-dir)" % args.data_dir)
        return args.fn(args)
    except AgentError as e:
        if args.json:
            print(json.dumps({"error": type(e).__name__, "message": str(e)}))
        print("mycelium: %s" % e, file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_OK
    except OSError as e:  # a path no typed error covered yet: still no traceback
        from .fs import error
        err = error(e, "use", e.filename or args.data_dir)
        print("mycelium: %s" % err, file=sys.stderr)
        return err.exit_code


if __name__ == "__main__":
    sys.exit(main())
