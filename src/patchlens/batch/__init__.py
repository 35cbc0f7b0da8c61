"""Batch mode: explain a whole dataset into a resumable Parquet store (``patchlens batch``).

``run_batch`` does the work (local or Ray backend), ``open_store`` reads the
result back; the store layout is described in :mod:`patchlens.batch.store`.
"""

from .results import BatchStore, StoreWarning, open_store, verify_store
from .runner import Summary, run_batch
from .sources import Item, SourceError, read_source
from .store import StoreError

__all__ = ["run_batch", "open_store", "BatchStore", "Summary", "Item", "read_source", "SourceError", "StoreError", "StoreWarning", "verify_store"]
