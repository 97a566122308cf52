"""Checking a store: the catalog against the objects (quick), and every object's bytes (full).

Quick: every object the catalog lists exists with the size it records, and
every object the catalog mentions (a chunk in a chunk list, a checkpoint's
manifest, a delta base) is one it lists, with the kind and chain depth it
should have.  Objects on disk that the catalog does not list are counted,
not blamed: a save in flight or one that died leaves them, and gc frees them.

Full: also decodes every listed object once and re-hashes it, and checks
each manifest against the catalog's rows for its checkpoint.  A delta needs
its base's bytes, so objects are decoded as trees: one task per full object,
which then decodes the deltas built on it while it still holds its bytes.
Every object is decoded exactly once and a task holds at most one buffer per
chain level (writers make deltas one level deep, older ones two), so memory stays bounded
whatever the store's size.  Tasks run on the store's thread pool.

Each problem names the object and, where the catalog knows it, the
checkpoint, key path and chunk that use it.  A quick verify counts the
objects it checks on a bar; a full one, the bytes it reads.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine

from deltastore import codecs, journal, manifest
from deltastore.catalog import audit, queries
from deltastore.catalog.audit import CatalogObject
from deltastore.catalog.engine import read_transaction
from deltastore.chunking import chunk_count
from deltastore.codecs import Kind
from deltastore.errors import CorruptObjectError
from deltastore.info import datetime_from_us
from deltastore.load import MAX_CHAIN
from deltastore.manifest import Manifest
from deltastore.objects import ObjectStore
from deltastore.progress import Progress, ProgressFactory, map_batched
from deltastore.progress import maybe as progress_bar


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a store: which object, why, and where it is used."""

    object_id: str
    reason: str
    checkpoint_id: str | None = None
    key_path: str | None = None
    chunk_index: int | None = None

    @classmethod
    def from_error(cls, exc: CorruptObjectError) -> Problem:
        return cls(exc.object_id, exc.reason, exc.checkpoint_id, exc.key_path, exc.chunk_index)

    def as_error(self) -> CorruptObjectError:
        return CorruptObjectError(
            self.object_id,
            self.reason,
            checkpoint_id=self.checkpoint_id,
            key_path=self.key_path,
            chunk_index=self.chunk_index,
        )

    def __str__(self) -> str:
        return str(self.as_error())

    def to_json(self) -> dict[str, Any]:
        return {
            "object_id": self.object_id,
            "reason": self.reason,
            "checkpoint_id": self.checkpoint_id,
            "key_path": self.key_path,
            "chunk_index": self.chunk_index,
            "message": str(self),
        }


@dataclass(frozen=True)
class VerifyReport:
    """What verify checked and what it found; ``ok`` when it found no problem."""

    full: bool
    checkpoints: int
    objects: int  # objects the catalog lists
    stored_bytes: int  # their recorded sizes, summed
    decoded_bytes: int  # raw bytes decoded and re-hashed (full only)
    unlisted_objects: int  # objects on disk the catalog does not list (gc frees them)
    unlisted_bytes: int
    problems: tuple[Problem, ...]

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "full": self.full,
            "checkpoints": self.checkpoints,
            "objects": self.objects,
            "stored_bytes": self.stored_bytes,
            "decoded_bytes": self.decoded_bytes,
            "unlisted_objects": self.unlisted_objects,
            "unlisted_bytes": self.unlisted_bytes,
            "problems": [p.to_json() for p in self.problems],
        }


@dataclass
class _Decoded:
    """What one decode task found."""

    problems: list[Problem] = field(default_factory=list)
    visited: list[str] = field(default_factory=list)
    read_bytes: int = 0
    decoded_bytes: int = 0
    manifests: list[tuple[str, Manifest]] = field(default_factory=list)
    records: list[journal.Record] = field(default_factory=list)


@dataclass
class _Journal:
    """What the catalog's journal records say a manifest may legitimately differ in."""

    thinned: dict[str, set[str]] = field(default_factory=dict)  # checkpoint -> key paths
    forgotten: dict[str, str | None] = field(default_factory=dict)  # checkpoint -> its parent
    known: set[str] = field(default_factory=set)  # ids of the records read (or found corrupt)

    def catch_up(self, conn: Connection, objects: ObjectStore) -> bool:
        """Read the records the catalog lists now and we have not read; True if any.

        Verify takes no lock: a forget or thin that committed after the catalog
        was read re-parented checkpoints or removed entries, which its record
        explains.  A record that does not read is left for the next verify.
        """
        new = [i for i in audit.record_ids(conn) if i not in self.known]
        self.known.update(new)
        for record_id in new:
            try:
                self.add(journal.read(objects, record_id))
            except CorruptObjectError:
                continue
        return bool(new)

    def add(self, record: journal.Record) -> None:
        if isinstance(record, journal.ThinRecord):
            self.thinned.setdefault(record.checkpoint, set()).update(record.key_paths)
        elif isinstance(record, journal.ForgetRecord):
            self.forgotten.update(record.parents)

    def kept_ancestor(self, parent: str | None) -> str | None:
        """The parent a catalog shows once forgotten checkpoints are skipped."""
        seen: set[str] = set()
        while parent is not None and parent in self.forgotten and parent not in seen:
            seen.add(parent)
            parent = self.forgotten[parent]
        return parent


class Verifier:
    """One verify run over a store's catalog and objects."""

    def __init__(
        self,
        engine: Engine,
        objects: ObjectStore,
        pool: Executor,
        progress: ProgressFactory,
        counting: ProgressFactory | None = None,
    ) -> None:
        """``progress`` opens bars over bytes (full verify), ``counting`` over objects."""
        self.engine = engine
        self.objects = objects
        self.pool = pool
        self.progress = progress
        self.counting = counting
        self.catalog: dict[str, CatalogObject] = {}
        self.children: dict[str, list[str]] = {}
        self.missing: set[str] = set()

    def run(self, *, full: bool) -> VerifyReport:
        with read_transaction(self.engine) as conn:
            self.catalog = audit.all_objects(conn)
            checkpoints = audit.checkpoint_ids(conn)
            problems = self._catalog_problems(conn)
        for o in self.catalog.values():
            if o.base_id is not None:
                self.children.setdefault(o.base_id, []).append(o.id)
        problems.extend(self._file_problems())
        unlisted, unlisted_bytes = self._unlisted()
        decoded = 0
        if full:
            found, decoded = self._decode_all()
            problems.extend(found)
        with read_transaction(self.engine) as conn:
            located = self._locate(conn, problems)
        return VerifyReport(
            full=full,
            checkpoints=len(checkpoints),
            objects=len(self.catalog),
            stored_bytes=sum(o.stored_bytes for o in self.catalog.values()),
            decoded_bytes=decoded,
            unlisted_objects=unlisted,
            unlisted_bytes=unlisted_bytes,
            problems=tuple(dict.fromkeys(located)),
        )

    # -- quick: the catalog against itself and the files -----------------------------------------

    def _catalog_problems(self, conn: Connection) -> list[Problem]:
        problems = []
        for cid, kind in audit.checkpoints_without_manifest(conn):
            what = "no object" if kind is None else f"a {_kind_name(kind)}"
            problems.append(Problem(cid, f"the catalog lists {what} as its manifest", cid))
        for object_id, where, kind in audit.chunks_not_listed(conn):
            what = "no object" if kind is None else f"a {_kind_name(kind)}"
            problems.append(
                Problem(
                    object_id,
                    f"the catalog lists {what} of this id, which a chunk list names",
                    where.checkpoint_id,
                    where.key_path,
                    where.chunk_index,
                )
            )
        for o in self.catalog.values():
            reason = self._chain_reason(o)
            if reason:
                problems.append(Problem(o.id, reason))
        for cid, path, recorded, listed in audit.entries_with_wrong_chunk_count(conn):
            problems.append(
                Problem(cid, f"{recorded} chunks recorded, {listed} listed", cid, key_path=path)
            )
        for cid, count, rows, logical, summed in audit.checkpoints_with_wrong_totals(conn):
            problems.append(
                Problem(
                    cid,
                    f"catalog records {count} entries of {logical} bytes, "
                    f"its entry rows are {rows} of {summed} bytes",
                    cid,
                )
            )
        for what, name, missing in audit.dangling_checkpoint_links(conn):
            problems.append(Problem(missing, f"{what} {name!r} names a checkpoint not listed"))
        return problems

    def _chain_reason(self, o: CatalogObject) -> str | None:
        """What is wrong with an object's delta base or depth as the catalog records them."""
        if o.base_id is None:
            return None if o.depth == 0 else f"a full object recorded at chain depth {o.depth}"
        base = self.catalog.get(o.base_id)
        if base is None:
            return f"its delta base {o.base_id[:16]} is not listed in the catalog"
        if base.kind != Kind.CHUNK:
            return f"its delta base {o.base_id[:16]} is a {_kind_name(base.kind)}"
        if o.depth != base.depth + 1:
            return f"recorded at chain depth {o.depth}, its base at {base.depth}"
        return None

    def _file_problems(self) -> list[Problem]:
        ids = list(self.catalog)
        with progress_bar(self.counting, len(ids), "verify") as progress:
            sizes = self._sizes(ids, progress)
        problems = []
        missing = {object_id for object_id, size in zip(ids, sizes, strict=True) if size is None}
        if missing:  # gc may have removed some since the catalog was read: ask again
            with read_transaction(self.engine) as conn:
                still = set(queries.object_depths(conn, missing))
            for object_id in missing - still:
                del self.catalog[object_id]
            missing &= still
        self.missing = missing
        for object_id, size in zip(ids, sizes, strict=True):
            if object_id in missing:
                problems.append(Problem(object_id, "object is missing"))
            elif object_id in self.catalog and size != self.catalog[object_id].stored_bytes:
                recorded = self.catalog[object_id].stored_bytes
                problems.append(
                    Problem(object_id, f"object is {size} bytes, the catalog records {recorded}")
                )
        return problems

    def _sizes(self, ids: list[str], progress: Progress | None = None) -> list[int | None]:
        """Each object's stored size (None: missing), in batches on the pool."""
        return list(map_batched(self.pool, self._size, ids, progress))

    def _size(self, object_id: str) -> int | None:
        try:
            return self.objects.size(object_id)
        except CorruptObjectError:
            return None

    def _unlisted(self) -> tuple[int, int]:
        extra = [i for i in self.objects.iter_ids() if i not in self.catalog]
        return len(extra), sum(s for s in self._sizes(extra) if s is not None)

    # -- full: decode and re-hash everything -----------------------------------------------------

    def _decode_all(self) -> tuple[list[Problem], int]:
        present = [o for o in self.catalog.values() if o.id not in self.missing]
        total = sum(o.stored_bytes for o in present)
        records = [o.id for o in present if o.kind == Kind.RECORD and o.base_id is None]
        roots = [o.id for o in present if o.kind != Kind.RECORD and o.base_id is None]
        problems: list[Problem] = []
        visited: set[str] = set()
        decoded = 0
        history = _Journal()
        with self.progress(total, "verify") as progress:
            # Records first: they say which entries a manifest may lack (thinned) and
            # which parents it may skip (forgotten).
            for done in self._decode_trees(records, progress):
                for record in done.records:
                    history.add(record)
                history.known.update(done.visited)
                problems.extend(done.problems)
                visited.update(done.visited)
                decoded += done.decoded_bytes
            for done in self._decode_trees(roots, progress):
                for checkpoint_id, m in done.manifests:
                    with read_transaction(self.engine) as conn:  # short: writers go on
                        found = _compare_manifest(conn, checkpoint_id, m, history)
                        if found and history.catch_up(conn, self.objects):
                            found = _compare_manifest(conn, checkpoint_id, m, history)
                    problems.extend(found)
                problems.extend(done.problems)
                visited.update(done.visited)
                decoded += done.decoded_bytes
        for o in present:
            if o.id not in visited:
                problems.append(Problem(o.id, f"cannot be decoded: {self._broken_chain(o.id)}"))
        return self._still_listed(problems), decoded

    def _still_listed(self, problems: list[Problem]) -> list[Problem]:
        """The problems of objects the catalog still lists.

        Verify takes no lock: a gc that ran since the catalog was read deletes
        objects nothing needs any more (and their rows first), and reading them
        then fails as "missing".  Those are not damage.
        """
        if not problems:
            return problems
        with read_transaction(self.engine) as conn:
            listed = queries.object_depths(conn, {p.object_id for p in problems})
        return [p for p in problems if p.object_id in listed]

    def _decode_trees(self, roots: list[str], progress: Progress | None) -> Iterable[_Decoded]:
        futures = [self.pool.submit(self._decode_tree, root) for root in roots]
        try:
            for future in futures:
                done = future.result()
                if progress:
                    progress(done.read_bytes)
                yield done
        finally:
            for future in futures:
                future.cancel()

    def _decode_tree(self, root: str) -> _Decoded:
        result = _Decoded()
        self._visit(root, None, result, 0)
        return result

    def _visit(self, object_id: str, base: bytearray | None, result: _Decoded, level: int) -> None:
        """Decode one object against its base's bytes, then the deltas built on it."""
        result.visited.append(object_id)
        row = self.catalog[object_id]
        try:
            out = self._decode(row, base, result)
        except CorruptObjectError as exc:
            result.problems.append(Problem.from_error(exc))
            self._skip(object_id, f"its delta base {object_id[:16]} is corrupt", result)
            return
        if row.kind == Kind.MANIFEST:
            try:
                result.manifests.append((object_id, manifest.parse(out, object_id)))
            except CorruptObjectError as exc:
                result.problems.append(Problem.from_error(exc))
        elif row.kind == Kind.RECORD:
            try:
                result.records.append(journal.parse(out, object_id))
            except CorruptObjectError as exc:
                result.problems.append(Problem.from_error(exc))
        for child in self.children.get(object_id, ()):
            if child in self.missing or child not in self.catalog:
                continue
            if level + 1 > MAX_CHAIN:
                result.problems.append(Problem(child, f"delta chain deeper than {MAX_CHAIN}"))
                continue
            self._visit(child, out, result, level + 1)

    def _decode(self, row: CatalogObject, base: bytearray | None, result: _Decoded) -> bytearray:
        data = self.objects.get(row.id)
        result.read_bytes += len(data)
        header = codecs.read_header(data, row.id)
        named = header.base_id.hex() if header.base_id is not None else None
        if named != row.base_id:
            raise CorruptObjectError(
                row.id,
                f"its header names delta base {_short(named)}, "
                f"the catalog records {_short(row.base_id)}",
            )
        if header.raw_length != row.raw_bytes:
            raise CorruptObjectError(
                row.id,
                f"decodes to {header.raw_length} bytes, the catalog records {row.raw_bytes}",
            )
        try:
            kind = Kind(row.kind)
        except ValueError:
            raise CorruptObjectError(row.id, f"the catalog records kind {row.kind}") from None
        out = bytearray(header.raw_length)
        codecs.decode_into(data, row.id, memoryview(out), base=base, kind=kind)
        result.decoded_bytes += len(out)
        return out

    def _skip(self, object_id: str, reason: str, result: _Decoded) -> None:
        """Report every delta built on an undecodable object as undecodable too."""
        for child in self.children.get(object_id, ()):
            if child in self.catalog and child not in self.missing:
                result.visited.append(child)
                result.problems.append(Problem(child, f"cannot be decoded: {reason}"))
                self._skip(child, reason, result)

    def _broken_chain(self, object_id: str) -> str:
        """Why an object no decode task reached: the first link of its chain that fails."""
        seen: set[str] = set()
        current: str | None = self.catalog[object_id].base_id
        while current is not None:
            if current in seen:
                return "its delta chain loops"
            seen.add(current)
            if current in self.missing:
                return f"its delta chain needs {current[:16]}, which is missing"
            row = self.catalog.get(current)
            if row is None:
                return f"its delta chain needs {current[:16]}, which the catalog does not list"
            current = row.base_id
        return "its delta chain is broken"

    # -- naming the places ------------------------------------------------------------------------

    def _locate(self, conn: Connection, problems: list[Problem]) -> list[Problem]:
        """Name the checkpoint, key path and chunk of every problem the catalog can place.

        A manifest is placed at its checkpoint; a chunk object at its first
        use; an object no chunk list names (a base whose checkpoints were
        forgotten) at the first use of a delta built on it.
        """
        unplaced = [p.object_id for p in problems if p.checkpoint_id is None]
        users = {object_id: self._dependents(object_id) for object_id in unplaced}
        uses = audit.first_references(conn, [*unplaced, *(u for us in users.values() for u in us)])
        placed = []
        for p in problems:
            row = self.catalog.get(p.object_id)
            if p.checkpoint_id is not None:
                placed.append(p)
            elif row is not None and row.kind == Kind.MANIFEST:
                placed.append(_at(p, p.object_id, None, None, ""))
            elif p.object_id in uses:
                first, count = uses[p.object_id]
                more = f" (and {count - 1} more uses)" if count > 1 else ""
                placed.append(_at(p, first.checkpoint_id, first.key_path, first.chunk_index, more))
            else:
                user = next((u for u in users[p.object_id] if u in uses), None)
                if user is None:
                    placed.append(p)
                    continue
                first, _ = uses[user]
                note = f" (delta base of {user[:16]})"
                placed.append(_at(p, first.checkpoint_id, first.key_path, first.chunk_index, note))
        return placed

    def _dependents(self, object_id: str) -> list[str]:
        """Deltas built on an object, nearest first."""
        found: list[str] = []
        frontier = list(self.children.get(object_id, ()))
        while frontier and len(found) < MAX_CHAIN:
            found.extend(frontier)
            frontier = [c for f in frontier for c in self.children.get(f, ())]
        return found


def _at(
    p: Problem, checkpoint_id: str, key_path: str | None, chunk: int | None, note: str
) -> Problem:
    return Problem(p.object_id, p.reason + note, checkpoint_id, key_path, chunk)


def _compare_manifest(
    conn: Connection, checkpoint_id: str, m: Manifest, history: _Journal
) -> list[Problem]:
    """Where a checkpoint's catalog rows disagree with its manifest.

    The catalog may lack entries a thin record names, and may show the
    nearest kept ancestor as parent where the manifest's parent was forgotten.
    """
    info = queries.get_checkpoint(conn, checkpoint_id)
    if info is None:  # a manifest listed as an object only: its checkpoint was forgotten
        return []

    def problem(reason: str, key_path: str | None = None, chunk: int | None = None) -> Problem:
        return Problem(checkpoint_id, reason, checkpoint_id, key_path, chunk)

    problems = []
    expected = {
        "parent": history.kept_ancestor(m.parent),
        "message": m.message,
        "step": m.step,
        "branch": m.branch,
        "created_at": datetime_from_us(m.created_at_us),
        "metrics": queries.metrics_to_json(m.metrics),
    }
    found = {**info.to_json(), "created_at": info.created_at}
    found["metrics"] = queries.metrics_to_json(info.metrics)
    for name, value in expected.items():
        if found[name] != value:
            problems.append(problem(f"catalog {name} {found[name]!r}, manifest {value!r}"))
    in_manifest = {e.key_path: e for e in m.entries}
    for e in m.entries:
        if len(e.chunks) != chunk_count(e.nbytes, m.chunk_size) or (
            manifest.entry_digest(e.chunks) != e.digest
        ):
            problems.append(problem("the manifest's chunk list is inconsistent", e.key_path))
    chunk_lists = queries.chunk_ids_of(conn, checkpoint_id)
    listed = queries.entries_of(conn, checkpoint_id)
    for entry in listed:
        ours = in_manifest.get(entry.key_path)
        if ours is None:
            problems.append(
                problem("the catalog lists an entry the manifest lacks", entry.key_path)
            )
            continue
        fields = ("kind", "dtype", "shape", "nbytes", "digest")
        for name in fields:
            theirs, mine = getattr(entry, name), getattr(ours, name)
            if theirs != mine:
                problems.append(
                    problem(f"catalog {name} {theirs!r}, manifest {mine!r}", entry.key_path)
                )
        catalog_chunks = chunk_lists.get(entry.key_path, [])
        for index, (a, b) in enumerate(zip(catalog_chunks, ours.chunks, strict=False)):
            if a != b:
                problems.append(
                    problem(f"catalog chunk {a[:16]}, manifest {b[:16]}", entry.key_path, index)
                )
                break
        else:
            if len(catalog_chunks) != len(ours.chunks):
                problems.append(
                    problem(
                        f"catalog lists {len(catalog_chunks)} chunks, manifest {len(ours.chunks)}",
                        entry.key_path,
                    )
                )
    thinned = history.thinned.get(checkpoint_id, set())
    catalog_paths = {e.key_path for e in listed}
    for e in m.entries:
        if e.key_path not in catalog_paths and e.key_path not in thinned:
            problems.append(
                problem("the catalog lacks this entry and no journal record thinned it", e.key_path)
            )
    return problems


def _kind_name(kind: int) -> str:
    try:
        return Kind(kind).name.lower()
    except ValueError:
        return f"object of kind {kind}"


def _short(object_id: str | None) -> str:
    return "none" if object_id is None else object_id[:16]
