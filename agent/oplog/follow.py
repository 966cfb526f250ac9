"""Follow a data directory's op log from another process: the changes
appended after `start`, as they land, whoever wrote them (this process,
`mycelium serve`, a sync). Read-only and lock-free; `mycelium watch` and the
Python API's watch beside a running serve use it.
"""
import os
import time

from ..change import parse_change
from ..errors import MalformedChange
from .log import OpLog

__all__ = ["follow", "Follower"]


class Follower:
    """A position at the end of the log as it is now (taken at once, so that
    nothing appended after the constructor returns is missed)."""

    def __init__(self, data_dir: str):
        self.log = OpLog(os.path.join(data_dir, "log"), readonly=True)
        self.start = (0, 0)
        for _, _, self.start in self.log.entries():
            pass

    def changes(self, stop=None, poll: float = 0.1, deadline: float = None):
        """Yield each parsed change appended from the position on, until
        stop() is true or time.monotonic() passes deadline. A damaged entry
        is skipped (repair reports it), never raised."""
        log = self.log
        while True:
            log.segments = log._list()
            for _, payload, self.start in log.entries(self.start):
                try:
                    yield parse_change(payload)
                except MalformedChange:
                    continue
            if (stop is not None and stop()) or (deadline and time.monotonic() > deadline):
                return
            time.sleep(poll)


def follow(data_dir: str, stop=None, poll: float = 0.1, deadline: float = None):
    """Follower(data_dir).changes(...): the changes appended from now on."""
    return Follower(data_dir).changes(stop, poll, deadline)
