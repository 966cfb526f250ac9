"""Where a packaged binary keeps the wasm core's precompiled module.

packaging/build.sh precompiles crdt_core.wasm for the wasmtime it ships and
puts the `.cwasm` beside the `.wasm`, under the same file name the user cache
uses (crdt_core-wasmtime<version>-<sha256>.cwasm). wasm.py tries the user
cache first, then this copy, then compiles:

    module = (_read_cache(a, engine, path)
              or _read_cache(a, engine, bundled_cwasm(path)))

A copy made for another CPU (wasmtime checks the target's features) or another
wasmtime simply fails to deserialize and the core is compiled as before.
"""
import os

__all__ = ["bundled_cwasm"]

_HERE = os.path.dirname(os.path.abspath(__file__))


def bundled_cwasm(cache_path: str) -> str:
    """The path a bundled copy of the cache file `cache_path` would have."""
    return os.path.join(_HERE, os.path.basename(cache_path))
