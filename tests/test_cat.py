"""cat: an object's header, a chunk's decoded bytes, a manifest, a journal record; short ids."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import deltastore
from deltastore import codecs, journal, plumbing
from deltastore.catalog import queries
from deltastore.catalog.engine import write_transaction
from deltastore.catalog.queries import NewObject
from deltastore.cli.main import STORE_ENV, main
from deltastore.codecs import Kind
from deltastore.ids import hex_digest

from .history_fixture import History, build_history, catalog_objects, first_use


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> History:
    return build_history(tmp_path_factory.mktemp("cat") / "store")


@pytest.fixture(autouse=True)
def no_store_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(STORE_ENV, raising=False)


def cat(history: History, capsys: pytest.CaptureFixture[str], *argv: str) -> object:
    assert main(["--store", str(history.root), "cat", *argv]) == 0
    return json.loads(capsys.readouterr().out)


def stored_records(store: deltastore.Store) -> dict[str, journal.Record]:
    """Every journal record the catalog lists, read as the journal reads it."""
    return {
        i: journal.read(store.objects, i)
        for i, o in catalog_objects(store).items()
        if o.kind == Kind.RECORD
    }


def delta_of_depth(history: History, depth: int) -> str:
    with deltastore.open(history.root, progress=False) as store:
        return next(o.id for o in catalog_objects(store).values() if o.depth == depth)


def test_cat_header_shows_what_the_decoder_reads(
    history: History, capsys: pytest.CaptureFixture[str]
) -> None:
    delta_id = delta_of_depth(history, 2)
    with deltastore.open(history.root, progress=False) as store:
        data = store.objects.get(delta_id)
        row = catalog_objects(store)[delta_id]
    header = codecs.read_header(data, delta_id)
    shown = cat(history, capsys, "header", delta_id[:10])
    assert shown == {
        "id": delta_id,
        "kind": "chunk",
        "transform": "zigzag-planes",
        "element_width": 4,
        "raw_length": header.raw_length,
        "stored_length": len(data),
        "header_length": header.payload_offset,
        "base_id": row.base_id,
        "planes": [
            {"codec": p.codec.name.lower(), "stored_length": p.stored_length} for p in header.planes
        ],
    }
    planes = shown["planes"]  # type: ignore[index]
    assert header.payload_offset + sum(p["stored_length"] for p in planes) == len(data)


@pytest.mark.parametrize("depth", [0, 2])
def test_cat_chunk_writes_the_decoded_bytes_that_hash_to_the_id(
    history: History, capsysbinary: pytest.CaptureFixture[bytes], depth: int
) -> None:
    object_id = delta_of_depth(history, depth)
    assert main(["--store", str(history.root), "cat", "chunk", object_id[:8]]) == 0
    out = capsysbinary.readouterr().out
    assert hex_digest(out) == object_id
    with deltastore.open(history.root, progress=False) as store:
        checkpoint_id, key_path, index = first_use(store, object_id)
        whole = store.load_tensor(checkpoint_id, key_path).numpy().tobytes()
    assert out == whole[index * 4096 : (index + 1) * 4096]


def test_cat_manifest_prints_the_canonical_json_of_the_checkpoint(
    history: History, capsys: pytest.CaptureFixture[str]
) -> None:
    with deltastore.open(history.root, progress=False) as store:
        checkpoint_id = store.resolve("exp~1")
        parent = store.resolve("main~2")
    doc = cat(history, capsys, "manifest", "exp~1")
    assert isinstance(doc, dict)
    canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    assert hex_digest(canonical.encode()) == checkpoint_id
    assert (doc["parent"], doc["branch"], doc["step"]) == (parent, "exp", 10)
    assert [e["path"] for e in doc["entries"]] == [
        "model/w",
        "model/b",
        "model/frozen",
        "optim/m",
        "optim/count",
    ]


def test_cat_record_prints_a_journal_record(
    history: History, capsys: pytest.CaptureFixture[str]
) -> None:
    with deltastore.open(history.root, progress=False) as store:
        records = stored_records(store)
        target = store.resolve("exp~1")
    record_id = next(
        i for i, r in records.items() if isinstance(r, journal.RefRecord) and r.name == "exp-best"
    )
    doc = cat(history, capsys, "record", record_id[:12])
    assert doc == {
        "deltastore_record": 1,
        "op": "ref",
        "name": "exp-best",
        "kind": "tag",
        "checkpoint": target,
        "time_us": records[record_id].time_us,
    }
    deleted = [r for r in records.values() if isinstance(r, journal.RefRecord) and r.name == "old"]
    assert [r.checkpoint for r in deleted][-1] is None  # the deleted tag's record


def manifest_and_record_ids(history: History) -> tuple[str, str]:
    with deltastore.open(history.root, progress=False) as store:
        rows = catalog_objects(store).values()
        manifest_id = store.resolve("main")
        record_id = next(o.id for o in rows if o.kind == Kind.RECORD)
    return manifest_id, record_id


def test_cat_of_the_wrong_kind_is_a_usage_error_naming_the_right_cat(
    history: History, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bug: `cat record <a chunk id>` (and `cat chunk <a manifest id>`...) printed
    "corrupt object ...: object is a chunk, expected a record" and exited 7, the code of a
    damaged store, for a healthy object asked for under the wrong verb.  The header is now
    read first: exit 2 and the `cat` that reads the object."""
    root = str(history.root)
    chunk_id = delta_of_depth(history, 0)
    manifest_id, record_id = manifest_and_record_ids(history)
    cases = [
        ("record", chunk_id[:10], chunk_id, "chunk", "record"),
        ("chunk", manifest_id, manifest_id, "manifest", "chunk"),
        ("chunk", record_id[:8], record_id, "record", "chunk"),
        ("record", manifest_id, manifest_id, "manifest", "record"),
        ("manifest", chunk_id[:12], chunk_id, "chunk", "manifest"),  # not a ref: an object id
        ("manifest", record_id, record_id, "record", "manifest"),
    ]
    for verb, name, object_id, kind, expected in cases:
        assert main(["--store", root, "cat", verb, name]) == 2, (verb, kind)
        short = object_id[:12]
        assert capsys.readouterr().err == (
            f"deltastore: error: object {short} is a {kind}, not a {expected}: "
            f"try `deltastore cat {kind} {short}`\n"
        )
    with (
        deltastore.open(history.root, progress=False) as store,
        pytest.raises(deltastore.WrongObjectKindError) as caught,
    ):
        plumbing.record(store, chunk_id)
    assert (caught.value.object_id, caught.value.kind, caught.value.expected) == (
        chunk_id,
        "chunk",
        "record",
    )


def test_the_suggested_cat_reads_the_object(
    history: History, capsys: pytest.CaptureFixture[str]
) -> None:
    _, record_id = manifest_and_record_ids(history)
    assert main(["--store", str(history.root), "cat", "chunk", record_id]) == 2
    suggested = capsys.readouterr().err.split("try `deltastore ")[1].rstrip("`\n").split()
    assert suggested == ["cat", "record", record_id[:12]]
    assert cat(history, capsys, *suggested[1:])["op"] in ("ref", "forget", "thin")  # type: ignore[index]


def test_cat_names_an_unknown_id(history: History, capsys: pytest.CaptureFixture[str]) -> None:
    root = str(history.root)
    assert main(["--store", root, "cat", "header", "0123"]) == 6
    assert capsys.readouterr().err == (
        "deltastore: error: no object '0123': name an object by its id or 6 or more of its "
        "first hex digits\n"
    )
    assert main(["--store", root, "cat", "chunk", "e" * 64]) == 6
    assert capsys.readouterr().err.endswith(": no object of this id is stored\n")


def test_cat_records_lists_every_journal_record_newest_first(
    history: History, capsys: pytest.CaptureFixture[str]
) -> None:
    """Record ids were nowhere to be found: `cat record` needed one, and no verb listed them."""
    with deltastore.open(history.root, progress=False) as store:
        stored = stored_records(store)
        v1, exp_start, best = (store.resolve(r) for r in ("v1", "main~2", "exp-best"))
    listed = cat(history, capsys, "records", "--json")
    assert isinstance(listed, list)
    assert sorted(r["id"] for r in listed) == sorted(stored)
    times = [r["time_us"] for r in listed]
    assert times == sorted(times, reverse=True)
    assert all(r["time_us"] == stored[r["id"]].time_us for r in listed)
    summaries = [(r["op"], r["summary"]) for r in listed]
    # build_history: tag v1, tag old, move v1, delete old, branch exp, tag exp-best
    assert [s for _, s in summaries][:4] == [
        f"tag 'exp-best' -> {best[:12]}",
        f"branch 'exp' -> {exp_start[:12]}",
        "tag 'old' deleted",
        f"tag 'v1' -> {v1[:12]}",
    ]
    assert all(op == "ref" for op, _ in summaries)
    assert main(["--store", str(history.root), "cat", "records"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["id", "time", "op", "what"]
    assert len(lines) == 1 + len(stored)
    assert lines[1].startswith(listed[0]["id"][:12]) and lines[1].endswith(listed[0]["summary"])


def test_cat_records_of_a_store_without_any(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    deltastore.init(tmp_path / "empty")
    assert main(["--store", str(tmp_path / "empty"), "cat", "records"]) == 0
    assert capsys.readouterr().out == "no journal records yet\n"
    assert main(["--store", str(tmp_path / "empty"), "cat", "records", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_cat_refuses_an_ambiguous_prefix(
    history: History, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two listed objects share the prefix: rows made up for the test, as 24 bits rarely
    collide in a small store."""
    copy = tmp_path / "store"
    shutil.copytree(history.root, copy)
    with deltastore.open(copy, progress=False) as store:
        prefix = next(
            p
            for p in (f"{n:06x}" for n in range(1 << 24))
            if not any(i.startswith(p) for i in catalog_objects(store))
        )
        twins = [prefix + "0" * 58, prefix + "1" * 58]
        with write_transaction(store.engine) as conn:
            queries.insert_objects(conn, [(NewObject(t, Kind.CHUNK, 1, 1), 0) for t in twins])
    assert main(["--store", str(copy), "cat", "header", prefix]) == 6
    assert capsys.readouterr().err == (
        f"deltastore: error: no object '{prefix}': prefix is ambiguous (2 matches: "
        f"{twins[0][:12]}, {twins[1][:12]})\n"
    )
