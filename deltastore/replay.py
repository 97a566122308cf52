"""From the objects alone to the rows of a catalog: the history a rebuild replays.

Pure: it takes what a scan of the object folder found (every object's
header, the parsed manifests and journal records) and decides every row of
the new catalog, so it is tested without a disk and ``rebuild`` only does
the I/O around it.  The rules (docs/format.md §4a):

* Every manifest is a checkpoint, except one a forget record names (dropped,
  whatever is left of its objects) and an abandoned commit attempt: a save
  whose branch moved under it writes its manifest again on the new head, and
  the first manifest, the same save on the old parent, was never committed.
  It is recognised as a manifest with the same content as a later one on the
  same branch but another parent, that no checkpoint (nor a forget record)
  has as parent, no ref record names, and with no ref record moving that branch in between (a
  user resetting the branch and saving the same state again keeps both).
* Entries a thin record names are left out, and so is an entry whose chunks
  are not all on disk with their delta chains (reported: nothing recorded
  why they are gone).
* A kept checkpoint's parent is its manifest's, followed through forgotten
  checkpoints to the nearest kept one (as forget re-parented the catalog).
* Refs replay in time order: each save moves its manifest's branch at its
  ``created_at_us``, ref records set or delete names.  A ref left on a
  checkpoint that was dropped is dropped.
* A checkpoint's stored bytes are those of the objects it needs (manifest,
  chunks, delta bases) that no earlier checkpoint needed: what its save
  added, for a history nothing was forgotten or thinned from.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from deltastore import journal
from deltastore.catalog.queries import NewEntry, NewObject
from deltastore.codecs import Kind
from deltastore.ids import hex_digest
from deltastore.info import CheckpointInfo, datetime_from_us
from deltastore.load import MAX_CHAIN
from deltastore.manifest import Manifest
from deltastore.refs import BRANCH
from deltastore.verify import Problem


@dataclass(frozen=True)
class ObjectHead:
    """What an object's header and file say about it."""

    id: str
    kind: Kind
    raw_length: int
    stored_bytes: int
    base_id: str | None


@dataclass(frozen=True)
class PlannedCheckpoint:
    info: CheckpointInfo
    created_at_us: int
    entries: list[NewEntry]


@dataclass
class Plan:
    """Every row of the rebuilt catalog, and what could not be recovered."""

    checkpoints: list[PlannedCheckpoint] = field(default_factory=list)  # parents first
    objects: list[tuple[NewObject, int]] = field(default_factory=list)  # (row, created_at_us)
    refs: list[tuple[str, str, str, int]] = field(default_factory=list)  # name, kind, id, time
    chunk_size: int | None = None  # None: no manifest says
    forgotten: int = 0  # manifests dropped because a forget record names them
    abandoned: int = 0  # manifests of commit attempts that never committed
    unlisted: int = 0  # objects on disk no kept checkpoint or record needs (gc frees them)
    problems: list[Problem] = field(default_factory=list)


def plan(
    heads: Mapping[str, ObjectHead],
    manifests: Mapping[str, Manifest],
    records: Mapping[str, journal.Record],
) -> Plan:
    """The catalog that the objects describe (see the module docstring for the rules)."""
    result = Plan()
    forgotten: dict[str, str | None] = {}
    thinned: dict[str, set[str]] = {}
    ref_records = []
    for record in records.values():
        if isinstance(record, journal.ForgetRecord):
            forgotten.update(record.parents)
        elif isinstance(record, journal.ThinRecord):
            thinned.setdefault(record.checkpoint, set()).update(record.key_paths)
        else:
            ref_records.append(record)
    abandoned = _abandoned(manifests, ref_records, forgotten)
    kept = {cid: m for cid, m in manifests.items() if cid not in forgotten and cid not in abandoned}
    result.forgotten = sum(1 for cid in manifests if cid in forgotten)
    result.abandoned = len(abandoned)
    depths = _chain_depths(heads)
    order = sorted(kept, key=lambda c: (kept[c].created_at_us, c))
    if order:
        result.chunk_size = kept[order[-1]].chunk_size
    elif manifests:
        result.chunk_size = max(manifests.values(), key=lambda m: m.created_at_us).chunk_size
    claimed: set[str] = set()
    planned: dict[str, PlannedCheckpoint] = {}
    for cid in order:
        m = kept[cid]
        entries = _entries(cid, m, thinned.get(cid, set()), heads, depths, result.problems)
        needed = [cid, *(o for e in entries for c in _present_chunks(e) for o in _chain(c, heads))]
        stored = 0
        for object_id in dict.fromkeys(needed):
            if object_id in claimed:
                continue
            claimed.add(object_id)
            head = heads[object_id]
            stored += head.stored_bytes
            row = NewObject(
                object_id,
                head.kind,
                head.raw_length,
                head.stored_bytes,
                head.base_id,
                depths[object_id] or 0,
            )
            result.objects.append((row, m.created_at_us))
        parent = _kept_parent(cid, m.parent, kept, forgotten, result.problems)
        info = CheckpointInfo(
            id=cid,
            parent=parent,
            created_at=datetime_from_us(m.created_at_us),
            message=m.message,
            step=m.step,
            metrics=m.metrics,
            branch=m.branch,
            entry_count=len(entries),
            logical_bytes=sum(e.nbytes for e in entries),
            stored_bytes=stored,
        )
        planned[cid] = PlannedCheckpoint(info, m.created_at_us, entries)
    result.checkpoints = _parents_first(planned, order)
    for record_id, record in records.items():
        head = heads[record_id]
        row = NewObject(record_id, Kind.RECORD, head.raw_length, head.stored_bytes, None, 0)
        result.objects.append((row, record.time_us))
    result.refs = _replay_refs(kept, ref_records, manifests, forgotten, result.problems)
    result.unlisted = len(heads) - len(result.objects)
    return result


def _entries(
    checkpoint_id: str,
    m: Manifest,
    thinned: set[str],
    heads: Mapping[str, ObjectHead],
    depths: Mapping[str, int | None],
    problems: list[Problem],
) -> list[NewEntry]:
    """The manifest's entries the catalog lists: all but the thinned ones.

    An entry with a chunk that cannot be restored (missing, or a base of its
    chain missing) and no record saying why stays listed, with that chunk
    marked lost: a load of it then fails naming the chunk, as it did before
    the catalog was lost, instead of returning a state without the entry.
    """
    entries = []
    for e in m.entries:
        if e.key_path in thinned:
            continue
        lost = frozenset(
            i
            for i, c in enumerate(e.chunks)
            if c not in heads or heads[c].kind != Kind.CHUNK or depths[c] is None
        )
        for index in sorted(lost):
            chunk_id = e.chunks[index]
            problems.append(
                Problem(
                    chunk_id,
                    f"{_why_lost(chunk_id, heads)}; loading the entry will fail",
                    checkpoint_id,
                    e.key_path,
                    index,
                )
            )
        entries.append(
            NewEntry(e.key_path, e.kind, e.dtype, e.shape, e.nbytes, e.digest, list(e.chunks), lost)
        )
    return entries


def _present_chunks(entry: NewEntry) -> list[str]:
    return [c for i, c in enumerate(entry.chunk_ids) if i not in entry.lost]


def _why_lost(chunk_id: str, heads: Mapping[str, ObjectHead]) -> str:
    head = heads.get(chunk_id)
    if head is None:
        return "chunk object is missing or unreadable, and no record says why"
    if head.kind != Kind.CHUNK:
        return f"the object is a {head.kind.name.lower()}, not a chunk"
    return "a delta base in its chain is missing or unreadable"


def _chain(object_id: str, heads: Mapping[str, ObjectHead]) -> Iterable[str]:
    """An object and the delta bases below it (all present: callers checked the depth)."""
    current: str | None = object_id
    while current is not None:
        yield current
        current = heads[current].base_id


def _chain_depths(heads: Mapping[str, ObjectHead]) -> dict[str, int | None]:
    """Each object's delta chain depth; None when a base is missing, not a chunk, or loops."""
    depths: dict[str, int | None] = {}
    for start in heads:
        path: list[str] = []
        current: str | None = start
        depth: int | None = None
        while True:
            if current is None:
                depth = -1  # below the full object
                break
            head = heads.get(current)
            if head is None or current in path or len(path) > MAX_CHAIN:
                depth = None
                break
            if path and head.kind != Kind.CHUNK:
                depth = None  # a base that is no chunk
                break
            if current in depths:
                depth = depths[current]
                break
            path.append(current)
            current = head.base_id
        for object_id in reversed(path):
            depth = None if depth is None else depth + 1
            depths[object_id] = depth
    return depths


def _abandoned(
    manifests: Mapping[str, Manifest],
    ref_records: list[journal.RefRecord],
    forgotten: Mapping[str, str | None],
) -> set[str]:
    """Manifests of commit attempts that lost the race for their branch (module docstring)."""
    # A forgotten child's manifest may be gone (gc), but its forget record still names
    # the parent it had: that parent was committed.
    has_children = {m.parent for m in manifests.values()} | set(forgotten.values())
    named = {r.checkpoint for r in ref_records}
    moves: dict[str, list[int]] = {}
    for r in ref_records:
        moves.setdefault(r.name, []).append(r.time_us)
    for times in moves.values():
        times.sort()
    groups: dict[str, list[str]] = {}
    for cid, m in manifests.items():
        content = replace(m, parent=None, created_at_us=0).to_bytes()
        groups.setdefault(hex_digest(content), []).append(cid)
    found = set()
    for ids in groups.values():
        ids.sort(key=lambda c: (manifests[c].created_at_us, c))
        for i, cid in enumerate(ids):
            m = manifests[cid]
            if cid in has_children or cid in named or m.branch is None:
                continue
            times = moves.get(m.branch, [])
            for later in ids[i + 1 :]:
                retry = manifests[later]
                start = bisect.bisect_right(times, m.created_at_us)
                reset = start < len(times) and times[start] < retry.created_at_us
                if retry.parent != m.parent and not reset:
                    found.add(cid)
                    break
    return found


def _kept_parent(
    checkpoint_id: str,
    parent: str | None,
    kept: Mapping[str, Manifest],
    forgotten: Mapping[str, str | None],
    problems: list[Problem],
) -> str | None:
    seen: set[str] = set()
    while parent is not None and parent in forgotten and parent not in seen:
        seen.add(parent)
        parent = forgotten[parent]
    if parent is None or parent in kept:
        return parent
    problems.append(
        Problem(
            parent,
            "the manifest of this parent is missing or unreadable, and no record "
            "says it was forgotten; the child is recorded without a parent",
            checkpoint_id,
        )
    )
    return None


def _parents_first(
    planned: Mapping[str, PlannedCheckpoint], order: list[str]
) -> list[PlannedCheckpoint]:
    """Checkpoints oldest first, but never a child before its parent (clocks can disagree)."""
    done: set[str] = set()
    result = []
    for cid in order:
        stack = []
        current: str | None = cid
        while current is not None and current not in done:
            stack.append(current)
            current = planned[current].info.parent
        for item in reversed(stack):
            done.add(item)
            result.append(planned[item])
    return result


def _replay_refs(
    kept: Mapping[str, Manifest],
    ref_records: list[journal.RefRecord],
    manifests: Mapping[str, Manifest],
    forgotten: Mapping[str, str | None],
    problems: list[Problem],
) -> list[tuple[str, str, str, int]]:
    """Refs after replaying saves and ref records in time order (saves first on a tie)."""
    events: list[tuple[int, int, str, str, str | None]] = [
        (m.created_at_us, 0, m.branch, BRANCH, cid)
        for cid, m in kept.items()
        if m.branch is not None
    ]
    events.extend((r.time_us, 1, r.name, r.kind, r.checkpoint) for r in ref_records)
    events.sort(key=lambda e: (e[0], e[1]))
    refs: dict[str, tuple[str, str, int]] = {}
    for time_us, _, name, kind, checkpoint_id in events:
        if checkpoint_id is None:
            refs.pop(name, None)
        else:
            refs[name] = (kind, checkpoint_id, time_us)
    result = []
    for name, (kind, checkpoint_id, time_us) in sorted(refs.items()):
        if checkpoint_id in kept:
            result.append((name, kind, checkpoint_id, time_us))
        elif checkpoint_id not in forgotten and checkpoint_id not in manifests:
            problems.append(
                Problem(
                    checkpoint_id,
                    f"{kind} {name!r} names a checkpoint whose manifest is missing or "
                    "unreadable; the ref is left out",
                    checkpoint_id,
                )
            )
    return result
