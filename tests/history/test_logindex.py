"""Where a session starts in the log (agent/history/logindex.py): never past
a change the peer lacks, and, within a segment, at most a block before the
first one it lacks."""
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from agent.change import actor_seq
from agent.history.logindex import BLOCK
from agent.node import Node
from agent.vector import Known

from tests.sync.helpers import make_node, pair, run

SEG = 64 << 10


def _history(tmp_path, n=1500, seg=SEG):
    """A node whose log holds its own changes and two other actors'
    interleaved, over several segments, the last one being written."""
    a = make_node(tmp_path / "a", segment_bytes=seg)
    others = [make_node(tmp_path / n, segment_bytes=seg) for n in ("b", "c")]
    for i in range(n):
        w = (a, *others)[i % 3]
        w.put("k%d" % (i % 97), {"v": i, "who": str(i % 3)})
        if i % 50 == 49:
            for o in others:
                a.merge_changes(list(o.changes_since(a.known)))
    a.log.commit()
    for o in others:
        o.close()
    return a


def _entries(node):
    return [(pos, actor_seq(raw)) for pos, raw in node.log.read()]


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    """Segments of about 12 blocks each, so a wrong bisection shows."""
    a = _history(tmp_path_factory.mktemp("idx"), n=9000, seg=300 << 10)
    yield a, _entries(a)
    a.close()


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_no_change_the_peer_lacks_is_before_its_start(history, data):
    a, ents = history
    assert len({p[0] for p, _ in ents}) >= 3           # several segments
    # a peer's Known: for each actor a top, and some gaps below it
    tops = {}
    for _, (ac, sq) in ents:
        tops[ac] = max(tops.get(ac, 0), sq)
    runs = {}
    for ac, top in tops.items():
        have = data.draw(st.integers(0, top), label="top")
        holes = set(data.draw(st.lists(st.integers(1, max(1, have)), max_size=3), label="gaps"))
        rs = []
        for s in range(1, have + 1):
            if s in holes:
                continue
            if rs and s == rs[-1][1] + 1:
                rs[-1][1] = s
            else:
                rs.append([s, s])
        runs[ac] = rs
    known = Known.from_runs(runs)
    start = a.log_start_for(known)
    lacking = [p for p, (ac, sq) in ents if not known.has(ac, sq)]
    assert all(p >= start for p in lacking), (start, lacking[:3])
    if lacking:           # and it does not start far before the first lack
        first = lacking[0]
        between = [p for p, _ in ents if start <= p < first]
        assert first[0] != start[0] or len(between) < BLOCK, (start, first, len(between))


def test_a_peer_a_few_changes_behind_reads_a_block_not_the_segment(tmp_path):
    a = make_node(tmp_path / "a")                # one big segment being written
    b = make_node(tmp_path / "b")
    for i in range(3000):
        a.put("k%d" % (i % 100), {"v": i})
    run(*pair(a, b))
    for i in range(10):
        a.put("late%d" % i, {"v": i})
    a.log.commit()
    start = a.log_start_for(b.known)
    assert start[0] == a.log.seg and start[1] > 0
    read = list(a.log.read(start))
    assert 10 <= len(read) < BLOCK + 10
    run(*pair(a, b))                              # and the session sends them
    assert all(b.get("late%d" % i) == {"v": i} for i in range(10))
    a.close()
    b.close()


def test_a_reopened_node_finds_the_same_start(tmp_path):
    a = make_node(tmp_path / "a", segment_bytes=SEG)
    for i in range(2000):
        a.put("k%d" % (i % 100), {"v": i})
    a.log.commit()                    # only what is on disk is indexed
    known = Known.from_runs({a.actor: [[1, 1990]]})
    before = a.log_start_for(known)
    assert before[1] > 0
    a.close()
    a = Node(str(tmp_path / "a"), segment_bytes=SEG)
    try:
        assert a.log_start_for(known) == before
        assert [actor_seq(r)[1] for _, r in a.log.read(before)][-10:] == list(range(1991, 2001))
    finally:
        a.close()


def _reopen_and_watch(path):
    """Reopen; returns the node and the offsets its log's scans start at."""
    a = Node(path, segment_bytes=SEG << 4)
    starts = []
    real = a.log.entries

    def entries(start=(0, 0), upto=None):
        starts.append(start)
        return real(start, upto)
    a.log.entries = entries
    return a, starts


def test_a_clean_restart_reads_on_from_the_saved_blocks(tmp_path):
    path = str(tmp_path / "a")
    a = make_node(tmp_path / "a", segment_bytes=SEG << 4)
    for i in range(3000):
        a.put("k%d" % (i % 100), {"v": i})
    a.log.commit()
    known = Known.from_runs({a.actor: [[1, 2990]]})
    before = a.log_start_for(known)
    a.close()
    a, starts = _reopen_and_watch(path)
    try:
        assert a.log_start_for(known) == before
        assert starts and starts[0][1] > 0      # not the whole segment again
    finally:
        a.close()


@pytest.mark.parametrize("damage", ["garbage", "shrunk", "other segment"])
def test_saved_blocks_that_do_not_fit_the_log_are_ignored(tmp_path, damage):
    import json
    import os
    path = str(tmp_path / "a")
    a = make_node(tmp_path / "a", segment_bytes=SEG << 4)
    for i in range(3000):
        a.put("k%d" % (i % 100), {"v": i})
    a.log.commit()
    a.log_start_for(Known())
    seg = a.log.path(a.log.seg)
    a.close()
    bpath = os.path.join(path, "log", "blocks.json")
    if damage == "garbage":
        open(bpath, "w").write("{not json")
    elif damage == "shrunk":        # the segment is shorter than the blocks say
        with open(seg, "r+b") as f:
            f.truncate(os.path.getsize(seg) // 2)
    else:
        obj = json.load(open(bpath))
        obj["segment"] += 1
        from agent import fs
        fs.write_json(bpath, obj)
    a, starts = _reopen_and_watch(path)
    try:
        top = max(sq for _, (ac, sq) in _entries(a))     # what the (maybe cut) log holds
        del starts[:]
        known = Known.from_runs({a.actor: [[1, top - 10]]})
        start = a.log_start_for(known)
        assert starts[0] == (a.log.seg, 0)      # read again from the start
        lacking = [p for p, (ac, sq) in _entries(a) if not known.has(ac, sq)]
        assert lacking and all(p >= start for p in lacking)
    finally:
        a.close()
