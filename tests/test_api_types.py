"""The public API is annotated (issue 14): every parameter and return of
Node, RemoteNode (agent.connect beside serve), LogWatch, the value types,
connect and default_data_dir, and each annotation names a real type. The
annotations cost nothing at start-up: they are not evaluated, and typing is
imported only by type checkers (py.typed marks the package as typed)."""
import inspect
import os
import subprocess
import sys
import typing

import agent
from agent.client import LogWatch
from agent.control import RemoteNode

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _public():
    for cls in (agent.Node, RemoteNode, LogWatch, agent.Inc, agent.MV, agent.Add, agent.Remove):
        for name, member in vars(cls).items():
            if name.startswith("_") and name not in ("__init__", "__enter__", "__exit__"):
                continue
            fn = member.fget if isinstance(member, property) else \
                getattr(member, "__func__", member)
            if inspect.isfunction(fn):
                yield "%s.%s" % (cls.__name__, name), fn
    for name in ("connect", "default_data_dir"):
        yield name, getattr(agent, name)


def _names():
    """What the TYPE_CHECKING blocks import, for resolving the annotations."""
    from agent.core import ReferenceEngine
    from agent.core.wasm import WasmEngine
    from agent.history.frontier import Frontier
    from agent.history.logindex import LogIndex
    from agent.store.store import Watch
    ns = {n: getattr(typing, n) for n in ("Any", "Callable", "Iterable", "Iterator")}
    ns.update(ReferenceEngine=ReferenceEngine, WasmEngine=WasmEngine, Frontier=Frontier,
              LogIndex=LogIndex, Watch=Watch, Node=agent.Node, RemoteNode=RemoteNode,
              LogWatch=LogWatch, Engine=typing.Union[WasmEngine, ReferenceEngine],
              Callback=typing.Callable[[str, typing.Optional[dict]], None])
    return ns


def test_every_public_parameter_and_return_is_annotated():
    missing = []
    for name, fn in _public():
        sig = inspect.signature(fn)
        missing += ["%s(%s)" % (name, p.name) for p in sig.parameters.values()
                    if p.name not in ("self", "cls") and p.annotation is inspect.Parameter.empty]
        if sig.return_annotation is inspect.Signature.empty and not name.endswith("__init__"):
            missing.append("%s -> ?" % name)
    assert not missing, missing
    assert os.path.isfile(os.path.join(ROOT, "agent", "py.typed"))


def test_every_annotation_names_a_real_type():
    ns = _names()
    for name, fn in _public():
        hints = typing.get_type_hints(fn, globalns=dict(vars(sys.modules[fn.__module__])),
                                      localns=ns)
        assert hints or name.endswith("__init__"), name


def test_reading_imports_no_typing():
    """The annotations do not put `typing` on the read path."""
    code = "import sys, agent.cli; agent.cli.build_parser(); print('typing' in sys.modules)"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=ROOT), timeout=60)
    assert p.stdout.strip() == "False", p.stderr
