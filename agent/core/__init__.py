"""The CRDT core: one interface, two engines with byte-identical results.

    engine = load_engine()      # wasm by default, reference as fallback
    engine.apply(batch) -> bytes
    engine.merge(batch) -> bytes
    engine.name                 # "wasm" or "reference"

MYCELIUM_CORE=reference forces the pure-Python engine. wasmtime is imported
only here, lazily, so commands that never merge never pay for it.
"""
import os

from . import reference

__all__ = ["load_engine", "available_engines", "engine_name", "ReferenceEngine"]


class ReferenceEngine:
    name = "reference"
    apply = staticmethod(reference.apply)
    merge = staticmethod(reference.merge)

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def load_engine(kind=None):
    """kind: None (env or default), "wasm" or "reference"."""
    kind = kind or os.environ.get("MYCELIUM_CORE", "wasm")
    if kind == "reference":
        return ReferenceEngine()
    try:
        from .wasm import WasmEngine
    except ImportError:
        if kind == "wasm" and os.environ.get("MYCELIUM_CORE") == "wasm":
            raise
        return ReferenceEngine()
    try:
        return WasmEngine()
    except OSError:
        return ReferenceEngine()


def engine_name() -> str:
    """Which engine load_engine() would pick, without importing wasmtime."""
    import importlib.util
    kind = os.environ.get("MYCELIUM_CORE", "wasm")
    if kind == "reference":
        return "reference"
    here = os.path.dirname(__file__)
    if not os.path.exists(os.path.join(here, "crdt_core.wasm")):
        return "reference"
    try:
        if importlib.util.find_spec("wasmtime") is None:
            return "reference"
    except (ImportError, ValueError):
        return "reference"
    return "wasm"


def available_engines():
    """Every engine that loads on this machine, reference first (for
    differential checks: their results must be byte-identical)."""
    out = [ReferenceEngine()]
    try:
        from .wasm import WasmEngine
        out.append(WasmEngine())
    except (ImportError, OSError):
        pass
    return out
