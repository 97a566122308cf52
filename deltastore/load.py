"""Restoring a checkpoint: read its manifest, decode chunks straight into new arrays.

Every object read is verified (DESIGN.md invariant 3): the manifest must hash
to the checkpoint id, every decoded chunk to its chunk id, and a mismatch
raises CorruptObjectError naming the checkpoint, the entry and the chunk.
Chunks decode on the thread pool, each into its slice of the destination
array, so a restore allocates each array once and copies nothing else large.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import Executor
from typing import Any

from deltastore import arrays, codecs, manifest, tree
from deltastore.chunking import chunk_bounds, chunk_count
from deltastore.errors import (
    CorruptObjectError,
    EntryNotFoundError,
    EntryThinnedError,
    UnsupportedTypeError,
)
from deltastore.info import CheckpointInfo, EntryInfo
from deltastore.manifest import Manifest, ManifestEntry
from deltastore.objects import ObjectStore
from deltastore.progress import Progress

#: Longest delta chain a reader follows.  Writers make deltas on full objects only
#: (delta.MAX_DEPTH); those before session 5 chained them two deep, the first writers of
#: format v1 eight; this bound only stops a malicious or corrupt chain from recursing
#: without end.
MAX_CHAIN = 64


class _Scratch(threading.local):
    """Per-thread buffers: two for the lower levels of a delta chain, then one per object
    read (the chain's objects are all in memory at once)."""

    def __init__(self) -> None:
        self.buffers: list[bytearray] = []

    def view(self, slot: int, size: int) -> memoryview:
        while len(self.buffers) <= slot:
            self.buffers.append(bytearray())
        if len(self.buffers[slot]) < size:
            self.buffers[slot] = bytearray(size)
        return memoryview(self.buffers[slot])[:size]

    def reader(self, level: int) -> Callable[[int], memoryview]:
        """A buffer provider for the object read at ``level`` of a chain."""
        return lambda size: self.view(2 + level, size)


_scratch = _Scratch()


def read_manifest(objects: ObjectStore, checkpoint_id: str) -> Manifest:
    """The verified, parsed manifest of a checkpoint."""
    try:
        raw = codecs.decode(objects.get(checkpoint_id), checkpoint_id)
    except CorruptObjectError as exc:
        raise exc.located(checkpoint_id, None, None) from None
    return manifest.parse(raw, checkpoint_id)


@dataclasses.dataclass(frozen=True)
class ListedCheckpoint:
    """A checkpoint as the catalog lists it now: what load, export and diff read.

    ``manifest`` leaves out the entries ``thin`` removed (:func:`without_thinned`)
    and ``thinned`` names them, in manifest order; ``entries`` are the catalog's
    rows, read only for a reader that asks (diff: load and export need just the
    key paths, and the rows cost ~20 us each).  Thin changes only the catalog: a
    manifest's hash is its checkpoint id.
    """

    info: CheckpointInfo
    entries: list[EntryInfo] | None
    manifest: Manifest
    thinned: tuple[str, ...]

    @classmethod
    def of(
        cls,
        info: CheckpointInfo,
        present: set[str],
        saved: Manifest,
        entries: list[EntryInfo] | None = None,
    ) -> ListedCheckpoint:
        """The catalog's row and listed key paths (or entry rows) of a checkpoint, with the
        manifest it was saved with."""
        thinned = tuple(e.key_path for e in saved.entries if e.key_path not in present)
        return cls(info, entries, without_thinned(saved, present), thinned)

    @property
    def id(self) -> str:
        return self.info.id


class CheckpointReader:
    """Restores whole checkpoints or single entries from verified objects."""

    def __init__(self, objects: ObjectStore, pool: Executor) -> None:
        self.objects = objects
        self.pool = pool

    def decode_chunk_into(self, object_id: str, out: memoryview) -> None:
        """Decode a chunk into ``out``, replaying its delta chain from the full object up."""
        chain, _ = self._read_chain(object_id)
        self._decode_chain(chain, out)

    def _read_chain(self, object_id: str) -> tuple[list[tuple[str, memoryview]], codecs.Header]:
        """A chunk's delta chain (top object first, full object last) and the top's header.

        Each object is read once, into this thread's scratch buffers: the
        chain's bytes are only valid until this thread reads another chain.
        """
        data = self.objects.get_into(object_id, _scratch.reader(0))
        top = header = codecs.read_header(data, object_id)
        chain = [(object_id, data)]
        while header.base_id is not None:
            if len(chain) > MAX_CHAIN:
                raise CorruptObjectError(object_id, f"delta chain deeper than {MAX_CHAIN}")
            base_id = header.base_id.hex()
            data = self.objects.get_into(base_id, _scratch.reader(len(chain)))
            header = codecs.read_header(data, base_id)
            chain.append((base_id, data))
        return chain, top

    def _decode_chain(self, chain: list[tuple[str, memoryview]], out: memoryview) -> None:
        """Decode a chain :meth:`_read_chain` read into ``out``.

        Only the chunk asked for is hashed: a wrong base anywhere below it
        would make its bytes wrong, and its own id check catches that.
        """
        object_id = chain[0][0]
        if len(chain) == 1:
            codecs.decode_into(chain[0][1], object_id, out)
            return
        try:
            self._replay(chain, out, verify_bases=False)
        except CorruptObjectError:
            # Something below is damaged, or this object is: replay verifying every
            # level so the error names the object that is actually corrupt.
            self._replay(chain, out, verify_bases=True)
            raise

    @staticmethod
    def _replay(
        chain: list[tuple[str, memoryview]], out: memoryview, *, verify_bases: bool
    ) -> None:
        """Decode ``chain`` (top object first, full object last) bottom-up into ``out``.

        The levels below the top alternate between this thread's two scratch
        buffers: fresh ones per chunk would page-fault (~1 ms per MiB here).
        """
        base: memoryview | None = None
        for level, (chain_id, data) in enumerate(reversed(chain[1:])):
            target = _scratch.view(level % 2, len(out))
            codecs.decode_into(data, chain_id, target, base=base, verify=verify_bases)
            base = target
        codecs.decode_into(chain[0][1], chain[0][0], out, base=base)

    def read_chunk(self, object_id: str) -> bytes:
        """A chunk's verified raw bytes (the writer's source of delta bases after a restart)."""
        chain, header = self._read_chain(object_id)
        out = bytearray(header.raw_length)
        self._decode_chain(chain, memoryview(out))
        return bytes(out)

    def _decode_chunk(
        self, checkpoint_id: str, entry: ManifestEntry, index: int, out: memoryview
    ) -> int:
        try:
            self.decode_chunk_into(entry.chunks[index], out)
        except CorruptObjectError as exc:
            raise exc.located(checkpoint_id, entry.key_path, index) from None
        return len(out)

    def restore_entries(
        self,
        checkpoint_id: str,
        m: Manifest,
        entries: Sequence[ManifestEntry],
        progress: Progress | None = None,
    ) -> list[Any]:
        """Allocate and fill one array per entry, decoding all chunks in parallel."""
        results = []
        futures = []
        for entry in entries:
            _check_entry(checkpoint_id, entry, m.chunk_size)
            try:
                array, view = arrays.allocate(entry.kind, entry.dtype, entry.shape)
            except (UnsupportedTypeError, TypeError, ValueError) as exc:
                raise CorruptObjectError(
                    checkpoint_id,
                    f"entry {entry.key_path!r} cannot be allocated: {exc}",
                    checkpoint_id=checkpoint_id,
                    key_path=entry.key_path,
                ) from None
            if len(view) != entry.nbytes:
                raise CorruptObjectError(
                    checkpoint_id,
                    f"entry {entry.key_path!r} records {entry.nbytes} bytes, "
                    f"its dtype and shape give {len(view)}",
                    checkpoint_id=checkpoint_id,
                )
            results.append(array)
            for index, (start, stop) in enumerate(chunk_bounds(entry.nbytes, m.chunk_size)):
                futures.append(
                    self.pool.submit(
                        self._decode_chunk, checkpoint_id, entry, index, view[start:stop]
                    )
                )
        try:
            for future in futures:
                done = future.result()
                if progress:
                    progress(done)
        finally:
            for future in futures:
                future.cancel()
        return [
            arrays.finish(e.kind, e.dtype, a, e.requires_grad)
            for e, a in zip(entries, results, strict=True)
        ]

    def load(self, listed: ListedCheckpoint, progress: Progress | None = None) -> Any:
        """The checkpoint's state, without the entries ``thin`` removed."""
        m = listed.manifest
        leaves = self.restore_entries(listed.id, m, m.entries, progress)
        return tree.unflatten(m.structure, leaves)

    def load_entry(self, listed: ListedCheckpoint, key_path: str) -> Any:
        if key_path in listed.thinned:
            raise EntryThinnedError(listed.id, key_path)
        for entry in listed.manifest.entries:
            if entry.key_path == key_path:
                return self.restore_entries(listed.id, listed.manifest, [entry])[0]
        raise EntryNotFoundError(listed.id, key_path)


def without_thinned(m: Manifest, present: Collection[str]) -> Manifest:
    """The manifest as the catalog has it now: entries ``thin`` removed are left out.

    A thinned leaf disappears from its dict; inside a list or tuple it becomes
    None, so the other items keep their positions.  Containers and non-array
    values stay as saved.  Manifests are immutable (their hash is the
    checkpoint id), so thinning is applied here, on every read.
    """
    kept = [i for i, e in enumerate(m.entries) if e.key_path in present]
    if len(kept) == len(m.entries):
        return m
    renumber = {old: new for new, old in enumerate(kept)}
    return dataclasses.replace(
        m,
        structure=_prune(m.structure, renumber),
        entries=tuple(m.entries[i] for i in kept),
    )


def _thinned(node: tree.JSON, renumber: dict[int, int]) -> bool:
    return isinstance(node, dict) and set(node) == {"array"} and node["array"] not in renumber


def _prune(node: tree.JSON, renumber: dict[int, int]) -> tree.JSON:
    if isinstance(node, list):
        return [None if _thinned(v, renumber) else _prune(v, renumber) for v in node]
    if not isinstance(node, dict) or len(node) != 1:
        return node
    ((tag, body),) = node.items()
    if tag == "array":  # reached here only as the root: a thinned root array becomes None
        return {"array": renumber[body]} if body in renumber else None
    if tag == "tuple":
        return {"tuple": _prune(body, renumber)}
    if tag in ("dict", "odict"):
        return {tag: [[k, _prune(v, renumber)] for k, v in body if not _thinned(v, renumber)]}
    return node


def _check_entry(checkpoint_id: str, entry: ManifestEntry, chunk_size: int) -> None:
    expected = chunk_count(entry.nbytes, chunk_size)
    if len(entry.chunks) != expected or manifest.entry_digest(entry.chunks) != entry.digest:
        raise CorruptObjectError(
            checkpoint_id,
            f"entry {entry.key_path!r} has an inconsistent chunk list",
            checkpoint_id=checkpoint_id,
            key_path=entry.key_path,
        )
    if entry.kind not in arrays.KINDS:
        raise CorruptObjectError(
            checkpoint_id,
            f"entry {entry.key_path!r} has unknown kind {entry.kind!r}",
            checkpoint_id=checkpoint_id,
            key_path=entry.key_path,
        )
