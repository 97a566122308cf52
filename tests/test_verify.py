"""verify: a clean store passes; damage to a chunk, a delta base, a manifest, a file or a
catalog row is found and named by checkpoint, key path and chunk."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

import deltastore
from deltastore import codecs, journal
from deltastore.catalog.engine import write_transaction
from deltastore.cli.main import STORE_ENV, main
from deltastore.codecs import Kind
from deltastore.retention import KeepPolicy
from deltastore.verify import Problem, Verifier

from .history_fixture import (
    History,
    bases,
    build_history,
    catalog_objects,
    copy_history,
    first_use,
    flip_byte,
    object_path,
)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> History:
    return build_history(tmp_path_factory.mktemp("verify") / "store")


@pytest.fixture
def store(template: History, tmp_path: Path) -> Iterator[deltastore.Store]:
    copy = copy_history(template, tmp_path / "store")
    with deltastore.open(copy.root, progress=False) as s:
        yield s


@pytest.fixture(autouse=True)
def no_store_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(STORE_ENV, raising=False)


def frozen_chunk(store: deltastore.Store) -> str:
    """A chunk of the tensor that never changes: stored once, in every checkpoint."""
    rows = catalog_objects(store)
    for o in rows.values():
        if o.kind == Kind.CHUNK and first_use(store, o.id)[1] == "model/frozen":
            assert o.base_id is None and o.id not in {r.base_id for r in rows.values()}
            return o.id
    raise AssertionError("the history has no such chunk")


def test_clean_store_verifies_clean_quick_and_full(store: deltastore.Store) -> None:
    rows = catalog_objects(store)
    assert max(o.depth for o in rows.values()) == 2  # the history has deltas of deltas
    quick = store.verify()
    assert quick.ok and quick.problems == ()
    assert (quick.objects, quick.checkpoints) == (len(rows), 7)
    assert quick.stored_bytes == store.stats().stored_bytes
    assert quick.decoded_bytes == 0 and quick.unlisted_objects == 0
    full = store.verify(full=True)
    assert full.ok, [str(p) for p in full.problems]
    assert full.decoded_bytes == sum(o.raw_bytes for o in rows.values())


def raw_plane_offset(store: deltastore.Store, object_id: str) -> int:
    """Where a plane stored uncompressed starts: a flip there decodes, to wrong bytes."""
    header = codecs.read_header(store.objects.get(object_id), object_id)
    offset = header.payload_offset
    for plane in header.planes:
        if plane.codec == codecs.PlaneCodec.RAW:
            return offset
        offset += plane.stored_length
    raise AssertionError("no raw plane")


def test_full_verify_names_a_flipped_byte_in_a_chunk(store: deltastore.Store) -> None:
    chunk_id = frozen_chunk(store)
    flip_byte(store, chunk_id, raw_plane_offset(store, chunk_id))
    assert store.verify().ok  # same size: only decoding tells
    problems = store.verify(full=True).problems
    assert len(problems) == 1
    problem = problems[0]
    checkpoint_id, key_path, index = first_use(store, chunk_id)
    assert (problem.object_id, problem.checkpoint_id) == (chunk_id, checkpoint_id)
    assert (problem.key_path, problem.chunk_index) == (key_path, index)
    assert str(problem) == (
        f"corrupt object {chunk_id[:16]} in checkpoint {checkpoint_id[:12]}, entry "
        f"'model/frozen', chunk {index}: decoded bytes do not hash to the object's id "
        "(and 6 more uses)"
    )


def test_full_verify_names_a_corrupt_delta_base_and_every_delta_on_it(
    store: deltastore.Store,
) -> None:
    rows = catalog_objects(store)
    base = next(b for b in bases(store) if b.depth == 0)
    deltas = {o.id for o in rows.values() if o.base_id == base.id}
    deltas |= {o.id for o in rows.values() if o.base_id in deltas}
    flip_byte(store, base.id)
    problems = {p.object_id: p for p in store.verify(full=True).problems}
    assert set(problems) == {base.id} | deltas
    assert problems[base.id].checkpoint_id == first_use(store, base.id)[0]
    for delta_id in deltas:
        assert "cannot be decoded: its delta base" in problems[delta_id].reason
        assert problems[delta_id].key_path == first_use(store, delta_id)[1]


def test_full_verify_names_a_corrupt_manifest(store: deltastore.Store) -> None:
    checkpoint_id = store.resolve("main~1")
    flip_byte(store, checkpoint_id, offset=-3)
    problems = store.verify(full=True).problems
    assert [(p.object_id, p.checkpoint_id) for p in problems] == [(checkpoint_id, checkpoint_id)]


def test_quick_verify_finds_a_deleted_object_and_full_its_deltas(
    store: deltastore.Store,
) -> None:
    base = next(b for b in bases(store) if b.depth == 1)
    deltas = [o.id for o in catalog_objects(store).values() if o.base_id == base.id]
    object_path(store, base.id).unlink()
    quick = store.verify()
    assert [(p.object_id, p.reason) for p in quick.problems] == [(base.id, "object is missing")]
    assert quick.problems[0].checkpoint_id == first_use(store, base.id)[0]
    full = {p.object_id: p.reason for p in store.verify(full=True).problems}
    assert full.pop(base.id) == "object is missing"
    needs = f"cannot be decoded: its delta chain needs {base.id[:16]}, which is missing"
    assert full == dict.fromkeys(deltas, needs)


def test_wrong_size_and_chain_depth_in_the_catalog_are_found(store: deltastore.Store) -> None:
    chunk_id = frozen_chunk(store)
    delta = next(o for o in catalog_objects(store).values() if o.depth == 2)
    with write_transaction(store.engine) as conn:
        conn.execute(
            text("UPDATE objects SET stored_bytes = stored_bytes + 1 WHERE id = :i"),
            {"i": chunk_id},
        )
        conn.execute(text("UPDATE objects SET depth = 5 WHERE id = :i"), {"i": delta.id})
    found = {p.object_id: p.reason for p in store.verify().problems}
    size = object_path(store, chunk_id).stat().st_size
    assert found == {
        chunk_id: f"object is {size} bytes, the catalog records {size + 1} (and 6 more uses)",
        delta.id: "recorded at chain depth 5, its base at 1",
    }


def test_objects_the_catalog_does_not_list_are_only_counted(store: deltastore.Store) -> None:
    raw = b"left behind by a save that died" * 10
    stray = codecs.encode(raw, 1)
    store.objects.put_if_absent(deltastore.ids.hex_digest(raw), stray)
    store.objects.flush()
    report = store.verify(full=True)
    assert report.ok
    assert (report.unlisted_objects, report.unlisted_bytes) == (1, len(stray))


def test_full_verify_compares_manifests_with_the_catalog(store: deltastore.Store) -> None:
    """A catalog row that disagrees with the manifest is named; an entry missing from the
    catalog is a problem unless a journal record says it was thinned."""
    head = store.resolve("main")
    with write_transaction(store.engine) as conn:
        conn.execute(
            text("UPDATE entries SET dtype = 'float16' WHERE checkpoint_id = :c AND key_path = :k"),
            {"c": head, "k": "model/b"},
        )
        for table in ("entry_chunks", "entries"):
            key = "entry_idx" if table == "entry_chunks" else "idx"
            conn.execute(
                text(f"DELETE FROM {table} WHERE checkpoint_id = :c AND {key} = 3"),  # optim/m
                {"c": head},
            )
        conn.execute(
            text(
                "UPDATE checkpoints SET entry_count = entry_count - 1, "
                "logical_bytes = logical_bytes - 65536 WHERE id = :c"
            ),
            {"c": head},
        )
    problems = store.verify(full=True).problems
    assert [(p.checkpoint_id, p.key_path, p.reason) for p in problems] == [
        (head, "model/b", "catalog dtype 'float16', manifest 'float32'"),
        (head, "optim/m", "the catalog lacks this entry and no journal record thinned it"),
    ]
    [written] = journal.write(store.objects, [journal.ThinRecord(1, head, ("optim/m",))])
    with write_transaction(store.engine) as conn:
        deltastore.catalog.queries.insert_objects(conn, [(written, 1)])
    assert [p.key_path for p in store.verify(full=True).problems] == ["model/b"]


def test_cli_verify_prints_a_summary_and_exits_7_on_problems(
    store: deltastore.Store, capsys: pytest.CaptureFixture[str]
) -> None:
    root = str(store.root)
    assert main(["--store", root, "verify", "--full"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("checked 7 checkpoint(s), ") and out.endswith(": no problems\n")
    assert "decoded and re-hashed" in out
    chunk_id = frozen_chunk(store)
    flip_byte(store, chunk_id)
    assert main(["--store", root, "verify"]) == 0
    capsys.readouterr()
    assert main(["--store", root, "verify", "--full"]) == 7
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"problem: corrupt object {chunk_id[:16]} in checkpoint ")
    assert lines[-1].endswith(": 1 problem(s)")
    assert main(["--store", root, "verify", "--full", "--json"]) == 7
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is False and data["full"] is True
    assert [p["object_id"] for p in data["problems"]] == [chunk_id]
    assert data["problems"][0]["key_path"] == "model/frozen"


def test_full_verify_shows_progress_over_bytes_when_asked(
    template: History, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = copy_history(template, tmp_path / "store")
    with deltastore.open(copy.root, progress=True) as store:
        assert store.verify(full=True).ok
    err = capsys.readouterr().err
    assert "verify" in err and "100%" in err


def test_full_verify_beside_a_gc_reports_no_objects_it_removed(
    store: deltastore.Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Verify takes no lock, so a forget and gc may run after it read the catalog: a full
    verify beside `forget --prune` reported hundreds of "object is missing" problems (and
    exit 7) on a healthy store.  Objects the catalog no longer lists are not damage."""
    before = store.verify(full=True)
    assert before.ok
    read_catalog = Verifier._file_problems

    def then_collect(self: Verifier) -> list[Problem]:
        found = read_catalog(self)
        with deltastore.open(store.root, progress=False) as other:
            other.forget(KeepPolicy(last=1))
            assert other.gc().files > 0
        return found

    monkeypatch.setattr(Verifier, "_file_problems", then_collect)
    report = store.verify(full=True)
    assert report.ok, [str(p) for p in report.problems]
    assert report.decoded_bytes < before.decoded_bytes  # the collected objects were not read
