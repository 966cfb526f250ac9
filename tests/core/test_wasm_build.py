"""The committed agent/core/crdt_core.wasm is what native/ builds, and small.

The rebuild runs when clang, wasm-ld and wasm-opt are on PATH at the versions
recorded in native/TOOLCHAIN (another compiler version legitimately gives
other bytes); otherwise it is skipped with the reason, except in CI, where
it fails (scripts/bootstrap.sh installs them). Also: the .cwasm cache
(a corrupt or stale entry is rebuilt, not fatal).
"""
import gzip
import os
import re
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WASM = os.path.join(ROOT, "agent", "core", "crdt_core.wasm")
NATIVE = os.path.join(ROOT, "native")


def _version(cmd):
    try:
        out = subprocess.run([cmd, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"version (\d+(?:\.\d+)*)", out) or re.search(r"LLD (\d+(?:\.\d+)*)", out)
    return m.group(1) if m else None


def _toolchain_mismatch():
    want = {}
    with open(os.path.join(NATIVE, "TOOLCHAIN")) as f:
        for line in f:
            if line.strip():
                tool, ver = line.split()
                want[tool] = ver
    for tool, ver in want.items():
        if shutil.which(tool) is None:
            return "%s is not installed" % tool
        have = _version(tool)
        if have != ver:
            return "%s is version %s, the committed module was built with %s" % (tool, have, ver)
    return None


def test_size_within_budget():
    data = open(WASM, "rb").read()
    assert data[:4] == b"\0asm"
    assert len(gzip.compress(data, 9)) <= 16 * 1024


def _missing(why):
    """Skip, except in CI ($MYCELIUM_REQUIRE_TOOLS, set by .ci/run, whose
    scripts/bootstrap.sh installs the tools): there a missing tool fails."""
    if os.environ.get("MYCELIUM_REQUIRE_TOOLS"):
        pytest.fail(why + " (scripts/bootstrap.sh test installs it as root)")
    pytest.skip(why)


def test_rebuild_is_byte_identical(tmp_path):
    why = _toolchain_mismatch()
    if why:
        _missing("cannot rebuild the wasm core: " + why)
    out = tmp_path / "crdt_core.wasm"
    subprocess.run(["sh", os.path.join(NATIVE, "build.sh"), str(out)], check=True,
                   capture_output=True, timeout=300)
    assert out.read_bytes() == open(WASM, "rb").read(), \
        "agent/core/crdt_core.wasm is stale: run native/build.sh and commit it"


@pytest.mark.parametrize("flags,kind", [("-DNO_COUNTER", "counter"), ("-DNO_MV", "mv"),
                                        ("-DNO_SET", "set")])
def test_trimmed_variant_refuses_its_kind(tmp_path, flags, kind):
    if not all(shutil.which(t) for t in ("clang", "wasm-ld", "wasm-opt")):
        _missing("no clang/wasm-ld/wasm-opt to build the variants")
    wasm = pytest.importorskip("agent.core.wasm", exc_type=ImportError)
    from agent.core import ops, reference
    from agent.core.batch import build_batch
    from agent.errors import CoreError
    out = tmp_path / "v.wasm"
    subprocess.run(["sh", os.path.join(NATIVE, "build.sh"), str(out), flags], check=True,
                   capture_output=True, timeout=300)
    o = bytearray()
    ops.lww(o, 0, 0, 5, 0, "kept")
    plain = build_batch(b"\x01" + b"\0" * 7, [0, 1], [0], [b""], 1, bytes(o))
    if kind == "counter":
        ops.inc(o, 0, 1, 0, 1)
    elif kind == "mv":
        ops.mv_write(o, 0, 1, 6, 0, 1)
    else:
        ops.set_add(o, 0, 1, 6, 0, 1)
    mixed = build_batch(b"\x01" + b"\0" * 7, [0, 1], [0], [b""], 2, bytes(o))
    eng = wasm.WasmEngine.__new__(wasm.WasmEngine)
    old = wasm.WASM_PATH, wasm._shared
    try:
        wasm.WASM_PATH, wasm._shared = str(out), None
        os.environ["MYCELIUM_CACHE_DIR"] = str(tmp_path / "cache")
        eng.__init__()
        assert eng.apply(plain) == reference.apply(plain)
        with pytest.raises(CoreError, match="kind not built in"):
            eng.apply(mixed)
        eng.close()
    finally:
        wasm.WASM_PATH, wasm._shared = old
        os.environ.pop("MYCELIUM_CACHE_DIR", None)


def test_cwasm_cache_corrupt_entry_is_rebuilt(tmp_path, monkeypatch):
    wasm = pytest.importorskip("agent.core.wasm", exc_type=ImportError)
    from agent.core import reference
    monkeypatch.setenv("MYCELIUM_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(wasm, "_shared", None)
    e = wasm.WasmEngine()
    e.close()
    e.close()  # idempotent
    files = [p for p in os.listdir(tmp_path) if p.endswith(".cwasm")]
    assert len(files) == 1 and wasm.WASMTIME_VERSION in files[0]
    path = tmp_path / files[0]
    good = path.read_bytes()
    batch = b"\x01\x00\x00\x00\x00\x00"
    for bad in (good[:100], good[:-10] + b"\0" * 10, b"", b"garbage" * 50):
        path.write_bytes(bad)
        monkeypatch.setattr(wasm, "_shared", None)
        with wasm.WasmEngine() as e:
            assert e.apply(batch) == reference.apply(batch)
        assert path.read_bytes() == good  # rewritten
    # a warm start deserializes the cached file
    monkeypatch.setattr(wasm, "_shared", None)
    with wasm.WasmEngine() as e:
        assert e.merge(batch) == reference.merge(batch)
    with pytest.raises(Exception):
        e.merge(batch)  # closed


def test_no_library_means_importerror_and_reference_fallback(monkeypatch):
    import sys
    from importlib.machinery import PathFinder
    real = PathFinder.find_spec

    def hide(name, *a, **k):
        return None if name == "wasmtime" else real(name, *a, **k)

    monkeypatch.setattr(PathFinder, "find_spec", staticmethod(hide))
    saved = sys.modules.pop("agent.core.wasm", None)
    try:
        with pytest.raises(ImportError):
            import agent.core.wasm  # noqa: F401
        from agent.core import load_engine
        monkeypatch.delenv("MYCELIUM_CORE", raising=False)
        assert load_engine().name == "reference"
    finally:
        sys.modules.pop("agent.core.wasm", None)
        if saved is not None:
            sys.modules["agent.core.wasm"] = saved
            import agent.core
            agent.core.wasm = saved
