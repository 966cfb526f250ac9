"""High-water marks for this device's sequence numbers and clock, persisted
ahead of use (the file `reserve` in the data directory, docs/FORMAT.md).

Before a seq or a stamp beyond the reserved one is issued, the mark is moved
ahead (by SEQ_STEP seqs, CLOCK_STEP_MS of clock) and written durably. After a
crash, whatever the log lost, the device's seqs start above the seq mark: no
(actor, seq) is ever issued twice. The clock starts at the last stamp the log
holds (agent/recovery.py), and at the clock mark only if the log lost entries.
A clean close writes the exact values, so a clean restart skips nothing.
"""
import os

from . import fs
from .errors import StoreCorrupt

__all__ = ["Reserve", "SEQ_STEP", "CLOCK_STEP_MS"]

SEQ_STEP = 1000
CLOCK_STEP_MS = 60_000
FILE = "reserve"


class Reserve:
    __slots__ = ("path", "actor", "seq", "clock", "writable")

    def __init__(self, data_dir: str, actor: int, writable: bool = True):
        self.path = os.path.join(data_dir, FILE)
        self.actor = actor
        self.writable = writable
        d = fs.read_json(self.path, "this device's reserved sequence numbers and clock",
                         "The next write (or `mycelium repair`) rebuilds it from the op log "
                         "with a wide margin", default=None, legacy_ok=False)
        if d is None:
            self.seq = self.clock = 0
        elif int(d.get("actor", "0"), 16) != actor:
            raise StoreCorrupt("%s belongs to actor %s, not this device's %016x; restore the "
                               "data directory's own copy" % (self.path, d.get("actor"), actor))
        else:
            self.seq, self.clock = int(d["seq"]), int(d["clock"])

    def _write(self, seq, clock):
        if not self.writable:
            return
        fs.write_json(self.path, {"version": 1, "actor": "%016x" % self.actor,
                                  "seq": seq, "clock": clock})
        self.seq, self.clock = seq, clock

    def need_seq(self, seq: int) -> None:
        """Call before issuing seq (raises DiskFull if the mark cannot move)."""
        if seq > self.seq:
            self._write(seq + SEQ_STEP, self.clock)

    def need_clock(self, stamp: int) -> None:
        """Call before issuing an HLC stamp."""
        if stamp > self.clock:
            self._write(self.seq, stamp + (CLOCK_STEP_MS << 16))

    def settle(self, seq: int, clock: int) -> None:
        """A clean close: the marks become the values in use."""
        if (seq, clock) != (self.seq, self.clock):
            self._write(seq, clock)
