"""The digest tree (agent/history/digests.py): kept in step with every save,
saved at a clean close, taken back by the next writer, never trusted after
a crash. Each check compares with a tree built from scratch."""
import os

from agent.history.digests import Digests, digests_of, record_digest
from agent.node import Node, init_identity


def scratch(node):
    """A tree built from the store alone, ignoring anything saved."""
    st = node.store
    saved, touched = st.saved_digests, st.touched
    st.saved_digests = None
    d = Digests(st)
    d.step(float("inf"))
    st.saved_digests, st.touched = saved, touched if touched is not None else set()
    return d


def open_node(d):
    init_identity(d)
    return Node(d)


def saved_tree(d, n):
    """A data directory of n records whose clean close saved the tree;
    returns the tree's root."""
    node = open_node(d)
    for i in range(n):
        node.put("k%d" % i, {"x": i})
    root = digests_of(node.store).root
    node.close()
    return root


def test_the_tree_follows_every_kind_of_write(tmp_path):
    n = open_node(str(tmp_path / "n"))
    for i in range(300):
        n.put("k%d" % i, {"x": i, "t[]": "a"})
    first = digests_of(n.store).root
    n.put("k1", {"x": 5})
    n.delete("k2")
    n.put("new", {"c": 1})
    got = digests_of(n.store)
    assert got.root != first
    assert got.root == scratch(n).root
    assert got.digest[n.store.find(b"k1")] == record_digest(n.store, b"k1", n.store.load("k1"))
    n.close()


def test_a_clean_close_saves_it_and_the_next_writer_keeps_it_true(tmp_path):
    d = str(tmp_path / "n")
    saved_tree(d, 300)
    path = os.path.join(d, "store", "digests")
    assert os.path.exists(path)
    # a writer that never looks at the tree (a CLI put): it takes the file,
    # tracks its writes and saves the tree again with them
    n = Node(d)
    assert not os.path.exists(path) and n.store.saved_digests is not None
    n.put("k7", {"x": "changed"})
    n.put("k300", {"x": 300})
    n.close()
    n = Node(d)
    got = digests_of(n.store)
    assert got.n == n.store.keys.n
    assert got.root == scratch(n).root
    n.close()


def test_after_a_crash_it_is_built_afresh(tmp_path):
    d = str(tmp_path / "n")
    saved_tree(d, 100)
    saved = open(os.path.join(d, "store", "digests"), "rb").read()
    n = Node(d)
    n.put("k7", {"x": "changed"})
    n.log.commit()
    # the process dies here: no close. A stale copy of the file put back
    # (as a lost unlink would leave it) must not be believed
    with open(os.path.join(d, "store", "digests"), "wb") as f:
        f.write(saved)
    n.store._release()
    m = Node(d)
    assert m.store.saved_digests is None
    assert not os.path.exists(os.path.join(d, "store", "digests"))
    assert digests_of(m.store).root == scratch(m).root
    m.close()


def test_a_damaged_file_is_ignored(tmp_path):
    d = str(tmp_path / "n")
    want = saved_tree(d, 100)
    path = os.path.join(d, "store", "digests")
    data = bytearray(open(path, "rb").read())
    data[-20] ^= 0xFF                   # inside the last digest
    open(path, "wb").write(bytes(data))
    n = Node(d)
    assert digests_of(n.store).root == want
    n.close()
