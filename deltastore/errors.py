"""The exception hierarchy of deltastore.

Every error deltastore raises on purpose derives from :class:`DeltastoreError`.
Where a builtin exception already means the same thing, the subclass inherits
it too, so ``except KeyError`` in user code keeps working
(``RefNotFoundError`` is a ``KeyError``).  Errors carry the facts they report
as attributes, so callers (and the CLI) never parse messages.

This module is a leaf: it imports nothing from deltastore.
"""

from __future__ import annotations

from typing import Any


class DeltastoreError(Exception):
    """Root of every error deltastore raises on purpose."""

    #: Exit status the CLI uses for this class of error.
    exit_code: int = 1


class StoreNotFoundError(DeltastoreError, FileNotFoundError):
    """No store exists at the given path (and ``create`` was not asked for)."""

    exit_code = 3

    def __init__(self, path: str) -> None:
        self.path = path
        super().__init__(
            f"no deltastore store at {path!r} (create one with `deltastore init {path}` "
            "or deltastore.open(path, create=True))"
        )

    def __str__(self) -> str:
        # FileNotFoundError's own __str__ would print "[Errno None] ...".
        return str(self.args[0])

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.path,))


class StoreExistsError(DeltastoreError, FileExistsError):
    """``init`` was asked for a path that already holds something else."""

    exit_code = 3

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"cannot create a store at {path!r}: {reason}")

    def __str__(self) -> str:
        return str(self.args[0])

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.path, self.reason))


class SchemaVersionError(DeltastoreError):
    """The store was written by a newer deltastore (catalog schema or format).

    Raised before anything is changed on disk.
    """

    exit_code = 4

    def __init__(self, what: str, found: str, supported: str) -> None:
        self.what = what
        self.found = found
        self.supported = supported
        super().__init__(
            f"this store's {what} is {found!r}, newer than this deltastore supports "
            f"({supported}); upgrade deltastore to open it. Nothing was changed."
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.what, self.found, self.supported))


class UnsupportedTypeError(DeltastoreError, TypeError):
    """A state holds a value deltastore cannot store exactly.

    ``key_path`` names where in the state the value sits, ``type_name`` what it is.
    """

    exit_code = 5

    def __init__(self, key_path: str, type_name: str, reason: str = "") -> None:
        self.key_path = key_path
        self.type_name = type_name
        self.reason = reason
        where = key_path if key_path else "<root>"
        detail = f": {reason}" if reason else ""
        super().__init__(f"cannot store {type_name} at key path {where!r}{detail}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.key_path, self.type_name, self.reason))


class _NameNotFoundError(DeltastoreError, KeyError):
    """A name (``ref``) that resolves to no ``noun``: the base of the not-found errors."""

    exit_code = 6
    noun = "checkpoint"

    def __init__(self, ref: str, reason: str = "") -> None:
        self.ref = ref
        self.reason = reason
        super().__init__(f"no {self.noun} {ref!r}" + (f": {reason}" if reason else ""))

    def __str__(self) -> str:
        # KeyError's __str__ would wrap the message in quotes.
        return str(self.args[0])

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.ref, self.reason))


def _ambiguity(candidates: list[str]) -> str:
    shown = ", ".join(c[:12] for c in candidates[:5])
    return f"prefix is ambiguous ({len(candidates)} matches: {shown})"


class RefNotFoundError(_NameNotFoundError):
    """A ref, checkpoint id, id prefix or ``ref~N`` expression resolves to nothing."""


class AmbiguousRefError(RefNotFoundError):
    """An id prefix matches more than one checkpoint."""

    def __init__(self, ref: str, candidates: list[str]) -> None:
        self.candidates = candidates
        super().__init__(ref, _ambiguity(candidates))

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.ref, self.candidates))


class EntryNotFoundError(DeltastoreError, KeyError):
    """A key path is not an array entry of the checkpoint."""

    exit_code = 6

    def __init__(self, checkpoint_id: str, key_path: str) -> None:
        self.checkpoint_id = checkpoint_id
        self.key_path = key_path
        super().__init__(f"checkpoint {checkpoint_id[:12]} has no array entry {key_path!r}")

    def __str__(self) -> str:
        return str(self.args[0])

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.checkpoint_id, self.key_path))


class EntryThinnedError(EntryNotFoundError):
    """The entry was removed from this checkpoint by ``thin``; its other entries remain."""

    def __init__(self, checkpoint_id: str, key_path: str) -> None:
        super().__init__(checkpoint_id, key_path)
        self.args = (
            f"entry {key_path!r} of checkpoint {checkpoint_id[:12]} was thinned away "
            "(deltastore thin); the checkpoint's other entries remain",
        )


class CorruptObjectError(DeltastoreError):
    """An object is missing, truncated or does not hash to its id.

    ``object_id`` is always set; ``checkpoint_id``, ``key_path`` and
    ``chunk_index`` are set when the object was read for a checkpoint's entry.
    """

    exit_code = 7

    def __init__(
        self,
        object_id: str,
        reason: str,
        *,
        checkpoint_id: str | None = None,
        key_path: str | None = None,
        chunk_index: int | None = None,
    ) -> None:
        self.object_id = object_id
        self.reason = reason
        self.checkpoint_id = checkpoint_id
        self.key_path = key_path
        self.chunk_index = chunk_index
        super().__init__(self._message())

    def _message(self) -> str:
        where = ""
        if self.checkpoint_id is not None:
            where += f" in checkpoint {self.checkpoint_id[:12]}"
        if self.key_path is not None:
            where += f", entry {self.key_path!r}"
        if self.chunk_index is not None:
            where += f", chunk {self.chunk_index}"
        return f"corrupt object {self.object_id[:16]}{where}: {self.reason}"

    def located(
        self, checkpoint_id: str, key_path: str | None, chunk_index: int | None
    ) -> CorruptObjectError:
        """Return a copy that also names the checkpoint, entry and chunk it was read for."""
        return CorruptObjectError(
            self.object_id,
            self.reason,
            checkpoint_id=checkpoint_id,
            key_path=key_path,
            chunk_index=chunk_index,
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _corrupt,
            (self.object_id, self.reason, self.checkpoint_id, self.key_path, self.chunk_index),
        )


class ConcurrentUpdateError(DeltastoreError):
    """A branch kept moving under a save; retries were exhausted."""

    exit_code = 8

    def __init__(self, branch: str, attempts: int) -> None:
        self.branch = branch
        self.attempts = attempts
        super().__init__(
            f"branch {branch!r} moved during the save {attempts} times in a row; giving up"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.branch, self.attempts))


class InvalidRefNameError(DeltastoreError, ValueError):
    """A branch or tag name that could be confused with an id or a ``~N`` expression."""

    exit_code = 2

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason
        super().__init__(f"invalid ref name {name!r}: {reason}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.name, self.reason))


class RefExistsError(DeltastoreError, ValueError):
    """A tag or branch of that name exists already (pass ``force=True`` to move it)."""

    exit_code = 2

    def __init__(self, name: str, kind: str, checkpoint_id: str) -> None:
        self.name = name
        self.kind = kind
        self.checkpoint_id = checkpoint_id
        super().__init__(
            f"{kind} {name!r} already exists (at {checkpoint_id[:12]}); use force to move it"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.name, self.kind, self.checkpoint_id))


class AsyncSaveError(DeltastoreError):
    """A save running in the background failed; raised at the next call that can report it.

    The background error is chained as ``__cause__`` and kept as ``cause``; the
    store recorded nothing for that save (failure leaves no trace).
    """

    exit_code = 10

    def __init__(self, step: int | None, cause: BaseException) -> None:
        self.step = step
        self.cause = cause
        super().__init__(f"the background save of step {step} failed: {cause}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.step, self.cause))


class StorageError(DeltastoreError, OSError):
    """The object store could not be written (full disk, permissions, I/O error).

    The save that met it records nothing; ``errno`` is the operating system's.
    """

    exit_code = 9

    def __init__(self, what: str, cause: OSError) -> None:
        self.what = what
        self.cause = cause
        super().__init__(cause.errno, f"could not {what}: {cause.strerror or cause}")

    def __str__(self) -> str:
        return str(self.args[1])

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.what, self.cause))


# -- export and import (deltastore.exchange) ---------------------------------------------------


class ExportError(DeltastoreError, ValueError):
    """A checkpoint cannot be exported to the file asked for; no file was written."""

    exit_code = 21

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"cannot export to {path!r}: {reason}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.path, self.reason))


class ExportDtypeError(ExportError):
    """An entry's dtype has no safetensors equivalent (the torch format holds every dtype)."""

    def __init__(self, path: str, key_path: str, dtype: str) -> None:
        self.key_path = key_path
        self.dtype = dtype
        super().__init__(
            path,
            f"entry {key_path!r} has dtype {dtype}, which safetensors cannot hold "
            "(export it in the torch format)",
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.path, self.key_path, self.dtype))


class ImportSourceError(DeltastoreError, ValueError):
    """A file or folder cannot be imported: an unsupported file, one that is not
    weights-only loadable, a malformed model folder.  Found before anything is
    saved whenever it shows without reading tensor data."""

    exit_code = 22

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"cannot import {path!r}: {reason}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.path, self.reason))


# -- verify, rebuild and cat (deltastore.verify, deltastore.rebuild, deltastore.plumbing) ------


class ObjectNotFoundError(_NameNotFoundError):
    """An object id or id prefix names no object the catalog lists (``deltastore cat``)."""

    noun = "object"


class AmbiguousObjectError(ObjectNotFoundError):
    """An object id prefix matches more than one object."""

    def __init__(self, ref: str, candidates: list[str]) -> None:
        self.candidates = candidates
        super().__init__(ref, _ambiguity(candidates))

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.ref, self.candidates))


class WrongObjectKindError(DeltastoreError, ValueError):
    """``cat`` was asked for one kind of object and named another (a chunk as a record).

    A slip of the verb, not damage: the object is whole.  ``kind`` is what the
    object is, ``expected`` what was asked for; the message names the ``cat``
    that reads it.
    """

    exit_code = 2

    def __init__(self, object_id: str, kind: str, expected: str) -> None:
        self.object_id = object_id
        self.kind = kind
        self.expected = expected
        short = object_id[:12]
        super().__init__(
            f"object {short} is a {kind}, not a {expected}: try `deltastore cat {kind} {short}`"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.object_id, self.kind, self.expected))


class CatalogIntactError(DeltastoreError):
    """``rebuild`` was asked for a catalog that opens and passes a quick verify.

    Rebuilding is for a lost or damaged catalog; ``force`` rebuilds anyway
    (the old catalog is kept aside, never deleted).
    """

    exit_code = 31

    def __init__(self, path: str) -> None:
        self.path = path
        super().__init__(
            f"the catalog of {path!r} opens and passes a quick verify; "
            "use --force (force=True) to rebuild it anyway"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.path,))


class CatalogDamagedError(DeltastoreError):
    """The catalog file is not a readable SQLite database; ``rebuild`` recreates it."""

    exit_code = 32

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(
            f"the catalog of {path!r} cannot be read ({reason}); "
            "`deltastore rebuild` recreates it from the objects"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.path, self.reason))


def _corrupt(
    object_id: str,
    reason: str,
    checkpoint_id: str | None,
    key_path: str | None,
    chunk_index: int | None,
) -> CorruptObjectError:
    """Unpickling helper: CorruptObjectError takes its location as keywords."""
    return CorruptObjectError(
        object_id, reason, checkpoint_id=checkpoint_id, key_path=key_path, chunk_index=chunk_index
    )
