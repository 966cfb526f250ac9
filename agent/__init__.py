"""Mycelium: a local-first sync agent for low-end devices.

The public API; everything else is an implementation detail.
"""
__version__ = "0.5.0"  # before the imports: agent.pending records it

from .errors import (AgentError, UsageError, StoreError, StoreCorrupt, StoreLocked,
                     RecordTooLarge, LogError, CoreError, RemoteError, MalformedChange,
                     ClockSkewError, ChangeGap, SyncError, InvalidArgument)
from .node import Node, default_data_dir
from .client import connect
from .values import Inc, MV, Add, Remove

__all__ = ["Node", "connect", "default_data_dir", "Inc", "MV", "Add", "Remove",
           "AgentError", "UsageError", "StoreError", "StoreCorrupt", "StoreLocked",
           "RecordTooLarge", "LogError", "CoreError", "RemoteError", "MalformedChange",
           "ClockSkewError", "ChangeGap", "SyncError", "InvalidArgument"]
