"""forget, thin and gc: what goes, what must stay, and gc beside processes that are saving.

The store must never lose an object a checkpoint in the catalog needs: its
chunks, its manifest, and every delta base below them however old the
checkpoint that first stored it.  And gc must never delete the objects of a
save in flight: they are on disk before the catalog names them, exactly
like a dead save's leftovers.  The lock protocol of layout.py is what tells
the two apart; the last tests run gc against real saving processes.
"""

from __future__ import annotations

import functools
import json
import multiprocessing
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from sqlalchemy import select

import deltastore
from deltastore import codecs, journal, layout
from deltastore.catalog import queries
from deltastore.catalog.engine import read_transaction
from deltastore.catalog.models import ObjectRow
from deltastore.cli.main import main
from deltastore.errors import (
    CatalogDamagedError,
    CorruptObjectError,
    EntryNotFoundError,
    EntryThinnedError,
    RefNotFoundError,
)
from deltastore.ids import hex_digest
from deltastore.objects.local import TMP_PREFIX
from deltastore.retention import KeepPolicy
from deltastore.save import CheckpointWriter

from .conftest import assert_same, chained_deltas, join_all

CHUNK = 4096  # small chunks: a 16 KiB tensor is 4 chunks, each a delta on its parent's


# -- helpers ------------------------------------------------------------------------------------


def catalog_rows_with_missing_files(store: deltastore.Store) -> set[str]:
    """Object rows of the catalog whose file is not on disk (must always be empty)."""
    with read_transaction(store.engine) as conn:
        ids = {row.id for row in conn.execute(select(ObjectRow.id))}
    return {object_id for object_id in ids if not store.objects.exists(object_id)}


def object_rows(store: deltastore.Store) -> dict[str, queries.StoredObject]:
    with read_transaction(store.engine) as conn:
        return queries.all_objects(conn)


def chunk_ids(store: deltastore.Store, ref: str) -> dict[str, list[str]]:
    with read_transaction(store.engine) as conn:
        return queries.chunk_ids_of(conn, store.resolve(ref))


def snapshot(root: Path) -> tuple[list[str], list[tuple[str, int, int]]]:
    """Everything a change could touch: the catalog's full SQL dump and every object file."""
    with sqlite3.connect(root / "catalog.sqlite") as conn:
        dump = list(conn.iterdump())
    conn.close()
    files = sorted(
        (str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns)
        for p in (root / "objects").rglob("*")
        if p.is_file()
    )
    return dump, files


def drifting(n: int, shape: tuple[int, ...] = (64, 64), seed: int = 99) -> torch.Tensor:
    """Weights that move a little per save: their chunks are stored as deltas."""
    base = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    return base + 1e-3 * n * torch.randn(shape, generator=torch.Generator().manual_seed(n))


def small_store(path: Path) -> deltastore.Store:
    return deltastore.open(path, create=True, progress=False, chunk_size=CHUNK)


# -- gc -----------------------------------------------------------------------------------------


def test_gc_keeps_the_keyframes_a_kept_checkpoint_needs(store_path: Path) -> None:
    """Forget the checkpoints whose chunks the head's deltas decode against: the head still loads.

    Three saves of drifting weights: the first's chunks are keyframes, the
    second's and the third's deltas on them.  Keeping only the third, gc must
    keep the keyframes and drop the manifests and the second's deltas.
    """
    with small_store(store_path) as store:
        ids = [store.save({"w": drifting(n)}, step=n) for n in range(3)]
        rows = object_rows(store)
        first, second, head = (chunk_ids(store, i)["w"] for i in ids)
        assert [rows[c].base_id for c in head] == first == [rows[c].base_id for c in second]

        report = store.forget(KeepPolicy(last=1))
        assert [c.id for c in report.forgotten] == [ids[1], ids[0]]
        collected = store.gc()
        assert collected.objects == 2 + len(second)  # two manifests and the second's deltas
        assert not store.objects.exists(ids[0]) and not store.objects.exists(ids[1])
        assert all(store.objects.exists(c) for c in first + head)
        assert not any(store.objects.exists(c) for c in second)
        assert torch.equal(store.load()["w"].view(torch.uint8), drifting(2).view(torch.uint8))
        assert [c.id for c in store.log()] == [ids[2]]
        assert store.info("main").parent is None


def test_gc_keeps_the_whole_delta_chain_a_kept_checkpoint_needs(store_path: Path) -> None:
    """The same on deltas of deltas (stores written before session 5): all three levels stay.

    The second's chunks are deltas on the first's, the third's on the
    second's.  Keeping only the third, gc must keep all three levels and drop
    only the manifests.
    """
    with small_store(store_path) as store, chained_deltas():
        ids = [store.save({"w": drifting(n)}, step=n) for n in range(3)]
        rows = object_rows(store)
        head_chunks = chunk_ids(store, ids[2])["w"]
        chains = []
        for chunk in head_chunks:
            chain = [chunk]
            while rows[chain[-1]].base_id is not None:
                chain.append(rows[chain[-1]].base_id)  # type: ignore[arg-type]
            chains.append(chain)
        first, second = chunk_ids(store, ids[0])["w"], chunk_ids(store, ids[1])["w"]
        assert [c[1:] for c in chains] == [[b, a] for a, b in zip(first, second, strict=True)]

        report = store.forget(KeepPolicy(last=1))
        assert [c.id for c in report.forgotten] == [ids[1], ids[0]]
        collected = store.gc()
        assert collected.objects == 2  # the two forgotten manifests, nothing else
        assert not store.objects.exists(ids[0]) and not store.objects.exists(ids[1])
        assert all(store.objects.exists(c) for chain in chains for c in chain)
        assert torch.equal(store.load()["w"].view(torch.uint8), drifting(2).view(torch.uint8))


def test_gc_sweeps_what_a_dead_save_left(store: deltastore.Store) -> None:
    """An object file the catalog never listed and a temporary file: crash leftovers go."""
    kept = store.save({"w": torch.arange(100.0)})
    raw = b"never committed" * 100
    orphan = hex_digest(raw)
    store.objects.put_if_absent(orphan, codecs.encode(raw, 1))
    store.objects.flush()
    temporary = store.root / "objects" / orphan[:2] / f"{TMP_PREFIX}dead-writer"
    temporary.write_bytes(b"half an object")

    dry = store.gc(dry_run=True)
    assert (dry.files, dry.temporaries, dry.catalog_rows, dry.dry_run) == (1, 1, 0, True)
    assert dry.freed_bytes == store.objects.size(orphan) + len(b"half an object")
    assert store.objects.exists(orphan) and temporary.exists()

    done = store.gc()
    assert done.to_json() == {**dry.to_json(), "dry_run": False}
    assert not store.objects.exists(orphan) and not temporary.exists()
    assert_same(store.load(kept), {"w": torch.arange(100.0)})
    assert store.gc().objects == 0


def test_gc_bumps_the_generation_writers_check(store: deltastore.Store) -> None:
    store.save({"w": torch.arange(10.0)})
    store.save({"w": torch.arange(11.0)})
    store.gc()  # nothing to delete: no bump
    store.forget(KeepPolicy(last=1))
    store.gc()
    with read_transaction(store.engine) as conn:
        assert queries.get_meta(conn)[queries.GC_GENERATION] == "1"


def test_a_writer_saves_deltas_on_its_head_after_another_handle_forgot_and_collected(
    store_path: Path,
) -> None:
    """The head, the next save's delta base, survives forget + gc; the writer drops its copies."""
    with small_store(store_path) as writer, small_store(store_path) as other:
        for n in range(2):  # the head's chunks are deltas on the first save's (keyframes)
            writer.save({"w": drifting(n)}, step=n)
        head = writer.resolve("main")
        assert writer._writer.recent.for_parent("main", head)  # copies of the head's chunks
        other.forget(KeepPolicy(last=1))
        assert other.gc().objects == 1  # the first manifest; its chunks are the head's bases
        newest = writer.save({"w": drifting(2)}, step=2)
        assert not writer._writer.recent.for_parent("main", head)  # dropped after the gc
        assert_same(writer.load(newest), {"w": drifting(2)})
        rows = object_rows(writer)
        bases = {rows[c].base_id for c in chunk_ids(writer, newest)["w"]}
        keyframes = {rows[c].base_id for c in chunk_ids(writer, head)["w"]}
        assert None not in keyframes and bases == keyframes  # deltas on the head's keyframes
        assert catalog_rows_with_missing_files(writer) == set()


# -- forget -------------------------------------------------------------------------------------


def test_forget_deletes_tags_of_forgotten_checkpoints_and_journals_it(
    store: deltastore.Store,
) -> None:
    ids = [store.save({"n": torch.tensor(n)}, step=n) for n in range(4)]
    store.tag("old", ids[0])
    store.tag("kept", ids[3])
    report = store.forget(KeepPolicy(last=2))
    assert report.deleted_tags == ("old",)
    assert set(store.refs()) == {"main", "kept"}
    assert report.reparented == {ids[2]: None}
    with read_transaction(store.engine) as conn:
        records = [
            journal.read(store.objects, oid)
            for oid, o in queries.all_objects(conn).items()
            if o.kind == codecs.Kind.RECORD
        ]
    forgets = [r for r in records if isinstance(r, journal.ForgetRecord)]
    assert [r.parents for r in forgets] == [{ids[1]: ids[0], ids[0]: None}]
    deletions = [r for r in records if isinstance(r, journal.RefRecord) and r.checkpoint is None]
    assert [r.name for r in deletions] == ["old"]


def test_keep_tagged_keeps_tagged_checkpoints_and_their_tags(store: deltastore.Store) -> None:
    ids = [store.save({"n": torch.tensor(n)}, step=n) for n in range(4)]
    store.tag("release", ids[1])
    report = store.forget(KeepPolicy(last=1, tagged=True))
    assert {c.id for c in report.forgotten} == {ids[0], ids[2]}
    assert report.kept[ids[1]] == ("tagged",)
    assert [c.id for c in store.log()] == [ids[3], ids[1]]
    assert store.refs()["release"] == ("tag", ids[1])


def test_forget_on_one_branch_leaves_the_others_alone(store: deltastore.Store) -> None:
    main = [store.save({"n": torch.tensor(n)}, step=n) for n in range(3)]
    store.branch("side", main[0])
    side = [store.save({"s": torch.tensor(n)}, step=n, branch="side") for n in range(3)]
    report = store.forget(KeepPolicy(last=1), branches=["side"])
    assert {c.id for c in report.forgotten} == set(side[:2])  # main[0] is main's too
    assert [c.id for c in store.log("side")] == [side[2], main[0]]
    assert [c.id for c in store.log("main")] == main[::-1]
    with pytest.raises(RefNotFoundError, match="no branch of that name"):
        store.forget(KeepPolicy(last=1), branches=["nope"])


def test_forget_everywhere_drops_a_deleted_branchs_history(store: deltastore.Store) -> None:
    kept = store.save({"n": torch.tensor(0)})
    store.branch("tmp", kept)
    lost = store.save({"n": torch.tensor(1)}, branch="tmp")
    store.delete_ref("tmp")
    report = store.forget(KeepPolicy(last=5))
    assert [c.id for c in report.forgotten] == [lost]


def test_a_policy_without_rules_forgets_nothing(store: deltastore.Store) -> None:
    ids = [store.save({"n": torch.tensor(n)}) for n in range(3)]
    report = store.forget(KeepPolicy())
    assert report.forgotten == () and set(report.kept) == set(ids)


def test_dry_runs_change_nothing_and_forecast_the_real_runs(store_path: Path) -> None:
    with small_store(store_path) as store:
        for n in range(5):
            store.save({"model": drifting(n), "optim": torch.full((300,), float(n))}, step=n)
        store.tag("first", "main~4")
        raw = b"leftover" * 50
        store.objects.put_if_absent(hex_digest(raw), codecs.encode(raw, 1))
        store.objects.flush()
        before = snapshot(store_path)
        forget_dry = store.forget(KeepPolicy(last=3), dry_run=True)
        thin_dry = store.thin("optim", keep_newest=1, dry_run=True)
        gc_dry = store.gc(dry_run=True)
        assert snapshot(store_path) == before
        assert (len(forget_dry.forgotten), forget_dry.deleted_tags) == (2, ("first",))
        assert len(thin_dry.checkpoints) == 4 and gc_dry.files == 1

        leftover = store.gc()
        assert leftover.to_json() == {**gc_dry.to_json(), "dry_run": False}
        forgot = store.forget(KeepPolicy(last=3))
        assert forgot.to_json() == {**forget_dry.to_json(), "dry_run": False}
        assert store.gc().freed_bytes == forgot.freed_bytes


# -- thin ---------------------------------------------------------------------------------------


def training_state(n: int) -> dict[str, Any]:
    """Weights and Adam's drifting moment (deltas), small per-step state, a shared constant."""
    return {
        "model": {"w": drifting(n)},
        "optim": {
            "state": {0: {"m": drifting(n, seed=7), "step": torch.tensor(float(n))}},
            "lr": 1e-3,
            "small": [torch.full((16,), float(n)), n],
            "same": torch.arange(512.0),  # identical in every checkpoint: one shared chunk
        },
        "step": n,
    }


def thinned_state(n: int) -> dict[str, Any]:
    """training_state(n) after thin("optim/*"): leaves gone from dicts, None in lists."""
    return {
        "model": {"w": drifting(n)},
        "optim": {"state": {0: {}}, "lr": 1e-3, "small": [None, n]},
        "step": n,
    }


def test_thin_drops_matching_entries_from_older_checkpoints_only(store_path: Path) -> None:
    with small_store(store_path) as store:
        ids = [store.save(training_state(n), step=n) for n in range(3)]
        before = {cid: chunk_ids(store, cid) for cid in ids}
        rows = object_rows(store)
        logical = [store.info(cid).logical_bytes for cid in ids]

        report = store.thin("optim/*", keep_newest=1)
        paths = ["optim/state/0/m", "optim/state/0/step", "optim/small/0", "optim/same"]
        assert [(c.id, [e.key_path for e in c.entries]) for c in report.checkpoints] == [
            (ids[1], paths),
            (ids[0], paths),
        ]
        assert_same(store.load(ids[2]), training_state(2))  # the head is untouched
        for n in (0, 1):
            assert_same(store.load(ids[n]), thinned_state(n))  # weights bit-exact, optim gone
            thinned_bytes = sum(e.nbytes for e in report.checkpoints[1 - n].entries)
            assert store.info(ids[n]).logical_bytes == logical[n] - thinned_bytes
            assert [e.key_path for e in store.entries(ids[n])] == ["model/w"]
        with pytest.raises(EntryThinnedError) as thinned:
            store.load_tensor(ids[0], "optim/state/0/m")
        assert str(thinned.value) == (
            f"entry 'optim/state/0/m' of checkpoint {ids[0][:12]} was thinned away "
            "(deltastore thin); the checkpoint's other entries remain"
        )
        assert isinstance(thinned.value, EntryNotFoundError)
        with pytest.raises(EntryNotFoundError) as missing:
            store.load_tensor(ids[0], "optim/none")
        assert not isinstance(missing.value, EntryThinnedError)

        store.gc()
        old = {c for cid in ids[:2] for path in paths for c in before[cid][path]}
        head_needs = set()
        for chunk in (c for chunks in before[ids[2]].values() for c in chunks):
            while chunk is not None:
                head_needs.add(chunk)
                chunk = rows[chunk].base_id  # type: ignore[assignment]
        assert old & head_needs  # the head's optimizer moment decodes against thinned chunks
        for chunk in old:
            assert store.objects.exists(chunk) == (chunk in head_needs), chunk
        assert_same(store.load(ids[2]), training_state(2))
        assert catalog_rows_with_missing_files(store) == set()


def test_thin_leaves_the_newest_of_every_branch_whole(store: deltastore.Store) -> None:
    ids = [store.save({"optim": torch.tensor(n), "w": torch.tensor(n)}) for n in range(3)]
    store.branch("side", ids[1])  # main~1 is side's head: thinning main must not touch it
    report = store.thin("optim", keep_newest=1, branches=["main"])
    assert [c.id for c in report.checkpoints] == [ids[0]]
    assert_same(store.load("side"), {"optim": torch.tensor(1), "w": torch.tensor(1)})
    assert_same(store.load(ids[0]), {"w": torch.tensor(0)})
    with pytest.raises(ValueError, match="keep_newest must be a positive int"):
        store.thin("optim", keep_newest=0)
    with pytest.raises(ValueError, match="non-empty"):
        store.thin("", keep_newest=1)


def test_thin_pattern_stars_cross_slashes(store: deltastore.Store) -> None:
    state = {"a": {"b": {"exp_avg": torch.ones(2), "w": torch.ones(2)}}, "exp_avg": torch.ones(1)}
    store.save(state)
    store.save(state)
    report = store.thin("*exp_avg", keep_newest=1)
    assert [e.key_path for e in report.checkpoints[0].entries] == ["a/b/exp_avg", "exp_avg"]
    assert_same(store.load("main~1"), {"a": {"b": {"w": torch.ones(2)}}})


def test_a_thinned_root_array_loads_as_none(store: deltastore.Store, tmp_path: Path) -> None:
    """A state that is one tensor has the key path "", which the pattern "*" matches: once
    thinned, load and export of the older checkpoint raised a bare KeyError (a traceback on
    the command line) instead of giving the thinned state, None."""
    old = store.save(torch.ones(4))
    store.save(torch.zeros(4))
    assert [c.id for c in store.thin("*", keep_newest=1).checkpoints] == [old]
    assert store.load(old) is None
    store.export(old, tmp_path / "old.pt")
    assert torch.load(tmp_path / "old.pt", weights_only=True) is None
    assert_same(store.load("main"), torch.zeros(4))


# -- the lock protocol --------------------------------------------------------------------------


def _in_thread(target: Any) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def test_gc_waits_for_a_save_whose_objects_the_catalog_does_not_list_yet(
    store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race gc exists to lose: objects on disk, commit pending.  gc must wait for the commit."""
    written, resume = threading.Event(), threading.Event()
    original = CheckpointWriter.write_chunks

    def pausing(self: CheckpointWriter, *args: Any, **kwargs: Any) -> Any:
        result = original(self, *args, **kwargs)
        self.objects.flush()
        written.set()
        assert resume.wait(10)
        return result

    with small_store(store_path) as saver, small_store(store_path) as collector:
        saver.save({"w": drifting(0)})
        monkeypatch.setattr(CheckpointWriter, "write_chunks", pausing)
        saved: list[str] = []
        save = _in_thread(lambda: saved.append(saver.save({"w": drifting(1)})))
        assert written.wait(10)
        reports: list[Any] = []
        gc = _in_thread(lambda: reports.append(collector.gc()))
        time.sleep(0.3)
        assert gc.is_alive()  # blocked: the save holds the writer lock
        on_disk = set(saver.objects.iter_ids()) - set(object_rows(saver))
        assert on_disk  # the save's objects, unlisted: a gc now would delete them
        resume.set()
        save.join(10)
        gc.join(10)
        assert not gc.is_alive() and saved and reports
        assert reports[0].objects == 0
        assert_same(saver.load(saved[0]), {"w": drifting(1)})


def test_a_waiting_gc_holds_new_writers_back(tmp_path: Path) -> None:
    """The gate: writers arriving after gc do not starve it by overlapping each other."""
    events: list[str] = []
    inside, release = threading.Event(), threading.Event()

    def first_writer() -> None:
        with layout.writing(tmp_path):
            inside.set()
            assert release.wait(10)
            events.append("first writer done")

    def collector() -> None:
        with layout.collecting(tmp_path):
            events.append("gc")

    def late_writer() -> None:
        with layout.writing(tmp_path):
            events.append("late writer")

    first = _in_thread(first_writer)
    assert inside.wait(10)
    gc = _in_thread(collector)
    time.sleep(0.2)  # gc now holds the gate and waits for the first writer
    late = _in_thread(late_writer)
    time.sleep(0.2)
    assert events == []
    release.set()
    for thread in (first, gc, late):
        thread.join(10)
    assert events == ["first writer done", "gc", "late writer"]


# -- the command line ---------------------------------------------------------------------------


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_forget_thin_and_gc(store_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with small_store(store_path) as store:
        ids = [
            store.save(training_state(n), step=10 * n, metrics={"loss": 5.0 - n % 3})
            for n in range(5)
        ]
    root = str(store_path)
    code, out, _ = _run(capsys, "--store", root, "forget", "--keep-last", "2", "--dry-run")
    assert code == 0 and out.startswith("would forget 3 checkpoint(s), keeping 2:")
    assert "a gc would then free" in out
    code, out, _ = _run(
        capsys, "--store", root, "forget", "--keep-last", "1", "--keep-best", "loss:min:1", "--json"
    )
    data = json.loads(out)
    assert {c["id"] for c in data["forgotten"]} == {ids[0], ids[1], ids[3]}
    assert data["kept"][ids[2]] == ["best"] and data["gc"] is None
    code, out, _ = _run(capsys, "--store", root, "thin", "optim/*", "--keep-newest", "1")
    assert code == 0 and out.startswith("removed 4 entries matching 'optim/*' from 1 checkpoint(s)")
    code, out, _ = _run(capsys, "--store", root, "gc", "--dry-run", "--json")
    planned = json.loads(out)
    assert planned["dry_run"] and planned["objects"] > 0
    code, out, _ = _run(capsys, "--store", root, "gc")
    assert out.startswith(f"gc: deleted {planned['objects']} object(s)")
    code, out, _ = _run(capsys, "--store", root, "forget", "--keep-last", "1", "--prune")
    assert out.splitlines()[0] == "forgot 1 checkpoint(s), keeping 1:"
    assert out.splitlines()[-1].startswith("gc: deleted")
    code, out, _ = _run(capsys, "--store", root, "forget", "--keep-last", "1")
    assert out.splitlines() == [
        "nothing to forget; keeping 1 checkpoint(s):",
        "id            step  branch  kept by              message",
        f"{ids[4][:12]}    40  main    branch head, last 1",
    ]


def test_cli_forget_says_why_each_kept_checkpoint_stays(
    store_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bug: the text report listed what went and only counted what stayed; the reasons were
    in --json alone."""
    with small_store(store_path) as store:
        ids = [
            store.save(training_state(n), f"save {n}", step=10 * n, metrics={"loss": 5.0 - n % 3})
            for n in range(5)
        ]
        store.tag("v0", ids[0])
    code, out, _ = _run(
        capsys,
        *("--store", str(store_path), "forget", "--keep-last", "1", "--keep-every", "40"),
        *("--keep-best", "loss:min:1", "--keep-tagged", "--dry-run"),
    )
    lines = out.splitlines()
    assert code == 0 and lines[0] == "would forget 2 checkpoint(s), keeping 3:"
    kept = lines[lines.index("would keep:") + 1 : -1]
    assert kept[0].split() == ["id", "step", "branch", "kept", "by", "message"]
    assert kept[1:] == [
        f"{ids[4][:12]}    40  main    branch head, last 1, every 40 steps  save 4",
        f"{ids[2][:12]}    20  main    best 1 by loss (min)                 save 2",
        f"{ids[0][:12]}     0  main    every 40 steps, tagged               save 0",
    ]
    assert lines[-1].startswith("a gc would then free ")


def test_cli_forget_refuses_to_run_without_a_rule(
    store_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    deltastore.init(store_path)
    code, out, err = _run(capsys, "--store", str(store_path), "forget", "--prune")
    assert (code, out) == (2, "")
    assert err == (
        "deltastore: error: forget needs a rule: --keep-last, --keep-every, --keep-best "
        "or --keep-tagged\n"
    )
    with pytest.raises(SystemExit) as exited:
        main(["--store", str(store_path), "forget", "--keep-best", "loss:lowest:2"])
    assert exited.value.code == 2
    assert "the mode in 'loss:lowest:2' must be 'min' or 'max'" in capsys.readouterr().err


# -- real processes saving while gc runs --------------------------------------------------------

_CONTEXT = multiprocessing.get_context("forkserver")
_CONTEXT.set_forkserver_preload(["torch", "deltastore", "tests.test_gc"])


@functools.lru_cache(maxsize=8)
def _weights(seed: int) -> torch.Tensor:
    return torch.randn(128, 256, generator=torch.Generator().manual_seed(seed))  # 128 KiB


def process_state(writer: int, n: int) -> dict[str, Any]:
    """Drifting weights (deltas), a fresh small tensor, scalars: identified by (writer, n)."""
    g = torch.Generator().manual_seed(writer * 1000 + n)
    return {
        "w": _weights(writer) + 1e-3 * n * torch.randn(128, 256, generator=g),
        "m": torch.randn(64, generator=g),
        "id": (writer, n),
    }


def _save_many(root: str, writer: int, branch: str, count: int, start: Any) -> None:
    with deltastore.open(root, progress=False, chunk_size=CHUNK) as store:
        start.wait(60)
        for n in range(count):
            store.save(process_state(writer, n), step=n, branch=branch)


def _start_writers(root: Path, branches: list[str], count: int) -> tuple[list[Any], Any]:
    start = _CONTEXT.Barrier(len(branches) + 1)
    children = [
        _CONTEXT.Process(target=_save_many, args=(str(root), w, b, count, start))
        for w, b in enumerate(branches)
    ]
    for child in children:
        child.start()
    return children, start


def _check_everything_loads(store: deltastore.Store) -> int:
    """Every checkpoint of the catalog loads bit-exactly; no row names a missing file."""
    assert catalog_rows_with_missing_files(store) == set()
    checkpoints = store.stats().checkpoints
    for info in checkpoints:
        state = store.load(info.id)
        assert_same(state, process_state(*state["id"]))
    return len(checkpoints)


@pytest.mark.slow
def test_forget_and_gc_in_a_loop_beside_a_saving_process_lose_nothing(tmp_path: Path) -> None:
    root = tmp_path / "s"
    deltastore.init(root, chunk_size=CHUNK)
    children, start = _start_writers(root, ["main"], 20)
    forgotten = freed = rounds = 0
    with deltastore.open(root, progress=False) as store:
        start.wait(60)
        while children[0].is_alive():
            forgotten += len(store.forget(KeepPolicy(last=3)).forgotten)
            freed += store.gc().freed_bytes
            rounds += 1
        join_all(children)
        forgotten += len(store.forget(KeepPolicy(last=3)).forgotten)
        store.gc()
        assert rounds >= 3 and forgotten == 17 and freed > 0
        assert _check_everything_loads(store) == 3
        assert [c.step for c in store.log()] == [19, 18, 17]


@pytest.mark.slow
def test_four_writers_and_a_gc_beside_them_all_checkpoints_survive(tmp_path: Path) -> None:
    """Issue 6 item 7: 4 processes x 25 saves on their own branches while gc runs in a loop.

    Each round plants a crash leftover, so every gc has something to delete
    and sweeps while saves are in flight: the lock must tell the two apart.
    """
    root = tmp_path / "s"
    deltastore.init(root, chunk_size=CHUNK)
    branches = [f"w{i}" for i in range(4)]
    children, start = _start_writers(root, branches, 25)
    rounds = swept = 0
    with deltastore.open(root, progress=False) as store:
        start.wait(60)
        while any(child.is_alive() for child in children):
            raw = f"leftover {rounds}".encode() * 64
            store.objects.put_if_absent(hex_digest(raw), codecs.encode(raw, 1))
            store.objects.flush()
            swept += store.gc().files
            rounds += 1
        join_all(children)
        assert rounds >= 3 and swept >= rounds
        assert _check_everything_loads(store) == 100
        for writer, branch in enumerate(branches):
            assert [c.step for c in store.log(branch)] == list(range(24, -1, -1))
            assert store.load(branch)["id"] == (writer, 24)


def test_gc_refuses_a_catalog_that_lists_nothing_while_objects_are_on_disk(
    tmp_path: Path,
) -> None:
    """A catalog recreated empty (by an older deltastore, or copied from an empty store)
    would make every object garbage: gc refuses and deletes nothing."""
    root = tmp_path / "store"
    with deltastore.open(root, create=True, progress=False) as store:
        store.save({"w": torch.arange(4096, dtype=torch.float32)})
        before = sorted(store.objects.iter_ids())
    empty = tmp_path / "empty"
    deltastore.init(empty)
    for suffix in ("", "-wal", "-shm"):
        (root / f"{layout.CATALOG_FILE}{suffix}").unlink(missing_ok=True)
    (root / layout.CATALOG_FILE).write_bytes((empty / layout.CATALOG_FILE).read_bytes())
    with deltastore.open(root, progress=False) as store:
        with pytest.raises(CatalogDamagedError, match="lists nothing while 2 objects"):
            store.gc()
        assert sorted(store.objects.iter_ids()) == before
    assert main(["--store", str(root), "gc"]) == CatalogDamagedError.exit_code


def test_gc_sweeps_what_dead_saves_left_in_a_store_that_never_committed(
    store: deltastore.Store,
) -> None:
    """Chunks of saves that died before writing their manifest, in a store with no checkpoint
    yet, are garbage: the empty catalog is not a damaged one (no manifest is on disk)."""
    for n in range(3):
        raw = f"leftover {n}".encode() * 64
        store.objects.put_if_absent(hex_digest(raw), codecs.encode(raw, 1))
    store.objects.flush()
    assert store.gc().objects == 3
    assert list(store.objects.iter_ids()) == []


def test_gc_empties_a_store_whose_history_was_all_forgotten(store: deltastore.Store) -> None:
    store.save({"w": torch.arange(4096, dtype=torch.float32)})
    store.branch("keep")
    store.delete_ref("main")
    store.delete_ref("keep")
    store.forget(KeepPolicy(last=1))  # nothing reaches it any more: it goes
    report = store.gc()
    assert report.objects == 2  # the chunk and the manifest; the journal records stay
    assert all(journal.read(store.objects, object_id) for object_id in store.objects.iter_ids())


@pytest.fixture(params=["manifest", "chunks"])
def racing(
    request: pytest.FixtureRequest, store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[deltastore.Store, str]]:
    """A store of two versions of "w", and the older one's id: forget and gc collect it just
    before a read fetches its manifest, or decodes its chunks, as a gc in another process
    could (reads take no lock).

    Chunks are stored whole, so the older one's chunks go too (a delta's base would stay).
    """
    with deltastore.open(store_path, create=True, progress=False, delta=False) as store:
        old = store.save({"w": torch.arange(4096, dtype=torch.float32)})
        store.save({"w": torch.arange(4096, dtype=torch.float32) * 2})
        step: Any = store.objects if request.param == "manifest" else store._reader
        name = "get" if request.param == "manifest" else "restore_entries"
        real = getattr(step, name)

        def collected_first(first: str, *args: Any, **kwargs: Any) -> Any:
            if first == old:  # its manifest's id, or the checkpoint restored
                monkeypatch.setattr(step, name, real)  # once
                store.forget(KeepPolicy(last=1))
                store.gc()
            return real(first, *args, **kwargs)

        monkeypatch.setattr(step, name, collected_first)
        yield store, old


def test_a_load_racing_the_gc_that_collects_its_checkpoint_says_so(
    racing: tuple[deltastore.Store, str],
) -> None:
    """Loads take no lock: a checkpoint forgotten and collected mid-read is not 'corrupt'."""
    store, old = racing
    with pytest.raises(RefNotFoundError, match="forgotten and collected while it was read"):
        store.load_tensor(old, "w")


@pytest.mark.parametrize("older_side", ["a", "b"])
def test_a_diff_racing_the_gc_that_collects_a_side_says_so(
    racing: tuple[deltastore.Store, str], older_side: str
) -> None:
    """diff read like load but reported a side collected meanwhile as a corrupt object."""
    store, old = racing
    sides = (old, "main") if older_side == "a" else ("main", old)
    with pytest.raises(RefNotFoundError, match="forgotten and collected while") as raised:
        store.diff(*sides)
    assert raised.value.ref == old


def test_a_diff_blames_a_collected_side_only_for_its_own_objects(
    store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """a is collected mid-diff, and an object of b, which stays listed, is missing: that is
    b's corruption, not 'a was collected'."""
    with deltastore.open(store_path, create=True, progress=False, delta=False) as store:
        old = store.save({"w": torch.arange(4096, dtype=torch.float32)})
        new = store.save({"w": torch.arange(4096, dtype=torch.float32) * 2})
        for object_id in chunk_ids(store, new)["w"]:
            store.objects.delete(object_id)
        real = store._reader.restore_entries

        def collected_before_b(checkpoint_id: str, *args: Any, **kwargs: Any) -> Any:
            if checkpoint_id == new:  # a is decoded by now
                store.forget(KeepPolicy(last=1))
                store.gc()
            return real(checkpoint_id, *args, **kwargs)

        monkeypatch.setattr(store._reader, "restore_entries", collected_before_b)
        with pytest.raises(CorruptObjectError, match="missing") as raised:
            store.diff(old, new)
        assert raised.value.checkpoint_id == new


@pytest.mark.parametrize("name", ["old.safetensors", "old.pt"])
def test_an_export_racing_the_gc_that_collects_its_checkpoint_says_so(
    racing: tuple[deltastore.Store, str], tmp_path: Path, name: str
) -> None:
    """export read like load but reported its checkpoint collected meanwhile as corrupt."""
    store, old = racing
    with pytest.raises(RefNotFoundError, match="forgotten and collected while it was read"):
        store.export(old, tmp_path / name)
    assert [p.name for p in tmp_path.iterdir()] == ["store"]  # no file, no temp file


def test_a_missing_object_of_a_listed_checkpoint_is_still_corruption(
    store: deltastore.Store,
) -> None:
    checkpoint_id = store.save({"w": torch.arange(4096, dtype=torch.float32)})
    for object_id in list(store.objects.iter_ids()):
        if object_id != checkpoint_id:
            store.objects.delete(object_id)
    with pytest.raises(CorruptObjectError, match="missing"):
        store.load(checkpoint_id)


def test_a_missing_object_of_listed_checkpoints_is_corruption_to_diff_and_export(
    store: deltastore.Store, tmp_path: Path
) -> None:
    older = store.save({"w": torch.arange(4096, dtype=torch.float32)})
    store.save({"w": torch.arange(4096, dtype=torch.float32) * 2})
    for object_id in chunk_ids(store, older)["w"]:  # the newer one's delta base too
        store.objects.delete(object_id)
    with pytest.raises(CorruptObjectError, match="missing"):
        store.diff(older, "main")
    with pytest.raises(CorruptObjectError, match="missing"):
        store.diff("main", older)
    with pytest.raises(CorruptObjectError, match="missing"):
        store.export(older, tmp_path / "older.pt")
