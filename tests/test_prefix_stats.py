"""stats by key prefix: logical bytes per prefix, stored bytes with each object counted once."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import torch

import deltastore
from deltastore.catalog import audit
from deltastore.catalog.engine import read_transaction
from deltastore.cli.main import STORE_ENV, main

from .conftest import trained_like


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three saves: a frozen embedding, changing weights, Adam moments; one tensor tied twice."""
    path = tmp_path_factory.mktemp("prefix") / "store"
    embedding = trained_like((100, 64), seed=1)
    w = trained_like((64, 64), seed=2)
    with deltastore.open(path, create=True, progress=False, chunk_size=4096) as store:
        for step in range(3):
            w = w + 1e-3 * trained_like((64, 64), seed=10 + step)
            state = {
                "model": {"embed": {"weight": embedding}, "head": {"weight": w.clone()}},
                "tied": embedding.clone(),  # the same bytes under a later key path
                "optim": {"exp_avg": w * 0.1, "step": torch.tensor(step)},
            }
            store.save(state, f"step {step}", step=step)
    return path


@pytest.fixture(autouse=True)
def no_store_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(STORE_ENV, raising=False)


def object_sizes(store: deltastore.Store, key_path: str) -> int:
    """Stored bytes of the distinct objects a key path names, over every checkpoint."""
    with read_transaction(store.engine) as conn:
        ids = {o for o, path in audit.chunk_references(conn) if path == key_path}
        sizes = audit.stored_sizes(conn)
    return sum(sizes[i] for i in ids)


def test_logical_bytes_are_summed_per_prefix_over_every_checkpoint(root: Path) -> None:
    with deltastore.open(root, progress=False) as store:
        report = store.stats_by_prefix()
        expected: Counter[str] = Counter()
        for c in store.stats().checkpoints:
            for e in store.entries(c.id):
                expected[e.key_path.split("/")[0]] += e.nbytes
    assert {p.prefix: p.logical_bytes for p in report.prefixes} == dict(expected)
    assert report.logical_bytes == 3 * (2 * 100 * 64 * 4 + 2 * 64 * 64 * 4 + 8)


def test_each_object_is_stored_once_under_the_first_entry_that_uses_it(root: Path) -> None:
    with deltastore.open(root, progress=False) as store:
        report = store.stats_by_prefix(depth=2)
        prefixes = {p.prefix: p for p in report.prefixes}
        embedding = object_sizes(store, "model/embed/weight")
        assert prefixes["model/embed"].stored_bytes == embedding  # saved 3 times, stored once
        assert prefixes["model/embed"].objects == 7  # 25600 bytes in 4096-byte chunks
        tied = prefixes["tied"]  # its chunks were the embedding's already
        assert (tied.logical_bytes, tied.stored_bytes, tied.objects) == (3 * 25600, 0, 0)
        assert prefixes["model/head"].stored_bytes == object_sizes(store, "model/head/weight")
        assert report.stored_bytes + report.other_stored_bytes == store.stats().stored_bytes
        assert report.other_stored_bytes > 0  # the three manifests
        assert prefixes["model/embed"].ratio == embedding / (3 * 100 * 64 * 4)


def test_one_checkpoint_counts_its_own_entries_and_objects(root: Path) -> None:
    with deltastore.open(root, progress=False) as store:
        head = store.resolve("main")
        report = store.stats_by_prefix(depth=1, ref="main~0")
        with read_transaction(store.engine) as conn:
            names = {o for o, _ in audit.chunk_references(conn, head)}
            sizes = audit.stored_sizes(conn)
        entries = store.entries(head)
    assert report.checkpoint_id == head
    assert report.logical_bytes == sum(e.nbytes for e in entries)
    assert report.stored_bytes == sum(sizes[i] for i in names)
    assert report.other_stored_bytes == sizes[head]  # its manifest
    assert {p.prefix for p in report.prefixes} == {"model", "optim", "tied"}


def test_cli_stats_by_prefix_table_and_json(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with deltastore.open(root, progress=False) as store:
        report = store.stats_by_prefix(depth=2, ref="main~1")
    assert main(["--store", str(root), "stats", "--depth", "2", "--ref", "main~1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == report.to_json()
    assert main(["--store", str(root), "stats", "--by-prefix"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["prefix", "logical", "stored", "ratio", "objects"]
    assert [line.split()[0] for line in lines[1:3]] == ["model", "optim"]
    assert lines[-1].startswith("all checkpoints: ")
    with pytest.raises(SystemExit) as exit_info:
        main(["--store", str(root), "stats", "--depth", "0"])
    assert exit_info.value.code == 2
    assert "must be 1 or more" in capsys.readouterr().err
