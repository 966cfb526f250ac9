"""`mycelium demo`: two devices' worth of records on this machine.

Writes records of every field kind, reads them back, watches a prefix, makes
a second device write concurrently, exchanges changes and shows that both
agree. Uses its own data directory (reset on each run), never yours.
"""
import json
import os
import shutil

from .node import Node, init_identity
from .values import Inc, MV, Add, Remove


def demo_dir() -> str:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "mycelium-demo")


def _show(title, rec):
    print("  %-28s %s" % (title, json.dumps(rec, ensure_ascii=False, sort_keys=True)))


def run(root=None) -> int:
    root = root or demo_dir()
    shutil.rmtree(root, ignore_errors=True)
    a_dir, b_dir = os.path.join(root, "kitchen-pi"), os.path.join(root, "phone")
    init_identity(a_dir)
    init_identity(b_dir)
    print("Mycelium demo in %s\n" % root)
    with Node(a_dir) as a, Node(b_dir) as b:
        events = []
        a.watch("sensor:", lambda key, rec: events.append(key))
        print("1. device A (kitchen-pi, actor %016x) writes every field kind" % a.actor)
        a.put("sensor:kitchen", {"site": "kitchen", "temp": 21.5, "readings": Inc(3),
                                 "status": MV("ok"), "tags": Add("indoor", "ground-floor")})
        a.put("sensor:kitchen", {"readings": Inc(2), "tags": Remove("ground-floor")})
        a.put("sensor:garden", {"site": "garden", "temp": 14.0, "readings": Inc(1)})
        a.put("note:1", {"text": "water the basil"})
        _show("sensor:kitchen", a.get("sensor:kitchen"))
        _show("scan 'sensor:' ->", [k for k, _ in a.scan("sensor:")])
        print("  watch 'sensor:' saw %d change(s): %s" % (len(events), ", ".join(events)))

        print("\n2. device B (phone, actor %016x) writes the same record while apart" % b.actor)
        b.put("sensor:kitchen", {"temp": 22.0, "readings": Inc(10), "status": MV("check filter"),
                                 "tags": Add("serviced")})
        _show("B sees", b.get("sensor:kitchen"))

        print("\n3. they exchange changes (version vectors say what each lacks)")
        to_b = list(a.changes_since(dict(b.vv)))
        to_a = list(b.changes_since(dict(a.vv)))
        print("  A -> B: %d change(s), %d bytes; B -> A: %d change(s), %d bytes"
              % (len(to_b), sum(map(len, to_b)), len(to_a), sum(map(len, to_a))))
        b.merge_changes(to_b)
        a.merge_changes(to_a)
        ra, rb = a.get("sensor:kitchen"), b.get("sensor:kitchen")
        _show("A now sees", ra)
        _show("B now sees", rb)
        print("  counter summed (3+2+10), both status values kept (mv), set merged,")
        print("  temp decided by the later stamp (lww)")
        same = all(a.get(k) == b.get(k) for k, _ in a.scan("")) and a.count() == b.count()
        print("\n4. the devices agree on all %d records: %s" % (a.count(), "yes" if same else "NO"))
        print("  watch 'sensor:' on A saw %d change(s) in all" % len(events))
        stats = a.stats()
        print("  engine: %s; A's store: %d data bytes, op log %d bytes"
              % (stats["engine"], stats["data_bytes"], stats["log_bytes"]))
    print("\nTry it yourself:  mycelium --data-dir %s get sensor:kitchen" % a_dir)
    return 0 if same else 1
