"""A set that is written and emptied over and over stays small: removed
elements are forgotten once their author's chain passes them
(docs/SEMANTICS.md, "Sets: the causal context"). Before, each add/remove
pair left about 27 bytes behind for good, and after 1,320 pairs of 20-byte
strings an empty set could be neither written nor deleted."""
import json

from agent.node import Node
from agent.values import Add, Remove

from .procs import Serve, cmd, init, wait_for


def _size(node, key):
    return len(node._blob(key) or b"")


def test_many_add_remove_pairs_leave_an_empty_set_of_constant_size(tmp_path):
    d = str(tmp_path / "a")
    init(d)
    sizes = {}
    with Node(d) as n:
        for i in range(1, 5001):
            e = "element-%06d" % i          # fixed width: sizes compare
            n.put("s", {"tags": Add(e)})
            n.put("s", {"tags": Remove(e)})
            if i in (100, 5000):
                sizes[i] = _size(n, "s")
        assert n.get("s") is None           # empty: nothing visible
        assert sizes[5000] == sizes[100] < 200, sizes
        n.put("s", {"tags": Add("again"), "x": 1})   # still writable
        assert n.get("s") == {"tags": ["again"], "x": 1}
        assert n.delete("s")
        assert n.get("s") is None
    with Node(d) as n:                      # and the same after a reopen (replay)
        assert n.get("s") is None
        n.put("s", {"tags": Add("after")})
        assert n.get("s") == {"tags": ["after"]}


def test_two_devices_adding_and_removing_through_serve_stay_small(tmp_path):
    """Real processes: A adds an element, B removes it once it has arrived,
    round after round, both through `serve` and the control socket. The
    record is as small after 24 rounds as after 8, on both devices."""
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    ida, idb = init(a), init(b)
    sa, sb = Serve(a), Serve(b)
    sizes = []
    try:
        cmd(a, "peer", "add", idb, sb.addr)
        cmd(b, "peer", "add", ida, sa.addr)

        def tags(d):
            p = cmd(d, "--json", "get", "s", check=None)
            return json.loads(p.stdout)["fields"].get("tags", []) if p.returncode == 0 else []

        for i in range(1, 25):
            e = "e%04d" % i
            cmd(a, "put", "s", "tags[]+=" + e, "n+=1")
            assert wait_for(lambda: e in tags(b), 30), sa.log() + sb.log()
            cmd(b, "put", "s", "tags[]-=" + e)
            assert wait_for(lambda: e not in tags(a), 30), sa.log() + sb.log()
            if i in (8, 24):
                row = []
                for d in (a, b):
                    with Node(d, readonly=True) as n:
                        row.append(_size(n, "s"))
                sizes.append(row)
    finally:
        assert sa.stop() == 0 and sb.stop() == 0
    assert sizes[1] == sizes[0], sizes
    for d in (a, b):
        with Node(d) as n:
            assert n.get("s") == {"n": 24}
