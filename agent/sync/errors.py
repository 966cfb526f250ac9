"""Sync errors, under the tree of agent/errors.py.

RemoteError (bad input from a peer: the session closes, nothing applied)
  MalformedFrame          not a valid sync frame or message (agent/sync/frame.py)
    FrameTooLarge, BadCompression, MissingContentSize, WindowTooLarge,
    SizeMismatch, BadFrameVersion, ProtocolError
SyncError (the sync machinery: connections, identities, peers)
  IdentityError           no usable key or certificate for this device
  UnknownPeer             a peer's certificate matches no known device id
  PeerUnreachable         cannot connect, or the TLS handshake failed
  SyncTimeout             a handshake or an idle connection timed out
  PeerRefused             the peer closed the session and said why
"""
from ..errors import SyncError
from .frame import (MalformedFrame, FrameTooLarge, BadCompression, MissingContentSize,
                    WindowTooLarge, SizeMismatch, BadFrameVersion, ProtocolError)

__all__ = ["MalformedFrame", "FrameTooLarge", "BadCompression", "MissingContentSize",
           "WindowTooLarge", "SizeMismatch", "BadFrameVersion", "ProtocolError",
           "IdentityError", "UnknownPeer", "PeerUnreachable", "SyncTimeout", "PeerRefused"]


class IdentityError(SyncError):
    pass


class UnknownPeer(SyncError):
    pass


class PeerUnreachable(SyncError):
    pass


class SyncTimeout(SyncError):
    pass


class PeerRefused(SyncError):
    pass
