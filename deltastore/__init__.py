"""deltastore: git for machine-learning checkpoints.

::

    import deltastore
    store = deltastore.open("runs/exp1", create=True)
    cid = store.save({"model": model.state_dict(), "step": 100}, "step 100", step=100)
    state = store.load("main")
"""

from deltastore.errors import (
    AmbiguousObjectError,
    AmbiguousRefError,
    AsyncSaveError,
    CatalogDamagedError,
    CatalogIntactError,
    ConcurrentUpdateError,
    CorruptObjectError,
    DeltastoreError,
    EntryNotFoundError,
    EntryThinnedError,
    ExportDtypeError,
    ExportError,
    ImportSourceError,
    InvalidRefNameError,
    ObjectNotFoundError,
    RefExistsError,
    RefNotFoundError,
    SchemaVersionError,
    StorageError,
    StoreExistsError,
    StoreNotFoundError,
    UnsupportedTypeError,
    WrongObjectKindError,
)
from deltastore.forget import ForgetReport
from deltastore.gc import GcReport
from deltastore.info import CheckpointInfo, EntryInfo, StoreStats
from deltastore.rebuild import RebuildReport, rebuild
from deltastore.store import Store, init, open
from deltastore.thin import ThinReport
from deltastore.training import CheckpointManager, KeepPolicy
from deltastore.verify import VerifyReport

__version__ = "0.1.0"

__all__ = [
    "AmbiguousObjectError",
    "AmbiguousRefError",
    "AsyncSaveError",
    "CatalogDamagedError",
    "CatalogIntactError",
    "CheckpointInfo",
    "CheckpointManager",
    "ConcurrentUpdateError",
    "CorruptObjectError",
    "DeltastoreError",
    "EntryInfo",
    "EntryNotFoundError",
    "EntryThinnedError",
    "ExportDtypeError",
    "ExportError",
    "ForgetReport",
    "GcReport",
    "ImportSourceError",
    "InvalidRefNameError",
    "KeepPolicy",
    "ObjectNotFoundError",
    "RebuildReport",
    "RefExistsError",
    "RefNotFoundError",
    "SchemaVersionError",
    "StorageError",
    "Store",
    "StoreExistsError",
    "StoreNotFoundError",
    "StoreStats",
    "ThinReport",
    "UnsupportedTypeError",
    "VerifyReport",
    "WrongObjectKindError",
    "init",
    "open",
    "rebuild",
]
