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
  ListenError             `serve` cannot listen where it was told (exit 12)
"""
from ..errors import SyncError
from .frame import (MalformedFrame, FrameTooLarge, BadCompression, MissingContentSize,
                    WindowTooLarge, SizeMismatch, BadFrameVersion, ProtocolError)

__all__ = ["MalformedFrame", "FrameTooLarge", "BadCompression", "MissingContentSize",
           "WindowTooLarge", "SizeMismatch", "BadFrameVersion", "ProtocolError",
           "IdentityError", "UnknownPeer", "PeerUnreachable", "SyncTimeout", "PeerRefused",
           "ListenError"]


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


class ListenError(SyncError):
    """The listening address is in use, not this machine's, or forbidden."""
    exit_code = 12
