"""`agent.connect(data_dir)`: the Python API whether or not `mycelium serve`
runs on the data directory.

    import agent
    with agent.connect("/var/lib/mycelium") as db:
        db.put("sensor:1", {"temp": 21.5, "readings": agent.Inc(1)})
        handle = db.watch("sensor:", lambda key, fields: print(key, fields))

With no serve it opens the directory itself (a Node, the writer). While a
serve holds it, calls go to serve over its control socket (RemoteNode), so a
script and the daemon share one device; `watch` then follows the op log, so
it sees every change that lands, whoever wrote it.
"""
from __future__ import annotations      # annotations are not evaluated: no cost at start-up

import os
import threading

TYPE_CHECKING = False
if TYPE_CHECKING:       # for type checkers only
    from typing import Callable
    from .control import RemoteNode
    from .node import Node

__all__ = ["connect", "LogWatch"]


def connect(data_dir: str | None = None, durable: bool = False,
            readonly: bool = False) -> Node | RemoteNode:
    """A Node, or a RemoteNode when `mycelium serve` holds data_dir."""
    from .control import RemoteNode, socket_path
    from .node import Node, default_data_dir, read_identity
    from .store.lock import writer_holds
    data_dir = data_dir or os.environ.get("MYCELIUM_DATA_DIR") or default_data_dir()
    read_identity(data_dir)     # UsageError if it is not a data directory
    path = socket_path(data_dir)
    if os.path.exists(path) and writer_holds(os.path.join(data_dir, "store")):
        try:
            node = RemoteNode(path)
        except OSError:
            node = None
        if node is not None:
            node.data_dir = data_dir
            return node
    return Node(data_dir, durable=durable, readonly=readonly)


class LogWatch:
    """Calls callback(key, fields or None) from a thread for each change under
    prefix that lands in data_dir's op log; fields are read afresh through
    their own connection to serve. cancel() stops it."""

    def __init__(self, data_dir: str, prefix: str, callback: Callable[[str, dict | None], None],
                 poll: float = 0.1):
        from .control import RemoteNode, socket_path
        from .core.opread import describe
        from .oplog.follow import Follower
        self._stop = threading.Event()
        changes = Follower(data_dir).changes(self._stop.is_set, poll)   # positioned now

        def run():
            reader = RemoteNode(socket_path(data_dir))
            try:
                for c in changes:
                    for key in dict.fromkeys(k for k, _ in describe(c) if k.startswith(prefix)):
                        if self._stop.is_set():
                            return
                        callback(key, reader.get(key))
            finally:
                reader.close()
        self._thread = threading.Thread(target=run, name="mycelium-watch", daemon=True)
        self._thread.start()

    def cancel(self) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(5)
