"""The mycelium command as a user runs it: real processes, real exit codes."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(data_dir, *args, check=None):
    env = dict(os.environ, PYTHONPATH=ROOT)
    p = subprocess.run([sys.executable, "-m", "agent", "--data-dir", data_dir, *args],
                       capture_output=True, text=True, env=env, timeout=60)
    if check is not None:
        assert p.returncode == check, (p.stdout, p.stderr)
    return p


def test_put_then_get_json_shows_every_kind(d):
    run(d, "put", "s:1", "site=kitchen", "temp:=21.5", "n+=3", "n-=1", "m|=ok",
        "tags[]+=a", "tags[]+=b", check=0)
    run(d, "put", "s:1", "tags[]-=a", check=0)
    out = json.loads(run(d, "--json", "get", "s:1", check=0).stdout)
    assert out["fields"] == {"site": "kitchen", "temp": 21.5, "n": 2, "m": ["ok"], "tags": ["b"]}
    assert out["kinds"] == {"site": "lww", "temp": "lww", "n": "counter", "m": "mv", "tags": "set"}


def test_missing_key_exits_1(d):
    p = run(d, "get", "nope", check=1)
    assert "not found" in p.stderr


def test_bad_assignment_exits_2_with_a_hint(d):
    p = run(d, "put", "k", "novalue", check=2)
    assert "put --help" in p.stderr
    p = run(d, "put", "k", "n+=many", check=2)
    assert "integer" in p.stderr


def test_uninitialised_directory_says_run_init(tmp_path):
    p = run(str(tmp_path / "nothing"), "get", "k", check=2)
    assert "mycelium init" in p.stderr


def test_scan_and_delete(d):
    for k in ("a:1", "a:2", "b:1"):
        run(d, "put", k, "v=" + k, check=0)
    run(d, "del", "a:2", check=0)
    run(d, "del", "a:2", check=1)
    out = run(d, "--json", "scan", "a:", check=0).stdout.splitlines()
    assert [json.loads(line)["key"] for line in out] == ["a:1"]


def test_watch_prints_changes_written_by_another_process(d):
    env = dict(os.environ, PYTHONPATH=ROOT)
    w = subprocess.Popen([sys.executable, "-m", "agent", "--data-dir", d, "--json", "watch",
                          "user:", "--count", "2", "--timeout", "30"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    import time
    time.sleep(1.0)  # let the watcher find the log's end
    run(d, "put", "other", "x=1", check=0)
    run(d, "put", "user:1", "name=Ada", check=0)
    run(d, "put", "user:2", "n+=1", check=0)
    out, err = w.communicate(timeout=60)
    lines = [json.loads(x) for x in out.splitlines()]
    assert [x["key"] for x in lines] == ["user:1", "user:2"], err


def test_stats_names_the_engine(d):
    s = json.loads(run(d, "--json", "stats", check=0).stdout)
    assert s["engine"] in ("wasm", "reference") and s["records"] == 0
    env_ref = json.loads(subprocess.run(
        [sys.executable, "-m", "agent", "--data-dir", d, "--json", "stats"], capture_output=True,
        text=True, env=dict(os.environ, PYTHONPATH=ROOT, MYCELIUM_CORE="reference")).stdout)
    assert env_ref["engine"] == "reference"


def test_help_teaches_the_put_syntax():
    p = subprocess.run([sys.executable, "-m", "agent", "put", "--help"], capture_output=True,
                       text=True, env=dict(os.environ, PYTHONPATH=ROOT))
    assert "tags[]+=red" in p.stdout and "visits+=1" in p.stdout


def test_demo_runs_and_devices_agree(tmp_path):
    p = subprocess.run([sys.executable, "-m", "agent", "demo", "--demo-dir", str(tmp_path / "demo")],
                       capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=ROOT),
                       timeout=120)
    assert p.returncode == 0, p.stderr
    assert "agree on all 3 records: yes" in p.stdout


def test_get_and_scan_load_neither_the_engine_nor_sync(d):
    run(d, "put", "k", "v=1", "n+=1", check=0)
    code = ("import sys, io, contextlib; from agent.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    assert main(['--data-dir', %r, 'get', 'k']) == 0\n"
            "    assert main(['--data-dir', %r, 'scan', '']) == 0\n"
            "heavy = ('wasm', 'ssl', 'asyncio', 'zstandard', 'pybloom_live', '_hashlib')\n"
            "loaded = [m for m in sys.modules if any(h in m for h in heavy)]\n"
            "print(','.join(loaded))\n" % (d, d))
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=ROOT), timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == ""
