"""`mycelium relay add | show | remove` as an operator types them, and the
chain rule a relay run must follow."""
import json
import os
from types import SimpleNamespace as C

import pytest

from agent.relay.link import _chained

from tests.sync.procs import cmd, init


def test_add_show_remove_and_bad_input_leaves_nothing(tmp_path):
    d = str(tmp_path / "d")
    init(d)
    cfg = os.path.join(d, "sync", "relay.json")
    assert "no relay" in cmd(d, "relay", "show").stdout
    for args, says in ((("http://h:4222", "--fleet", "f"), "is not a NATS address"),
                       (("nats://h:99999", "--fleet", "f"), "is not a NATS address"),
                       (("nats://h:4222", "--fleet", "a.b"), "is not a fleet name"),
                       (("nats://h:4222", "--fleet", "f", "--creds", str(tmp_path / "none")),
                        "cannot read the credentials file")):
        p = cmd(d, "relay", "add", *args, check=None)
        assert p.returncode != 0 and says in p.stderr, (args, p.stdout, p.stderr)
        assert not os.path.exists(cfg), args
    out = cmd(d, "relay", "add", "nats://relay.local:4222", "--fleet", "garden").stdout
    assert "relay set: nats://relay.local:4222, fleet garden" in out
    shown = cmd(d, "relay", "show").stdout
    assert "fleet     garden (stream MYC_garden)" in shown and "not used yet" in shown
    assert json.loads(cmd(d, "--json", "relay", "show").stdout)["relay"]["fleet"] == "garden"
    # a bad add after a good one keeps the good one
    cmd(d, "relay", "add", "nats://h", "--fleet", "x y", check=None)
    assert json.loads(cmd(d, "--json", "relay", "show").stdout)["relay"]["fleet"] == "garden"
    assert "relay removed" in cmd(d, "relay", "remove").stdout
    assert "no relay" in cmd(d, "relay", "show").stdout
    assert "no relay was set" in cmd(d, "relay", "remove").stdout


def _ch(seq, prev):
    return C(seq=seq, prev=prev)


@pytest.mark.parametrize("changes, first, last, ok", [
    ([_ch(1, 0), _ch(2, 1), _ch(3, 2)], 1, 3, True),
    ([_ch(120, 119), _ch(1121, 120)], 120, 1121, True),    # seqs skip after a crash
    ([_ch(1, 0), _ch(3, 1)], 1, 3, True),
    ([_ch(1, 0), _ch(3, 2)], 1, 3, False),                 # 2 is missing from the run
    ([_ch(1, 0), _ch(2, 1)], 1, 999999, False),            # headers that lie
    ([], 1, 1, False),
])
def test_a_run_is_one_unbroken_prev_chain(changes, first, last, ok):
    assert _chained(changes, first, last) is ok
