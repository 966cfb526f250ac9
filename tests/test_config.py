"""mycelium.toml (issue 14): /etc/mycelium and the data directory, the
environment over both, flags over all; `config show` names each source; a
bad file is a usage error that names the file and the key, and nothing runs.
Real processes."""
import json
import os
import subprocess
import sys

import pytest

from agent import config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(d, *args, env_extra=None, check=None):
    env = dict(os.environ, PYTHONPATH=ROOT, **(env_extra or {}))
    for k in [k for k in env if k.startswith("MYCELIUM_")]:
        if k not in (env_extra or {}):
            del env[k]
    p = subprocess.run([sys.executable, "-m", "agent", "--data-dir", d, *args],
                       capture_output=True, text=True, env=env, timeout=60)
    if check is not None:
        assert p.returncode == check, (args, p.stdout, p.stderr)
    assert "Traceback" not in p.stderr
    return p



def _show(d, *args, **kw):
    return json.loads(run(d, "--json", *args, "config", "show", check=0, **kw).stdout)


def test_file_env_and_flag_precedence(d):
    with open(os.path.join(d, "mycelium.toml"), "w") as f:
        f.write('durable = true\nmax_skew = 600\nlisten = ":7460"\nlog_format = "json"\n')
    s = _show(d)
    path = os.path.join(d, "mycelium.toml")
    assert s["durable"] == {"value": True, "source": path}
    assert s["max_skew"] == {"value": 600, "source": path}
    assert s["compact_mb"] == {"value": 8, "source": "default"}
    assert s["data_dir"]["source"] == "flag"
    s = _show(d, env_extra={"MYCELIUM_MAX_SKEW": "30"})
    assert s["max_skew"] == {"value": "30", "source": "env MYCELIUM_MAX_SKEW"}
    s = _show(d, "--durable")
    assert s["durable"]["source"] == "flag"


def test_serve_uses_the_files_listen_and_log_format(d):
    import socket
    with socket.socket() as so:
        so.bind(("127.0.0.1", 0))
        port = so.getsockname()[1]
    with open(os.path.join(d, "mycelium.toml"), "w") as f:
        f.write('listen = "127.0.0.1:%d"\nlog_format = "json"\n' % port)
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("MYCELIUM_LISTEN", None)
    env.pop("MYCELIUM_LOG_FORMAT", None)
    p = subprocess.Popen([sys.executable, "-m", "agent", "--data-dir", d, "--json", "serve"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = json.loads(p.stdout.readline())
    finally:
        p.terminate()
        _, err = p.communicate(timeout=30)
    assert line["listening"] == "127.0.0.1:%d" % port
    assert json.loads(err.splitlines()[0])["msg"].startswith("listening on")


def test_etc_file_names_the_data_dir(tmp_path, d, monkeypatch):
    etc = tmp_path / "etc.toml"
    etc.write_text('data_dir = "%s"\ncompact_mb = 2\n' % d)
    for var in ("MYCELIUM_DATA_DIR", "MYCELIUM_COMPACT_MB"):
        monkeypatch.setenv(var, "")     # so that what apply() sets is undone after the test
        monkeypatch.delenv(var)
    got = config.apply([], lambda: "/nowhere", etc_path=str(etc))
    assert got["data_dir"] == (d, str(etc)) and got["compact_mb"] == (2, str(etc))
    assert os.environ["MYCELIUM_COMPACT_MB"] == "2"
    local = os.path.join(d, "mycelium.toml")
    with open(local, "w") as f:
        f.write("compact_mb = 4\n")
    monkeypatch.delenv("MYCELIUM_COMPACT_MB")
    assert config.apply([], lambda: "/nowhere", etc_path=str(etc))["compact_mb"] == (4, local)
    with open(local, "w") as f:
        f.write('data_dir = "/x"\n')
    with pytest.raises(config.UsageError, match="only be set in"):
        config.apply([], lambda: "/nowhere", etc_path=str(etc))


def test_peers_declared_in_the_file_are_synced_with_and_kept_there(tmp_path):
    """[peers.NAME] in mycelium.toml: `peer list` shows them, serve dials
    them, and peer remove/rename/add refuse to change them behind the file."""
    from tests.sync.procs import Serve, init, wait_for
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    ida, idb = init(a), init(b)
    run(b, "peer", "add", ida, check=0)                 # b waits for a to dial in
    sb = Serve(b)
    try:
        with open(os.path.join(a, "mycelium.toml"), "w") as f:
            f.write('[peers.shed-pi]\nid = "%s"\naddr = "%s"\n' % (idb.lower(), sb.addr))
        rows = [json.loads(x) for x in run(a, "--json", "peer", "list", check=0).stdout.split("\n")
                if x]
        assert [(r["device_id"], r["name"], r["addr"], r["declared"]) for r in rows] == \
            [(idb, "shed-pi", sb.addr, True)]
        for args in (("peer", "remove", "shed-pi"), ("peer", "rename", "shed-pi", "x"),
                     ("peer", "add", idb, "127.0.0.1:9")):
            p = run(a, *args, check=2)
            assert "[peers.shed-pi]" in p.stderr, p.stderr
        sa = Serve(a)
        try:
            run(a, "put", "k", "v=from-a", check=0)
            assert wait_for(lambda: run(b, "get", "k").returncode == 0, 30), sa.log()
        finally:
            sa.stop()
    finally:
        sb.stop()


@pytest.mark.parametrize("text,words", [
    ('[peers.x]\nid = "K3J5Q2M-ABCDEFG-HIJKLMN-OPQRSTU-A"\n', ["[peers.x]", "mistyped"]),
    ('[peers.x]\nid = "K3J5Q2M-ABCDEFG-HIJKLMN-OPQRSTU-H"\naddr = "fd00::1:7420"\n',
     ["[peers.x]", "brackets"]),
    ('[peers.x]\naddr = "10.0.0.1:7420"\n', ["[peers.x]", "takes id"]),
    ('peers = 3\n', ["peers must be tables"]),
    ('durable = "yes"\n', ["durable", "true or false"]),
    ("max_skew = [1]\n", ["max_skew", "a number"]),
    ('log_format = "xml"\n', ["log_format", "text, json"]),
    ('power = "solar"\n', ["power", "auto, battery, ac"]),
    ('[peers.x]\nid = "K3J5Q2M-ABCDEFG-HIJKLMN-OPQRSTU-H"\nmetered = "yes"\n',
     ["[peers.x]", "metered = true"]),
    ("listen = \n", ["not valid TOML"]),
    ("lisen = \":1\"\n", ["unknown setting 'lisen'", "listen"]),
    ("[relay]\nurl = \"nats://x\"\n", ["relay", "not in this version"]),
    ("[http]\nlisten = \"127.0.0.1:7421\"\n", ["http must be a string"]),
])
def test_a_bad_file_is_refused_and_nothing_runs(d, text, words):
    run(d, "put", "k", "v=1", check=0)
    with open(os.path.join(d, "mycelium.toml"), "w") as f:
        f.write(text)
    for args in (("put", "k", "v=2"), ("get", "k"), ("config", "show")):
        p = run(d, *args, check=2)
        assert "mycelium.toml" in p.stderr and all(w in p.stderr for w in words), p.stderr
    os.unlink(os.path.join(d, "mycelium.toml"))
    assert json.loads(run(d, "--json", "get", "k", check=0).stdout)["fields"] == {"v": "1"}


def test_the_packages_default_file_names_every_setting_and_parses(monkeypatch):
    """packaging/deb/mycelium.toml, installed as /etc/mycelium/mycelium.toml:
    valid, pointing the CLI at the service's directories, and listing every
    other setting (commented out) so that an operator finds them all there."""
    path = os.path.join(ROOT, "packaging", "deb", "mycelium.toml")
    got = config.load(path)
    assert got == {"data_dir": "/var/lib/mycelium", "cache_dir": "/var/cache/mycelium"}
    with open(path) as f:
        text = f.read()
    import re
    listed = set(re.findall(r"(?m)^# (\w+) = ", text.split("\n# [")[0]))  # before the tables
    tables = set(re.findall(r"(?m)^# \[(\w+)\.", text))
    assert listed | tables | set(got) == set(config.KEYS)
    for key in listed:          # each example, uncommented, is a valid value
        line = next(l for l in text.splitlines() if l.startswith("# %s = " % key))
        assert key in config.loads_text(line[2:].split("#")[0], path)
    for key in tables:          # and so is each table
        block = re.search(r"(?m)^# \[%s\..*(\n# \w+ = .*)*" % key, text).group(0)
        assert key in config.loads_text(re.sub(r"(?m)^# ", "", block), path)
