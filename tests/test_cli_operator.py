"""What an operator meets at the command line (issue 14): --version, help
with examples, bad fields and values refused with the valid forms, keys
that are not UTF-8, JSON that stays JSON, and typed errors from the Python
API. Real processes, real exit codes; nothing is written by a refused
command."""
import argparse
import json
import math
import os
import re
import subprocess
import sys

import pytest

from agent import __version__

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, PYTHONPATH=ROOT)


def run(data_dir, *args, check=None):
    argv = [sys.executable, "-m", "agent"] + (["--data-dir", data_dir] if data_dir else [])
    p = subprocess.run(argv + list(args), capture_output=True, env=ENV, timeout=60)
    p.stdout, p.stderr = (p.stdout.decode("utf-8", "replace"),
                          p.stderr.decode("utf-8", "replace"))
    if check is not None:
        assert p.returncode == check, (args, p.stdout, p.stderr)
    assert "Traceback" not in p.stderr, p.stderr
    return p


def _log_entries(d):
    from agent.oplog.log import OpLog
    return sum(1 for _ in OpLog(os.path.join(d, "log"), readonly=True).entries())


def test_version_prints_the_version_and_exits_0():
    p = run(None, "--version", check=0)
    assert p.stdout.strip() == "mycelium " + __version__


def _commands(parser, prefix=()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield prefix + (name,), sub
                yield from _commands(sub, prefix + (name,))


def test_every_command_help_has_examples():
    from agent.cli import build_parser
    cmds = list(_commands(build_parser()))
    assert len(cmds) >= 20
    for path, sub in cmds:
        text = sub.format_help()
        ex = text.split("examples:\n", 1)[-1]
        assert "examples:\n  " in text and "mycelium " in ex, (path, text)
        assert re.search(r"\b%s\b" % re.escape(" ".join(path)), ex), (path, text)
    # and a real process shows them
    p = run(None, "scan", "--help", check=0)
    assert "--keys-only" in p.stdout and "examples:" in p.stdout and "key order" in p.stdout


@pytest.mark.parametrize("field", ["tags[]=x", "tags[]|=x", "tags[]:=1", "=x", "novalue"])
def test_field_syntax_that_does_not_parse_is_refused_with_the_forms(d, field):
    before = _log_entries(d)
    p = run(d, "put", "k", field, check=2)
    assert "tags[]+=X" in p.stderr and "n+=N" in p.stderr and "name|=TEXT" in p.stderr
    assert _log_entries(d) == before
    run(d, "get", "k", check=1)


@pytest.mark.parametrize("raw", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_are_refused(d, raw):
    p = run(d, "put", "k", "f:=" + raw, check=2)
    assert raw in p.stderr and "null or a string" in p.stderr
    run(d, "get", "k", check=1)


def test_api_refuses_nan_in_every_kind(tmp_path):
    from agent.errors import UsageError
    from agent.node import Node, init_identity
    from agent.values import MV, Add, Remove
    init_identity(str(tmp_path))
    with Node(str(tmp_path)) as n:
        for v in (math.nan, math.inf, MV(-math.inf), Add(math.nan), Remove(math.nan)):
            with pytest.raises(UsageError):
                n.put("k", {"f": v})
        assert n.get("k") is None
        n.put("k", {"f": 1.5})
        assert n.get("k") == {"f": 1.5}


def test_json_output_stays_json_for_a_peers_nan(d, monkeypatch):
    """A NaN can still arrive from a peer (older builds took it): --json get
    and scan print it as {"$float": "nan"}, which strict JSON parsers take."""
    from agent import node as node_mod
    from agent.node import Node
    monkeypatch.setattr(node_mod, "_finite", lambda v: v, raising=False)  # as older builds
    with Node(d) as n:
        n.put("k", {"f": math.nan, "g": math.inf})

    def strict(text):
        return json.loads(text, parse_constant=lambda c: pytest.fail("not JSON: " + c))
    got = strict(run(d, "--json", "get", "k", check=0).stdout)
    assert got["fields"] == {"f": {"$float": "nan"}, "g": {"$float": "inf"}}
    strict(run(d, "--json", "scan", check=0).stdout)


def test_kind_error_shows_the_syntax_of_the_kind(d):
    run(d, "put", "k", "c+=1", "s[]+=a", "m|=x", check=0)
    p = run(d, "put", "k", "c=text", check=2)
    assert "c+=N or c-=N" in p.stderr and "Inc(n)" in p.stderr
    p = run(d, "put", "k", "s=text", check=2)
    assert "s[]+=X" in p.stderr
    p = run(d, "put", "k", "m=text", check=2)
    assert "m|=TEXT" in p.stderr


def test_a_key_that_is_not_utf8_is_a_usage_error(d):
    bad = os.fsdecode(b"\xffkey")
    for args in (("get", bad), ("put", bad, "a=1"), ("del", bad), ("scan", bad)):
        p = run(d, *args, check=2)
        assert "UTF-8" in p.stderr, (args, p.stderr)
    p = run(d, "put", "k", os.fsdecode(b"f\xfe=1"), check=2)
    assert "UTF-8" in p.stderr


def test_api_errors_are_agent_errors(tmp_path):
    from agent.errors import AgentError
    from agent.node import Node, init_identity
    from agent.values import Inc
    init_identity(str(tmp_path))
    with pytest.raises(AgentError):
        Inc(1.5)
    with pytest.raises(TypeError):       # still a TypeError for code that catches that
        Inc("1")
    n = Node(str(tmp_path))
    for call in (lambda: n.get(1), lambda: list(n.scan(1)), lambda: n.delete(1),
                 lambda: n.put(1, {"a": 1}), lambda: n.put("k", {1: 1}),
                 lambda: n.put("k", {}), lambda: n.get("\udcff"),
                 lambda: n.put("k", {"\udcff": 1}), lambda: list(n.scan("\udcff"))):
        with pytest.raises(AgentError):
            call()
    n.put("k", {"a": 1})
    n.close()
    for call in (lambda: n.get("k"), lambda: list(n.scan("")), lambda: n.put("k", {"a": 2}),
                 lambda: n.delete("k"), lambda: n.stats(), lambda: n.count(),
                 lambda: n.watch("", print)):
        with pytest.raises(AgentError, match="closed"):
            call()
    with Node(str(tmp_path)) as n:
        assert n.get("k") == {"a": 1}


def test_limit_and_count_refuse_negative_numbers(d):
    assert "count" in run(d, "scan", "--limit", "-1", check=2).stderr


def test_the_ids_in_help_and_docs_are_valid():
    """Examples people copy must pass `peer add`'s check."""
    import re
    from agent.sync.devid import normalize_id
    from agent.clihelp import EXAMPLES
    texts = list(EXAMPLES.values())
    for doc in ("README.md", "docs/OPERATIONS.md", "docs/SYNC.md"):
        with open(os.path.join(ROOT, doc)) as f:
            texts.append(f.read())
    ids = [m for t in texts for m in re.findall(r"\b(?:[A-Z2-7]{7}-){4}[A-Z2-7]\b", t)]
    assert len(ids) >= 6
    for i in ids:
        normalize_id(i)
