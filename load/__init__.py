"""Writes: export files now, snapshots, Parquet datasets and manifests as the flows need them.

Every write is atomic (a temporary name in the same directory, then a rename) and reports the
sha256 of what it wrote.
"""
