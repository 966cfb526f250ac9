"""The error tree. Every error says what the user can do about it.

AgentError
  UsageError            bad input from the user (CLI, API arguments)
  StoreError            local storage faults (exit 3)
    StoreCorrupt        a file failed its checksum and could not be repaired (exit 10)
    StoreLocked         another process holds the data directory (exit 4)
    RecordTooLarge      a record outgrew the largest size class
    DiskFull            ENOSPC / EDQUOT: nothing was written; free space and retry (exit 8)
    DiskFault           EIO and other device errors: the storage medium is failing (exit 3)
  LogError              op-log faults (local)
  CoreError             the CRDT engine failed (trap, exhausted fuel, bad blob)
  RemoteError           bad input from a peer or a file from elsewhere
    MalformedChange     a change or op that does not follow docs/FORMAT.md
    ClockSkewError      a stamp too far ahead of the local wall clock
    ChangeGap           a change arrived before an earlier one of its actor
  SyncError             peer sync faults (later issue)
"""

__all__ = [
    "AgentError", "UsageError", "StoreError", "StoreCorrupt", "StoreLocked",
    "RecordTooLarge", "DiskFull", "DiskFault", "LogError", "CoreError", "RemoteError", "MalformedChange",
    "ClockSkewError", "ChangeGap", "SyncError", "InvalidArgument",
]


class AgentError(Exception):
    """Base of every error Mycelium raises on purpose."""
    exit_code = 9


class UsageError(AgentError):
    exit_code = 2


class InvalidArgument(UsageError, TypeError):
    """An argument of the wrong type given to the Python API (a TypeError
    too, so that code catching either sees it)."""


class StoreError(AgentError):
    exit_code = 3


class StoreCorrupt(StoreError):
    exit_code = 10


class StoreLocked(StoreError):
    exit_code = 4


class RecordTooLarge(StoreError):
    pass


class DiskFull(StoreError):
    """No space left (ENOSPC, EDQUOT). The operation left nothing behind."""
    exit_code = 8


class DiskFault(StoreError):
    """The device reported an I/O error (EIO) or another fault."""


class LogError(AgentError):
    exit_code = 3


class CoreError(AgentError):
    exit_code = 5


class RemoteError(AgentError):
    exit_code = 6


class MalformedChange(RemoteError):
    pass


class ClockSkewError(RemoteError):
    pass


class ChangeGap(RemoteError):
    pass


class SyncError(AgentError):
    exit_code = 7
