"""rebuild: a lost or damaged catalog.sqlite recreated from the objects to the same history."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

import deltastore
from deltastore import codecs, journal, layout, manifest
from deltastore.catalog import migrate
from deltastore.catalog.engine import make_engine
from deltastore.cli.main import STORE_ENV, main
from deltastore.errors import CatalogDamagedError, CatalogIntactError, CorruptObjectError
from deltastore.load import read_manifest

from .conftest import assert_same
from .history_fixture import (
    History,
    build_history,
    catalog_objects,
    copy_history,
    first_use,
    object_path,
    snapshot,
)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> History:
    return build_history(tmp_path_factory.mktemp("rebuild") / "store")


@pytest.fixture
def history(template: History, tmp_path: Path) -> History:
    return copy_history(template, tmp_path / "store")


@pytest.fixture(autouse=True)
def no_store_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(STORE_ENV, raising=False)


@pytest.fixture
def before(history: History) -> Iterator[str]:
    with deltastore.open(history.root, progress=False) as store:
        yield snapshot(store)


def delete_catalog(root: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{root / layout.CATALOG_FILE}{suffix}").unlink(missing_ok=True)


def assert_loads_bit_exactly(root: Path, states: dict[str, Any]) -> None:
    with deltastore.open(root, progress=False) as store:
        for checkpoint_id, state in states.items():
            assert_same(store.load(checkpoint_id), state)


def test_deleted_catalog_is_rebuilt_to_the_same_history(history: History, before: str) -> None:
    delete_catalog(history.root)
    report = deltastore.rebuild(history.root)
    assert report.problems == () and report.moved_aside is None
    assert (report.checkpoints, report.refs, report.unlisted_objects) == (7, 4, 0)
    with deltastore.open(history.root, progress=False) as store:
        assert snapshot(store) == before  # logs, refs, entries, stats: identical
        assert "old" not in store.refs()  # a deleted tag stays deleted
        assert store.verify(full=True).ok
        assert report.objects == store.stats().object_count
    assert_loads_bit_exactly(history.root, history.states)


def test_an_intact_catalog_is_rebuilt_only_with_force(
    history: History, before: str, capsys: pytest.CaptureFixture[str]
) -> None:
    catalog = history.root / layout.CATALOG_FILE
    with pytest.raises(CatalogIntactError, match="use --force"):
        deltastore.rebuild(history.root)
    assert main(["--store", str(history.root), "rebuild"]) == 31
    assert capsys.readouterr().err == (
        f"deltastore: error: the catalog of {str(history.root)!r} opens and passes a quick "
        "verify; use --force (force=True) to rebuild it anyway\n"
    )
    original = catalog.read_bytes()
    report = deltastore.rebuild(history.root, force=True)
    assert report.moved_aside is not None
    assert report.moved_aside.name.startswith("catalog.sqlite.broken-")
    assert report.moved_aside.read_bytes() == original  # kept, never deleted
    with deltastore.open(history.root, progress=False) as store:
        assert snapshot(store) == before


def test_a_catalog_of_garbage_is_rebuilt_and_kept_aside(
    history: History, before: str, capsys: pytest.CaptureFixture[str]
) -> None:
    catalog = history.root / layout.CATALOG_FILE
    garbage = b"\x00not a database\xff" * 512
    delete_catalog(history.root)
    catalog.write_bytes(garbage)
    with pytest.raises(deltastore.DeltastoreError):  # the store cannot be opened like this
        deltastore.open(history.root).close()
    assert main(["--store", str(history.root), "rebuild", "--force"]) == 0
    lines = capsys.readouterr().out.splitlines()
    objects = json.loads(before)["stats"]["object_count"]
    assert lines[0] == (
        f"rebuilt the catalog of {history.root}: 7 checkpoint(s), 4 ref(s), {objects} object(s)"
    )
    aside = sorted(history.root.glob("catalog.sqlite.broken-*"))
    assert [p.read_bytes() for p in aside] == [garbage]
    assert lines[1] == f"the old catalog is kept as {aside[0]}"
    with deltastore.open(history.root, progress=False) as store:
        assert snapshot(store) == before
    assert_loads_bit_exactly(history.root, history.states)


def objects_on_disk(root: Path) -> list[Path]:
    return sorted(p for p in (root / layout.OBJECTS_DIR).rglob("*") if p.is_file())


@pytest.mark.parametrize("damage", ["deleted", "emptied"])
def test_a_lost_catalog_is_not_recreated_empty_and_gc_deletes_nothing(
    history: History, before: str, damage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Opening a store whose catalog.sqlite was deleted (or left empty) used to create an
    empty catalog: `deltastore log` said "no checkpoints yet", verify "no problems", and
    `deltastore gc` deleted every object, the very objects rebuild needs.  The store now
    refuses to open (CatalogDamagedError, exit 32) and points at rebuild."""
    objects = objects_on_disk(history.root)
    delete_catalog(history.root)
    if damage == "emptied":
        (history.root / layout.CATALOG_FILE).write_bytes(b"")
    with pytest.raises(CatalogDamagedError, match="deltastore rebuild"):
        deltastore.open(history.root)
    for verb in (["gc"], ["log"], ["verify"]):
        assert main(["--store", str(history.root), *verb]) == CatalogDamagedError.exit_code
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3 and all(line.startswith("deltastore: error: the catalog") for line in err)
    assert objects_on_disk(history.root) == objects
    assert (history.root / layout.CATALOG_FILE).exists() == (damage == "emptied")
    deltastore.rebuild(history.root)  # no --force needed
    with deltastore.open(history.root, progress=False) as store:
        assert snapshot(store) == before


def test_an_empty_catalog_an_older_deltastore_made_is_rebuilt_without_force(
    history: History, before: str
) -> None:
    """Older versions recreated a deleted catalog empty on open: a valid catalog listing
    nothing while objects are on disk is not a healthy one."""
    delete_catalog(history.root)
    engine = make_engine(layout.catalog_url(history.root))
    try:
        migrate.upgrade(engine)
    finally:
        engine.dispose()
    with deltastore.open(history.root, progress=False) as store:
        assert list(store.log()) == []
    deltastore.rebuild(history.root)
    with deltastore.open(history.root, progress=False) as store:
        assert snapshot(store) == before


def test_a_stale_wal_is_moved_aside_with_the_catalog(history: History, before: str) -> None:
    """SQLite replays a -wal file beside a database into it: a stale one must go too."""
    delete_catalog(history.root)
    wal = Path(f"{history.root / layout.CATALOG_FILE}-wal")
    wal.write_bytes(b"stale write-ahead log" * 100)
    report = deltastore.rebuild(history.root)
    assert report.moved_aside is not None
    assert Path(f"{report.moved_aside}-wal").read_bytes() == b"stale write-ahead log" * 100
    with deltastore.open(history.root, progress=False) as store:
        assert snapshot(store) == before


def test_a_chunk_missing_for_no_recorded_reason_is_reported_and_its_entry_fails_to_load(
    history: History, capsys: pytest.CaptureFixture[str]
) -> None:
    with deltastore.open(history.root, progress=False) as store:
        chunk_id = next(
            o.id
            for o in catalog_objects(store).values()
            if first_use(store, o.id)[1] == "model/frozen"
        )
        index = first_use(store, chunk_id)[2]
        object_path(store, chunk_id).unlink()
    assert main(["--store", str(history.root), "rebuild", "--json"]) == 7  # no force needed
    report = json.loads(capsys.readouterr().out)
    problems = report["problems"]
    assert {p["checkpoint_id"] for p in problems} == set(history.states)
    assert {(p["object_id"], p["key_path"], p["chunk_index"]) for p in problems} == {
        (chunk_id, "model/frozen", index)
    }
    assert "no record says why; loading the entry will fail" in problems[0]["reason"]
    with deltastore.open(history.root, progress=False) as store:
        for verified in (store.verify(), store.verify(full=True)):  # still damaged, and says so
            assert {(p.checkpoint_id, p.key_path) for p in verified.problems} >= {
                (c, "model/frozen") for c in history.states
            }
        for checkpoint_id, state in history.states.items():
            paths = [e.key_path for e in store.entries(checkpoint_id)]
            assert "model/frozen" in paths and "model/w" in paths  # listed, never silently gone
            assert_same(store.load_tensor(checkpoint_id, "model/w"), state["model"]["w"])
            with pytest.raises(CorruptObjectError, match="model/frozen"):
                store.load(checkpoint_id)
            with pytest.raises(CorruptObjectError, match=chunk_id[:12]):
                store.load_tensor(checkpoint_id, "model/frozen")
        store.gc()  # the entry's other chunks are still listed: gc keeps them
        state = next(iter(history.states.values()))
        assert_same(store.load_tensor(next(iter(history.states)), "model/w"), state["model"]["w"])


def test_an_abandoned_commit_attempt_is_left_out(history: History, before: str) -> None:
    """A save whose branch moved under it commits its manifest again on the new head; the
    first manifest (same content, old parent, earlier time) never was a checkpoint."""
    with deltastore.open(history.root, progress=False) as store:
        head = store.resolve("main")
        committed = read_manifest(store.objects, head)
        attempt = manifest.Manifest(
            **{
                **committed.__dict__,
                "parent": store.resolve("main~2"),
                "created_at_us": committed.created_at_us - 1000,
            }
        )
        raw = attempt.to_bytes()
        store.objects.put_if_absent(manifest.manifest_id(raw), codecs.encode(raw, 1, kind=1))
        store.objects.flush()
    delete_catalog(history.root)
    report = deltastore.rebuild(history.root)
    assert (report.abandoned, report.checkpoints, report.unlisted_objects) == (1, 7, 1)
    with deltastore.open(history.root, progress=False) as store:
        assert snapshot(store) == before


def test_journal_records_replay_forgets_and_thins(history: History) -> None:
    """Records written directly (the catalog changes they explain are what rebuild recreates):
    a forgotten checkpoint's child joins its parent and its tags go; thinned entries go."""
    with deltastore.open(history.root, progress=False) as store:
        ids = [c.id for c in store.log("main")]  # newest first
        exp_head = store.resolve("exp")
        store.tag("doomed", ids[3])
        time_us = store.info("exp").created_at.timestamp() * 1e6 + 1e6
        for record in (
            journal.ForgetRecord(int(time_us), {ids[3]: ids[4]}),
            journal.ThinRecord(int(time_us) + 1, exp_head, ("optim/m", "optim/count")),
        ):
            journal.write(store.objects, [record])
        thinned = store.info(exp_head)
    delete_catalog(history.root)
    report = deltastore.rebuild(history.root)
    assert (report.forgotten, report.checkpoints, report.problems) == (1, 6, ())
    with deltastore.open(history.root, progress=False) as store:
        assert [c.id for c in store.log("main")] == [*ids[:3], ids[4]]
        assert "doomed" not in store.refs() and store.resolve("v1") == ids[0]
        info = store.info(exp_head)
        assert [e.key_path for e in store.entries(exp_head)] == [
            "model/w",
            "model/b",
            "model/frozen",
        ]
        assert info.entry_count == 3
        assert info.logical_bytes == thinned.logical_bytes - 64 * 256 * 4 - 8 * 8
        assert set(history.states) - {c.id for c in store.stats().checkpoints} == {ids[3]}
        for key_path in ("model/w", "model/frozen"):
            group, name = key_path.split("/")
            assert_same(
                store.load_tensor(exp_head, key_path), history.states[exp_head][group][name]
            )
        assert store.verify(full=True).ok


@pytest.mark.skipif(not hasattr(deltastore.Store, "forget"), reason="forget not built yet")
def test_rebuild_after_forget_thin_and_gc_keeps_the_history(history: History) -> None:
    """Everything but the checkpoints' stored bytes matches (objects count where they are
    needed first, not where a forgotten save added them); they still add up to the store's."""
    from deltastore.retention import KeepPolicy

    with deltastore.open(history.root, progress=False) as store:
        store.forget(KeepPolicy(last=2))
        store.thin("optim/*", keep_newest=1)
        store.gc()
        loaded = {c.id: store.load(c.id) for c in store.stats().checkpoints}
        before = json.loads(snapshot(store))
    delete_catalog(history.root)
    report = deltastore.rebuild(history.root)
    assert report.problems == () and report.unlisted_objects == 0
    with deltastore.open(history.root, progress=False) as store:
        after = json.loads(snapshot(store))
        for data in (before, after):
            for value in data.values():
                rows = value if isinstance(value, list) else value.get("checkpoints", [])
                for row in rows:
                    if isinstance(row, dict):
                        row.pop("stored_bytes", None)
        assert after == before
        stats = store.stats()
        records = sum(
            o.stored_bytes for o in catalog_objects(store).values() if o.kind == codecs.Kind.RECORD
        )
        assert sum(c.stored_bytes for c in stats.checkpoints) + records == stats.stored_bytes
        for checkpoint_id, state in loaded.items():
            assert_same(store.load(checkpoint_id), state)
        assert store.verify(full=True).ok


def test_rebuild_shows_progress_over_objects_when_asked(
    history: History, capsys: pytest.CaptureFixture[str]
) -> None:
    delete_catalog(history.root)
    deltastore.rebuild(history.root, progress=True)
    err = capsys.readouterr().err
    assert "rebuild" in err and "obj" in err


def test_the_same_save_after_a_branch_reset_is_kept_twice(tmp_path: Path) -> None:
    """Saving the same state again after moving the branch back looks like an abandoned
    commit attempt (same content, another parent), but the ref record in between tells
    them apart: both are checkpoints in the catalog, so both stay."""
    root = tmp_path / "store"
    state = {"w": torch.arange(2000, dtype=torch.float32)}
    with deltastore.open(root, create=True, progress=False) as store:
        first = store.save({"w": torch.zeros(2000)}, "first")
        store.save({"w": torch.ones(2000)}, "second")
        again = store.save(state, "same")
        store.branch("main", first, force=True)
        retried = store.save(state, "same")
        assert store.info(retried).parent == first and store.info(again).parent != first
        before = snapshot(store)
    delete_catalog(root)
    report = deltastore.rebuild(root)
    assert (report.abandoned, report.checkpoints) == (0, 4)
    with deltastore.open(root, progress=False) as store:
        assert snapshot(store) == before


def test_a_kept_checkpoint_whose_child_was_forgotten_and_collected_is_not_taken_for_abandoned(
    tmp_path: Path,
) -> None:
    """A commit attempt that lost the race for its branch is recognised by a later manifest
    of the same content on another parent, and by having no child.  Once its only child was
    forgotten and gc removed the child's manifest, a committed checkpoint looked childless:
    saving the same state again made rebuild drop it from the history (and orphan its kept
    descendant, reported as a problem).  The forget record still names it as a parent."""
    same = {"w": torch.arange(10.0)}
    with deltastore.open(tmp_path / "s", create=True, progress=False) as store:
        kept = store.save(same, "same", step=10)
        store.save({"w": torch.ones(10)}, "c", step=11)
        store.save({"w": torch.zeros(10)}, "d", step=12)
        assert [
            c.step for c in store.forget(deltastore.KeepPolicy(every_n_steps=10)).forgotten
        ] == [11]
        store.gc()
        store.save(same, "same", step=10)
        before = [(c.id, c.parent, c.step) for c in store.log()]
    assert kept in {cid for cid, _, _ in before}
    report = deltastore.rebuild(tmp_path / "s", force=True)
    assert (report.abandoned, report.problems) == (0, ())
    with deltastore.open(tmp_path / "s", progress=False) as store:
        assert [(c.id, c.parent, c.step) for c in store.log()] == before
