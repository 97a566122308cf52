"""Delta encoding against keyframes: used where it pays, bounded, restorable from any version."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import text

import deltastore
from deltastore import delta
from deltastore import save as save_module
from deltastore.catalog.engine import read_transaction
from deltastore.codecs import Transform, read_header
from deltastore.retention import KeepPolicy

from .conftest import assert_same, trained_like
from .save_scenarios import SCENARIOS


def drifting_state(step: int) -> dict[str, torch.Tensor]:
    """Weights that drift a little each step (as with a small learning rate), and noise."""
    w = trained_like((256, 256))
    drift = torch.randn(256, 256, generator=torch.Generator().manual_seed(step)) * 1e-5
    noise = torch.randn(128, 128, generator=torch.Generator().manual_seed(10_000 + step))
    return {"w": w + drift * step, "noise": noise}


def object_rows(store: deltastore.Store) -> list[tuple[str, str | None, int]]:
    with read_transaction(store.engine) as conn:
        rows = conn.execute(text("SELECT id, base_id, depth FROM objects WHERE kind = 0"))
        return [(r.id, r.base_id, r.depth) for r in rows]


def entry_objects(store: deltastore.Store, ref: str, key: str) -> list[str]:
    from deltastore.catalog import queries

    with read_transaction(store.engine) as conn:
        return queries.chunk_ids_of(conn, store.resolve(ref))[key]


def test_drifting_weights_are_stored_as_deltas_and_noise_is_not(
    tmp_path: Path,
) -> None:
    with deltastore.open(tmp_path / "s", create=True, chunk_size=65536) as store:
        for step in range(1, 4):
            store.save(drifting_state(step), step=step)
        for object_id in entry_objects(store, "main", "w"):
            header = read_header(store.objects.get(object_id), object_id)
            assert header.transform == Transform.ZIGZAG_PLANES
        for object_id in entry_objects(store, "main", "noise"):
            header = read_header(store.objects.get(object_id), object_id)
            assert header.transform == Transform.PLANES
        delta_bytes = store.info("main").stored_bytes
        first_bytes = store.info("main~2").stored_bytes
        assert delta_bytes < 0.9 * first_bytes
        for step in range(1, 4):
            assert_same(store.load(f"main~{3 - step}"), drifting_state(step))


def test_catalog_records_each_delta_base_and_depth(tmp_path: Path) -> None:
    with deltastore.open(tmp_path / "s", create=True, chunk_size=65536) as store:
        for step in range(1, 4):
            store.save({"w": drifting_state(step)["w"]})
        rows = {object_id: (base, depth) for object_id, base, depth in object_rows(store)}
        for object_id, (base, depth) in rows.items():
            header = read_header(store.objects.get(object_id), object_id)
            if base is None:
                assert depth == 0 and header.base_id is None
            else:
                assert header.base_id is not None and header.base_id.hex() == base
                assert depth == rows[base][1] + 1
        assert max(depth for _, depth in rows.values()) == 1


@pytest.mark.parametrize("interval", [2, 4, 5])
def test_every_delta_is_on_a_keyframe_that_takes_at_most_interval_minus_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, interval: int
) -> None:
    """Restore cost does not grow with history: at most two decodes per chunk, whatever its age."""
    monkeypatch.setattr(delta, "KEYFRAME_INTERVAL", interval)
    with deltastore.open(tmp_path / "s", create=True, chunk_size=65536) as store:
        for step in range(1, 13):
            store.save({"w": drifting_state(step)["w"]})
        rows = object_rows(store)
        assert max(depth for _, _, depth in rows) == 1
        keyframes = [object_id for object_id, base, _ in rows if base is None]
        assert len(keyframes) == -(-12 // interval) * 4  # one every `interval` saves, 4 chunks
        deltas_on = [sum(base == k for _, base, _ in rows) for k in keyframes]
        assert max(deltas_on) == interval - 1
        for n in range(12):  # every version, oldest to newest
            assert_same(store.load(f"main~{11 - n}"), {"w": drifting_state(n + 1)["w"]})


def test_a_chunk_unchanged_since_its_keyframe_keeps_it(tmp_path: Path) -> None:
    """Deltas are counted, not saves: a chunk that stops changing takes no new keyframe."""
    w = drifting_state(1)["w"]
    with deltastore.open(tmp_path / "s", create=True, chunk_size=65536) as store:
        store.save({"w": w})
        store.save({"w": drifting_state(2)["w"]})  # a delta on the first save's keyframes
        for _ in range(6):
            store.save({"w": w})  # back to the keyframe's bytes: its own chunks again
        rows = object_rows(store)
        assert sum(base is None for _, base, _ in rows) == 4  # the first save's, only
        assert entry_objects(store, "main", "w") == entry_objects(store, "main~7", "w")


def test_keyframes_come_every_fourth_version_when_gc_collects_the_deltas(tmp_path: Path) -> None:
    """Keeping the last two checkpoints, gc removes the deltas the catalog would count: the
    writer counts its own, so a delta never spans more than three versions of drift."""
    full_saves = []
    with deltastore.open(tmp_path / "s", create=True, chunk_size=65536) as store:
        for step in range(1, 13):
            store.save({"w": drifting_state(step)["w"]})
            store.forget(KeepPolicy(last=2))
            store.gc()
            rows = {object_id: base for object_id, base, _ in object_rows(store)}
            if all(rows[c] is None for c in entry_objects(store, "main", "w")):
                full_saves.append(step)
        assert full_saves == [1, 5, 9]
        assert_same(store.load("main"), {"w": drifting_state(12)["w"]})


def test_a_chunk_unchanged_after_a_delta_is_compared_not_hashed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its own copy is kept once it is found unchanged; when it changes again, the delta's
    keyframe is decoded from the store (verified) as after a restart."""
    from deltastore import save

    hashed: list[int] = []
    real_digest = save.digest
    monkeypatch.setattr(save, "digest", lambda data: hashed.append(len(data)) or real_digest(data))
    w1, w2, w3 = (drifting_state(step)["w"] for step in (1, 2, 3))
    with deltastore.open(tmp_path / "s", create=True, chunk_size=65536) as store:
        store.save({"w": w1})
        store.save({"w": w2})  # deltas on the first save's keyframes
        store.save({"w": w2})  # unchanged: hashed (the copies kept are the keyframes')
        hashed.clear()
        store.save({"w": w2})  # unchanged again: compared with its own copy
        assert hashed == []
        store.save({"w": w3})
        rows = {object_id: base for object_id, base, _ in object_rows(store)}
        assert [rows[c] for c in entry_objects(store, "main", "w")] == entry_objects(
            store, "main~4", "w"
        )  # deltas on the same keyframes
        assert_same(store.load("main"), {"w": w3})


def test_a_training_loop_never_reads_a_base_back_from_disk(tmp_path: Path) -> None:
    """Bases come from the copies kept in memory, across keyframes; only a restart reads them."""
    root = tmp_path / "s"
    with deltastore.open(root, create=True, chunk_size=65536) as store:
        read: list[str] = []
        load_chunk = store._writer.load_chunk

        def counting(object_id: str) -> bytes:
            read.append(object_id)
            return load_chunk(object_id)

        store._writer.load_chunk = counting
        for step in range(1, 11):
            store.save(drifting_state(step))
        assert read == []
        bases = {b for _, b, _ in object_rows(store) if b is not None}
        assert len(bases) >= 8  # deltas on three generations of keyframes of "w"
    with deltastore.open(root) as store:
        read = []
        load_chunk = store._writer.load_chunk
        store._writer.load_chunk = counting
        store.save(drifting_state(11))
        # The first save after a restart decodes its bases (and "noise"'s, to measure whether
        # a delta pays for it, as no decision is remembered yet), each once.
        assert set(read) >= {b for b in object_rows_of(store, "main") if b is not None}
        assert len(read) == len(set(read))
        read.clear()
        store.save(drifting_state(12))
        assert read == []


def object_rows_of(store: deltastore.Store, ref: str) -> list[str | None]:
    """The delta base of each chunk of ``ref``'s "w"."""
    rows = {object_id: base for object_id, base, _ in object_rows(store)}
    return [rows[c] for c in entry_objects(store, ref, "w")]


def test_delta_against_a_parent_saved_by_another_process(tmp_path: Path) -> None:
    """After a restart the base comes from disk (decoded and verified), not from memory."""
    root = tmp_path / "s"
    with deltastore.open(root, create=True, chunk_size=65536) as store:
        store.save(drifting_state(1))
    with deltastore.open(root) as store:
        store.save(drifting_state(2))
        for object_id in entry_objects(store, "main", "w"):
            assert read_header(store.objects.get(object_id), object_id).base_id is not None
        assert_same(store.load("main"), drifting_state(2))


def test_in_process_saves_do_not_read_the_parent_back(tmp_path: Path) -> None:
    with deltastore.open(tmp_path / "s", create=True, chunk_size=65536) as store:
        store.save(drifting_state(1))
        reads: list[str] = []
        original = store.objects.get

        def counting_get(object_id: str) -> bytes:
            reads.append(object_id)
            return original(object_id)

        store.objects.get = counting_get  # type: ignore[method-assign]
        store.save(drifting_state(2))
        assert reads == []
        assert any(base is not None for _, base, _ in object_rows(store))


def test_in_place_updates_after_save_do_not_corrupt_the_base(tmp_path: Path) -> None:
    """The optimizer mutates tensors in place; the remembered base must be a copy."""
    with deltastore.open(tmp_path / "s", create=True, chunk_size=65536) as store:
        w = drifting_state(1)["w"]
        store.save({"w": w})
        expected_first = w.clone()
        w.add_(1e-4)
        store.save({"w": w})
        assert_same(store.load("main~1"), {"w": expected_first})
        assert_same(store.load("main"), {"w": w})


def test_delta_off_stores_full_chunks(tmp_path: Path) -> None:
    with deltastore.open(tmp_path / "s", create=True, chunk_size=65536, delta=False) as store:
        for step in range(1, 3):
            store.save(drifting_state(step))
        assert all(base is None for _, base, _ in object_rows(store))


def test_changed_shape_or_dtype_stores_full(tmp_path: Path) -> None:
    with deltastore.open(tmp_path / "s", create=True, chunk_size=65536) as store:
        w = drifting_state(1)["w"]
        store.save({"w": w})
        store.save({"w": w.double()})
        store.save({"w": w.double().reshape(128, 512)})
        assert all(base is None for _, base, _ in object_rows(store))


def test_recycled_base_buffers_never_change_a_live_base(tmp_path: Path) -> None:
    """Base copies reuse the buffers of displaced bases; no live base is ever overwritten.

    Every save of a training loop replaces its bases: the copies of save n land
    in the buffers that held the bases of save n - 1, while save n still reads
    those bases for its deltas.
    """
    chunk = 65536
    states = [drifting_state(step)["w"] for step in range(1, 10)]
    chunks_per_state = states[0].numel() * 4 // chunk
    with deltastore.open(tmp_path / "s", create=True, chunk_size=chunk) as store:
        copies = store._writer.copies
        copies.slab_chunks = chunks_per_state  # one slab per state's worth
        for w in states:
            store.save({"w": w.clone()})
        # Six saves copied their chunks (the others end a chain), into two states' worth.
        assert len(copies._ours) == 2 * chunks_per_state
        for n, w in enumerate(states):
            assert_same(store.load(f"main~{len(states) - 1 - n}"), {"w": w})
        rows = object_rows(store)
        assert sum(1 for _, base, _ in rows if base is not None) >= 6 * 4


def test_an_entrys_decision_is_reused_then_measured_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Encoding both ways doubles a single-chunk entry's work: the last decision stands in."""
    import deltastore.save as save_module

    monkeypatch.setattr(save_module, "RECHECK_EVERY", 2)
    measured: list[str] = []
    original = save_module.CheckpointWriter._store_choosing

    def counting(self: Any, chunk: Any, object_id: str, base: Any, base_bytes: Any) -> Any:
        measured.append(object_id)
        return original(self, chunk, object_id, base, base_bytes)

    monkeypatch.setattr(save_module.CheckpointWriter, "_store_choosing", counting)
    with deltastore.open(tmp_path / "s", create=True, chunk_size=1 << 20) as store:
        states = [drifting_state(step) for step in range(1, 8)]
        for state in states:
            store.save(state)
        # "w" has a base in saves 2, 3, 4, 6, 7 (three deltas per keyframe make 5 a keyframe)
        # and is measured in 2 and 6; "noise" always goes full, so has a base in saves 2-7,
        # and is measured in 2 and 5.  Measuring every time would have been 5 + 6.
        assert len(measured) == 4
        for n, state in enumerate(states):
            assert_same(store.load(f"main~{len(states) - 1 - n}"), state)
        noise = entry_objects(store, "main", "noise")
        assert all(read_header(store.objects.get(o), o).base_id is None for o in noise)


def test_unchanged_chunks_are_recognised_by_their_kept_copy_without_hashing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A frozen tensor saved again is compared with the copy kept from the last save, not hashed;
    a tensor that changed in one element is hashed and stored as its own chunk."""
    from deltastore import save

    hashed: list[int] = []
    real_digest = save.digest

    def counting_digest(data: Any) -> bytes:
        hashed.append(len(data))
        return real_digest(data)

    monkeypatch.setattr(save, "digest", counting_digest)
    frozen = trained_like((256, 256))  # 4 chunks of 64 KiB
    trained = trained_like((128, 128)) * 2  # 1 chunk
    with deltastore.open(tmp_path / "s", create=True, chunk_size=65536) as store:
        store.save({"frozen": frozen, "trained": trained})
        assert len(hashed) == 5
        hashed.clear()
        trained[7, 7] += 1
        store.save({"frozen": frozen, "trained": trained})
        assert hashed == [65536]  # only the changed chunk
        assert entry_objects(store, "main", "frozen") == entry_objects(store, "main~1", "frozen")
        assert entry_objects(store, "main", "trained") != entry_objects(store, "main~1", "trained")
        assert_same(store.load("main"), {"frozen": frozen, "trained": trained})


def test_a_chunk_changed_after_its_id_was_taken_is_stored_as_the_bytes_that_were_hashed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Id, object and kept copy come from one private snapshot of the chunk.

    The caller's memory is changed right after the chunk is hashed (as a
    racing thread would): the stored object still decodes to bytes that hash
    to its id, and the next save, comparing against the kept copy, still
    finds the caller's new bytes changed and stores them.
    """
    from deltastore import save

    w = trained_like((128, 128))
    original = w.clone()
    real_digest = save.digest
    mutated: list[bool] = []

    def digest_then_mutate(data: Any) -> bytes:
        result = real_digest(data)
        if not mutated:
            mutated.append(True)
            w.add_(1.0)  # the caller's tensor, not the snapshot being hashed
        return result

    with deltastore.open(tmp_path / "s", create=True, chunk_size=65536) as store:
        monkeypatch.setattr(save, "digest", digest_then_mutate)
        store.save({"w": w})
        monkeypatch.setattr(save, "digest", real_digest)
        assert_same(store.load("main"), {"w": original})
        store.save({"w": w})
        assert_same(store.load("main"), {"w": w})
        assert_same(store.load("main~1"), {"w": original})
        assert store.verify(full=True).ok


@pytest.mark.parametrize("size", [0, 3, 8, 64, 65, 4096, 65536 + 8])
def test_same_bytes_finds_a_difference_anywhere(size: int) -> None:
    data = bytes(range(256)) * (size // 256 + 1)
    data = data[:size]
    assert delta.same_bytes(data, bytes(data))
    for at in {0, size // 2, size - 1} if size else set():
        changed = bytearray(data)
        changed[at] ^= 1
        assert not delta.same_bytes(data, bytes(changed))
    assert not delta.same_bytes(data, data + b"\0")


@pytest.mark.parametrize("fail", ["flush", "put"])
def test_a_failed_save_gives_its_base_copies_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail: str
) -> None:
    """The copies a failing save made return to the writer's free list: a training loop whose
    disk keeps failing must not map a new slab of memory every few saves."""
    with deltastore.open(tmp_path / "s", create=True, chunk_size=65536) as store:
        copies = store._writer.copies
        store.save(drifting_state(1))
        free_before = len(copies._free)

        def failing(*args: Any, **kwargs: Any) -> None:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(store.objects, "flush" if fail == "flush" else "put_parts", failing)
        for step in range(2, 8):
            with pytest.raises(OSError):
                store.save(drifting_state(step))
        monkeypatch.undo()
        assert len(copies._free) == free_before
        store.save(drifting_state(8))
        assert_same(store.load("main"), drifting_state(8))
        assert_same(store.load("main~1"), drifting_state(1))


@settings(max_examples=200, deadline=None)
@given(
    jobs=st.lists(
        st.tuples(st.integers(1, 2 * save_module.SMALL_CHUNK_BYTES), st.booleans()), max_size=60
    ),
    shuffle=st.randoms(use_true_random=False),
)
def test_small_chunks_share_tasks_and_every_decider_is_sent_before_any_other_job(
    jobs: list[tuple[int, bool]], shuffle: Any
) -> None:
    small = save_module.SMALL_CHUNK_BYTES
    sizes = [size for size, _ in jobs]
    decides = [d for _, d in jobs]
    deciders = [k for k, d in enumerate(decides) if d]
    others = [k for k, d in enumerate(decides) if not d]
    shuffle.shuffle(deciders)
    shuffle.shuffle(others)
    order = deciders + others  # as write_chunks orders them
    tasks = save_module._tasks(order, sizes, decides)
    assert sorted(k for task in tasks for k in task) == list(range(len(jobs)))
    for task in tasks:
        assert [order.index(k) for k in task] == sorted(order.index(k) for k in task)
        if len(task) > 1:
            assert all(sizes[k] < small for k in task)
            assert sum(sizes[k] for k in task) <= save_module.SMALL_TASK_BYTES
    where = {k: i for i, task in enumerate(tasks) for k in task}
    if deciders and others:  # a job waits only for a decider: none may be sent after it
        assert max(where[k] for k in deciders) < min(where[k] for k in others)


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_saves_that_once_hung_finish(scenario: str, tmp_path: Path) -> None:
    """tests/save_scenarios.py: a decider that is an entry's small last chunk, and a chunk
    failing in a task it shares with deciders (each hung a save before it was fixed)."""
    done = subprocess.run(
        [sys.executable, "-m", "tests.save_scenarios", scenario, str(tmp_path / "s")],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=180,  # raises, and kills the hung process
        check=False,
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]


def test_a_task_cancelled_before_it_ran_fails_the_decisions_it_owed() -> None:
    """Else a chunk waiting for one in a task sent later would wait for ever (the save's
    error path cancels tasks one by one while workers take the next ones)."""
    from concurrent.futures import CancelledError, Future
    from types import SimpleNamespace

    owed = [SimpleNamespace(decides=True, decision=Future()) for _ in range(2)]
    waiting = SimpleNamespace(decides=False, decision=owed[0].decision)
    cancelled: Future[Any] = Future()
    cancelled.add_done_callback(lambda f: save_module._fail_if_cancelled([*owed, waiting], f))
    assert cancelled.cancel()
    for job in owed:
        with pytest.raises(CancelledError):
            job.decision.result(timeout=1)

    ran = [SimpleNamespace(decides=True, decision=Future())]
    finished: Future[Any] = Future()
    finished.set_result([])
    save_module._fail_if_cancelled(ran, finished)
    assert not ran[0].decision.done()  # a task that ran decided for itself
