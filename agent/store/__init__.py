"""The record store on pooled mmap arenas."""
from .store import Store, BlobCorrupt, Watch

__all__ = ["Store", "BlobCorrupt", "Watch"]
