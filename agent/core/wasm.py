"""The wasm CRDT core (native/, built into crdt_core.wasm) run by wasmtime.

A lean ctypes binding straight to the shared library shipped in the wasmtime
wheel (`wasmtime/<platform>/_libwasmtime.so`): the `wasmtime` Python package
is never imported (it costs ~70 ms); only the C API functions needed here are
declared. The compiled module is cached as a `.cwasm` file under
`$MYCELIUM_CACHE_DIR`, else `$XDG_CACHE_HOME/mycelium`, else
`~/.cache/mycelium`, keyed by the wasmtime version and the module's sha256.

    with WasmEngine() as eng:
        out = eng.apply(batch)      # same bytes as reference.apply(batch)
        out = eng.merge(batch)

One raw call (`wasmtime_func_call_unchecked`) per batch. The ABI is in
native/README.md. A trap raises CoreError and the instance is replaced before
the next call; the engine is pure (bytes in, bytes out) so nothing else needs
undoing.

Importing this module raises ImportError when no wasmtime library exists for
this platform, so agent.core.load_engine falls back to the reference engine.
"""
import os
import sys
from importlib.machinery import PathFinder

from ..errors import CoreError, MalformedChange
from .locate import bundled_cwasm

__all__ = ["WasmEngine", "WASM_PATH", "cache_dir"]

WASM_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "crdt_core.wasm")

ST_OK, ST_MALFORMED, ST_CORE, ST_KIND = 0, 1, 2, 3
_PAGE = 65536
# after a call leaves linear memory above this, the instance is recycled so
# one huge batch does not pin its memory for the life of the process
_RECYCLE_BYTES = 256 << 20


def _find_library():
    if sys.platform.startswith("linux"):
        libname = "_libwasmtime.so"
    elif sys.platform == "darwin":
        libname = "_libwasmtime.dylib"
    elif sys.platform == "win32":
        libname = "_wasmtime.dll"
    else:
        raise ImportError("wasmtime has no library for %s" % sys.platform)
    machine = os.uname().machine if hasattr(os, "uname") else \
        os.environ.get("PROCESSOR_ARCHITECTURE", "")
    machine = {"AMD64": "x86_64", "amd64": "x86_64", "arm64": "aarch64",
               "ARM64": "aarch64"}.get(machine, machine)
    plat = "linux" if sys.platform.startswith("linux") else sys.platform
    spec = PathFinder.find_spec("wasmtime")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the wasmtime package is not installed")
    for loc in spec.submodule_search_locations:
        path = os.path.join(loc, "%s-%s" % (plat, machine), libname)
        if os.path.isfile(path):
            version = "unknown"
            parent = os.path.dirname(loc)
            try:
                for name in os.listdir(parent):
                    if name.startswith("wasmtime-") and name.endswith(".dist-info"):
                        version = name[len("wasmtime-"):-len(".dist-info")]
                        break
            except OSError:
                pass
            if version == "unknown":
                st = os.stat(path)
                version = "so%d-%d" % (st.st_size, int(st.st_mtime))
            return path, version
    raise ImportError("no wasmtime library for %s-%s" % (plat, machine))


_LIB_PATH, WASMTIME_VERSION = _find_library()
if not os.path.isfile(WASM_PATH):
    raise ImportError("crdt_core.wasm is missing; run native/build.sh")


def cache_dir():
    d = os.environ.get("MYCELIUM_CACHE_DIR")
    if d:
        return d
    x = os.environ.get("XDG_CACHE_HOME")
    if x:
        return os.path.join(x, "mycelium")
    return os.path.join(os.path.expanduser("~"), ".cache", "mycelium")


# ---------------------------------------------------------------- the C API

_api = None  # (lib, ctypes, structs) once loaded
_shared = None  # (engine, module) for this process


def _load_api():
    """dlopen the library and declare the functions used. OSError on failure."""
    global _api
    if _api is not None:
        return _api
    import ctypes
    from ctypes import (POINTER, Structure, Union, c_bool, c_char_p, c_size_t,
                        c_uint8, c_uint32, c_uint64, c_void_p, c_int32, c_int64)

    lib = ctypes.CDLL(_LIB_PATH)

    class ByteVec(Structure):
        _fields_ = [("size", c_size_t), ("data", c_void_p)]

    class Func(Structure):
        _fields_ = [("store_id", c_uint64), ("private", c_void_p)]

    class Memory(Structure):
        _fields_ = [("store_id", c_uint64), ("private1", c_uint32),
                    ("private2", c_uint32)]

    class ExternUnion(Union):
        # 24 bytes, 8-aligned: the largest member (global, table, memory)
        _fields_ = [("func", Func), ("memory", Memory), ("_pad", c_uint64 * 3)]

    class Extern(Structure):
        _fields_ = [("kind", c_uint8), ("of", ExternUnion)]

    class Instance(Structure):
        _fields_ = [("store_id", c_uint64), ("private", c_size_t)]

    class ValRaw(Union):
        _fields_ = [("i32", c_int32), ("i64", c_int64), ("_v128", c_uint8 * 16)]

    P = c_void_p

    def fn(name, res, *args):
        f = getattr(lib, name)
        f.restype = res
        f.argtypes = list(args)
        return f

    class A:
        pass

    a = A()
    a.ctypes = ctypes
    a.ByteVec, a.Func, a.Memory, a.Extern, a.Instance, a.ValRaw = \
        ByteVec, Func, Memory, Extern, Instance, ValRaw
    a.engine_new = fn("wasm_engine_new", P)
    a.store_new = fn("wasmtime_store_new", P, P, P, P)
    a.store_context = fn("wasmtime_store_context", P, P)
    a.store_delete = fn("wasmtime_store_delete", None, P)
    a.module_new = fn("wasmtime_module_new", P, P, c_char_p, c_size_t, POINTER(P))
    a.module_serialize = fn("wasmtime_module_serialize", P, P, POINTER(ByteVec))
    a.module_deserialize = fn("wasmtime_module_deserialize", P, P, c_char_p,
                              c_size_t, POINTER(P))
    a.instance_new = fn("wasmtime_instance_new", P, P, P, P, c_size_t,
                        POINTER(Instance), POINTER(P))
    a.export_get = fn("wasmtime_instance_export_get", c_bool, P, POINTER(Instance),
                      c_char_p, c_size_t, POINTER(Extern))
    a.memory_data = fn("wasmtime_memory_data", c_size_t, P, POINTER(Memory))
    a.memory_data_size = fn("wasmtime_memory_data_size", c_size_t, P, POINTER(Memory))
    a.memory_grow = fn("wasmtime_memory_grow", P, P, POINTER(Memory), c_uint64,
                       POINTER(c_uint64))
    a.call = fn("wasmtime_func_call_unchecked", P, P, POINTER(Func), POINTER(ValRaw),
                c_size_t, POINTER(P))
    a.error_message = fn("wasmtime_error_message", None, P, POINTER(ByteVec))
    a.error_delete = fn("wasmtime_error_delete", None, P)
    a.trap_message = fn("wasm_trap_message", None, P, POINTER(ByteVec))
    a.trap_delete = fn("wasm_trap_delete", None, P)
    a.byte_vec_delete = fn("wasm_byte_vec_delete", None, POINTER(ByteVec))
    _api = a
    return a


def _message(a, ptr, getter, deleter):
    v = a.ByteVec()
    getter(ptr, a.ctypes.byref(v))
    msg = a.ctypes.string_at(v.data, v.size).decode("utf-8", "replace") if v.size else ""
    a.byte_vec_delete(a.ctypes.byref(v))
    deleter(ptr)
    return msg


def _check(a, err, what):
    if err:
        msg = _message(a, err, a.error_message, a.error_delete)
        raise OSError("%s: %s" % (what, msg))


def _sha256(data):
    try:
        from _sha256 import sha256
    except ImportError:  # pragma: no cover
        from hashlib import sha256
    return sha256(data).hexdigest()


def _cache_path(wasm):
    return os.path.join(cache_dir(), "crdt_core-wasmtime%s-%s.cwasm"
                        % (WASMTIME_VERSION, _sha256(wasm)))


# A cache file is the serialized module followed by 4 bytes: crc32 of it, so a
# torn or corrupted file is caught before wasmtime trusts it.

def _read_cache(a, engine, path):
    import zlib
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    if len(data) < 8 or zlib.crc32(data[:-4]).to_bytes(4, "little") != data[-4:]:
        return None
    mod = a.ctypes.c_void_p()
    err = a.module_deserialize(engine, data, len(data) - 4, a.ctypes.byref(mod))
    if err:
        _message(a, err, a.error_message, a.error_delete)
        return None
    return mod.value


def _write_cache(a, module, path):
    import zlib
    v = a.ByteVec()
    err = a.module_serialize(module, a.ctypes.byref(v))
    if err:
        _message(a, err, a.error_message, a.error_delete)
        return
    data = a.ctypes.string_at(v.data, v.size)
    a.byte_vec_delete(a.ctypes.byref(v))
    data += zlib.crc32(data).to_bytes(4, "little")
    from .. import fs
    from ..errors import AgentError
    try:
        fs.mkdir(os.path.dirname(path))
        fs.atomic_write(path, data)
    except (OSError, AgentError):
        pass  # a cache: the module is compiled again next time


def _load_module():
    """-> (api, engine, module), shared by every WasmEngine of the process."""
    global _shared
    a = _load_api()
    if _shared is not None:
        return (a,) + _shared
    engine = a.engine_new()
    if not engine:
        raise OSError("wasm_engine_new failed")
    with open(WASM_PATH, "rb") as f:
        wasm = f.read()
    path = _cache_path(wasm)
    # the user cache, then a copy a packaged binary ships beside the .wasm
    module = _read_cache(a, engine, path) or _read_cache(a, engine, bundled_cwasm(path))
    if module is None:
        mod = a.ctypes.c_void_p()
        _check(a, a.module_new(engine, wasm, len(wasm), a.ctypes.byref(mod)),
               "compiling crdt_core.wasm")
        module = mod.value
        _write_cache(a, module, path)
    _shared = (engine, module)
    return a, engine, module


# ---------------------------------------------------------------- the engine

class WasmEngine:
    """apply/merge through the wasm core; byte-identical to reference.py."""
    name = "wasm"

    def __init__(self):
        self._a, self._engine, self._module = _load_module()
        self._store = None
        self._new_instance()

    def _new_instance(self):
        a = self._a
        ct = a.ctypes
        self._drop_store()
        store = a.store_new(self._engine, None, None)
        if not store:
            raise OSError("wasmtime_store_new failed")
        self._store = store
        ctx = self._ctx = a.store_context(store)
        inst = a.Instance()
        trap = ct.c_void_p()
        err = a.instance_new(ctx, self._module, None, 0, ct.byref(inst), ct.byref(trap))
        if trap.value:
            raise OSError("instantiating crdt_core.wasm: "
                          + _message(a, trap.value, a.trap_message, a.trap_delete))
        _check(a, err, "instantiating crdt_core.wasm")
        ext = {}
        for name in ("memory", "apply", "merge", "heap_base", "result"):
            e = a.Extern()
            b = name.encode()
            if not a.export_get(ctx, ct.byref(inst), b, len(b), ct.byref(e)):
                raise OSError("crdt_core.wasm lacks the export %r" % name)
            ext[name] = e
        self._mem = a.Memory.from_buffer_copy(ext["memory"].of.memory)
        self._mem_ref = ct.byref(self._mem)
        self._funcs = {n: ct.byref(a.Func.from_buffer_copy(ext[n].of.func))
                       for n in ("apply", "merge", "heap_base", "result")}
        self._args = (a.ValRaw * 2)()
        self._trap = ct.c_void_p()
        self._size = a.memory_data_size(ctx, self._mem_ref)
        self._data = a.memory_data(ctx, self._mem_ref)
        self._base = self._raw("heap_base")
        self._result = self._raw("result")

    def _drop_store(self):
        if self._store:
            self._a.store_delete(self._store)
        self._store = None

    def _raw(self, fname, *args):
        """One wasmtime_func_call_unchecked; returns the i32 result.
        A trap or error raises CoreError and drops the instance."""
        a = self._a
        av = self._args
        for i, x in enumerate(args):
            av[i].i64 = 0
            av[i].i32 = x
        trap = self._trap
        trap.value = None
        err = a.call(self._ctx, self._funcs[fname], av, 2, a.ctypes.byref(trap))
        if err or trap.value:
            if trap.value:
                msg = _message(a, trap.value, a.trap_message, a.trap_delete)
                trap.value = None
            else:
                msg = ""
            if err:
                msg = _message(a, err, a.error_message, a.error_delete) or msg
            self._drop_store()  # replaced before the next call
            raise CoreError("wasm core trapped in %s: %s" % (fname, msg))
        return av[0].i32 & 0xFFFFFFFF

    def _run(self, fname, batch):
        if self._store is None:
            if self._engine is None:
                raise CoreError("the wasm engine is closed")
            try:
                self._new_instance()
            except OSError as e:
                raise CoreError(str(e)) from None
        a = self._a
        ct = a.ctypes
        if not isinstance(batch, bytes):
            batch = bytes(batch)
        n = len(batch)
        base = self._base
        if base + n + _PAGE > 0xFFFF0000:
            raise CoreError("batch too large for the wasm core: %d bytes" % n)
        ctx, mem = self._ctx, self._mem_ref
        if base + n > self._size:
            size = a.memory_data_size(ctx, mem)
            if base + n > size:
                prev = ct.c_uint64()
                err = a.memory_grow(ctx, mem, (base + n - size + _PAGE - 1) // _PAGE,
                                    ct.byref(prev))
                if err:
                    msg = _message(a, err, a.error_message, a.error_delete)
                    raise CoreError("cannot grow wasm memory: %s" % msg)
            self._size = a.memory_data_size(ctx, mem)
            self._data = a.memory_data(ctx, mem)
        ct.memmove(self._data + base, batch, n)
        status = self._raw(fname, base, n)
        # the core may have grown memory (which may move it): look again
        data = self._data = a.memory_data(ctx, mem)
        res = ct.string_at(data + self._result, 8)
        ptr = int.from_bytes(res[:4], "little")
        ln = int.from_bytes(res[4:], "little")
        out = ct.string_at(data + ptr, ln)
        if ptr + ln > self._size:
            self._size = a.memory_data_size(ctx, mem)
            if self._size > _RECYCLE_BYTES:
                self._drop_store()
        if status == ST_OK:
            return out
        msg = out.decode("ascii", "replace")
        if status == ST_MALFORMED:
            raise MalformedChange(msg)
        if status == ST_CORE:
            raise CoreError(msg)
        if status == ST_KIND:
            raise CoreError(msg)
        raise CoreError("wasm core returned status %d: %s" % (status, msg))

    def apply(self, batch) -> bytes:
        """Apply local ops (intents allowed); returns blobs, actor map, resolved ops."""
        return self._run("apply", batch)

    def merge(self, batch) -> bytes:
        """Merge ops from changes; returns max stamp and the new blobs."""
        return self._run("merge", batch)

    def close(self):
        if getattr(self, "_a", None) is not None:
            self._drop_store()
        self._engine = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
