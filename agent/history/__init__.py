"""Bounded history (docs/FORMAT.md, "Snapshot"; docs/OPERATIONS.md, "Compaction").

    join.py      the state join: a record blob from another store merged into ours
    snapshot.py  a snapshot file: every record with its CRDT metadata, in zstd frames
    frontier.py  what each peer has acknowledged; the causally stable frontier
    logindex.py  per sealed log segment, the runs of seqs of each actor it holds
    compact.py   dropping log segments the snapshot covers and every peer holds
    catchup.py   a peer's snapshot taken in; this device's own as a rebuild's base
"""
