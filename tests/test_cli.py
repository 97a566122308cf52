"""The command line: each verb's output, --json, DELTASTORE_STORE, one-line errors, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import deltastore
from deltastore.chunking import DEFAULT_CHUNK_SIZE
from deltastore.cli.common import MissingStoreError
from deltastore.cli.main import STORE_ENV, main
from deltastore.errors import (
    DeltastoreError,
    RefNotFoundError,
    SchemaVersionError,
    StoreExistsError,
    StoreNotFoundError,
)

ROOT = Path(__file__).resolve().parents[1]
MESSAGES = ["first step", "second step", "third step"]


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A store with three checkpoints on main; the entries differ in dtype and shape."""
    root = tmp_path_factory.mktemp("cli") / "store"
    with deltastore.open(root, create=True, progress=False) as store:
        ids = [
            store.save(
                {
                    "model": {"w": torch.full((32, 96), float(i)), "b": torch.zeros(3)},
                    "mask": torch.ones(5, dtype=torch.bool),
                    "step": i,
                },
                MESSAGES[i],
                step=10 * i,
                metrics={"loss": 1.0 / (i + 1), "tokens": 1000 * i},
            )
            for i in range(3)
        ]
    return root, ids


@pytest.fixture(autouse=True)
def no_store_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's own DELTASTORE_STORE must not leak into the tests."""
    monkeypatch.delenv(STORE_ENV, raising=False)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_ok(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    code, out, err = run(capsys, *argv)
    assert (code, err) == (0, ""), err
    return out


# -- init ---------------------------------------------------------------------------------------


def test_init_creates_an_empty_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "runs" / "new"
    out = run_ok(capsys, "init", str(path))
    assert out == f"initialised empty deltastore store in {path}\n"
    with deltastore.open(path) as store:
        assert list(store.log()) == []
    assert run_ok(capsys, "--store", str(path), "log") == "no checkpoints yet\n"
    assert json.loads(run_ok(capsys, "--store", str(path), "log", "--json")) == []


def test_init_takes_the_path_from_store_and_the_chunk_size(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "s"
    run_ok(capsys, "--store", str(path), "init", "--chunk-size", "4096")
    with deltastore.open(path) as store:
        assert store.chunk_size == 4096


def test_init_of_an_existing_store_keeps_it_and_does_not_call_it_empty(
    filled: tuple[Path, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    """Bug: `init` on a store holding checkpoints printed "initialised empty deltastore store".

    init is idempotent by design (the store is left as it was), but the line
    told the user their store was now empty.
    """
    root, ids = filled
    out = run_ok(capsys, "init", str(root))
    with deltastore.open(root) as store:
        assert [c.id for c in store.log()] == ids[::-1]
    assert str(root) in out and "empty" not in out


# -- log ----------------------------------------------------------------------------------------


def test_log_table_lists_ids_steps_and_messages_newest_first(
    filled: tuple[Path, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    root, ids = filled
    lines = run_ok(capsys, "--store", str(root), "log").splitlines()
    assert lines[0].split() == [
        "id",
        "created",
        "(UTC)",
        "step",
        "logical",
        "stored",
        "message",
        "metrics",
    ]
    rows = lines[1:]
    assert [row.split()[0] for row in rows] == [cid[:12] for cid in reversed(ids)]
    for row, i in zip(rows, (2, 1, 0), strict=True):
        cells = row.split()
        assert cells[3] == str(10 * i)  # after the id, date and time
        assert MESSAGES[i] in row
        assert f"loss={1.0 / (i + 1):.6g}" in row and f"tokens={1000 * i}" in row
    assert "12.0 KiB" in rows[0]  # 12288 + 12 + 5 logical bytes


def test_log_json_matches_the_api(
    filled: tuple[Path, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    root, ids = filled
    data = json.loads(run_ok(capsys, "--store", str(root), "log", "--json"))
    with deltastore.open(root) as store:
        assert data == [c.to_json() for c in store.log()]
        assert json.loads(
            run_ok(capsys, "--store", str(root), "log", "main~1", "-n", "1", "--json")
        ) == [c.to_json() for c in store.log("main~1", limit=1)]
    assert [c["id"] for c in data] == ids[::-1]
    assert data[0]["message"] == MESSAGES[2] and data[0]["step"] == 20
    assert data[0]["metrics"] == {"loss": 1.0 / 3, "tokens": 2000}


# -- show ---------------------------------------------------------------------------------------


def test_show_lists_entries_with_dtype_shape_and_bytes(
    filled: tuple[Path, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    root, ids = filled
    out = run_ok(capsys, "--store", str(root), "show", "main~1")
    lines = out.splitlines()
    assert lines[:2] == [f"checkpoint {ids[1]}", f"parent     {ids[0]}"]
    assert "step       10" in lines and "branch     main" in lines
    assert f"    {MESSAGES[1]}" in lines
    header = lines.index(next(line for line in lines if line.startswith("entry ")))
    assert lines[header].split() == ["entry", "dtype", "shape", "bytes"]
    assert [line.split() for line in lines[header + 1 :]] == [
        ["model/w", "float32", "(32,", "96)", "12,288"],
        ["model/b", "float32", "(3)", "12"],
        ["mask", "bool", "(5)", "5"],
    ]


def test_show_json_matches_the_api(
    filled: tuple[Path, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    root, ids = filled
    data = json.loads(run_ok(capsys, "--store", str(root), "show", ids[0][:8], "--json"))
    with deltastore.open(root) as store:
        expected = {
            **store.info(ids[0]).to_json(),
            "entries": [e.to_json() for e in store.entries(ids[0])],
        }
    assert data == expected
    assert data["id"] == ids[0] and data["parent"] is None
    assert [(e["key_path"], e["dtype"], e["shape"], e["nbytes"]) for e in data["entries"]] == [
        ("model/w", "float32", [32, 96], 12288),
        ("model/b", "float32", [3], 12),
        ("mask", "bool", [5], 5),
    ]


def test_show_defaults_to_main(
    filled: tuple[Path, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    root, ids = filled
    assert run_ok(capsys, "--store", str(root), "show").startswith(f"checkpoint {ids[2]}\n")


# -- stats --------------------------------------------------------------------------------------


def test_stats_table_reports_logical_stored_and_ratio(
    filled: tuple[Path, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    root, ids = filled
    lines = run_ok(capsys, "--store", str(root), "stats").splitlines()
    assert lines[0].split() == ["checkpoint", "step", "logical", "stored", "ratio"]
    with deltastore.open(root) as store:
        stats = store.stats()
    by_id = {c.short_id: c for c in stats.checkpoints}
    rows = lines[1:4]
    assert [row.split()[0] for row in rows] == [cid[:12] for cid in ids]  # oldest first
    for row in rows:
        info = by_id[row.split()[0]]
        assert row.split()[1:] == [
            str(info.step),
            *_human(info.logical_bytes).split(),
            *_human(info.stored_bytes).split(),
            f"{info.ratio:.3f}",
        ]
        assert info.logical_bytes == 12288 + 12 + 5
    assert lines[4] == ""
    assert lines[5] == (
        f"3 checkpoints, {stats.object_count} objects: 36.0 KiB logical, "
        f"{_human(stats.stored_bytes)} stored, ratio {stats.ratio:.3f}"
    )
    assert stats.stored_bytes < stats.logical_bytes  # constant tensors compress


def _human(n: float) -> str:
    return f"{n:.0f} B" if n < 1024 else f"{n / 1024:.1f} KiB"


def test_stats_json_matches_the_api(
    filled: tuple[Path, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    root, ids = filled
    data = json.loads(run_ok(capsys, "--store", str(root), "stats", "--json"))
    with deltastore.open(root) as store:
        assert data == store.stats().to_json()
    assert data["checkpoint_count"] == 3 and data["logical_bytes"] == 3 * (12288 + 12 + 5)
    assert data["ratio"] == data["stored_bytes"] / data["logical_bytes"]
    assert [c["id"] for c in data["checkpoints"]] == ids[::-1]


# -- DELTASTORE_STORE ---------------------------------------------------------------------------


def test_store_defaults_to_the_environment(
    filled: tuple[Path, list[str]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root, ids = filled
    monkeypatch.setenv(STORE_ENV, str(root))
    assert json.loads(run_ok(capsys, "show", "--json"))["id"] == ids[2]
    assert json.loads(run_ok(capsys, "stats", "--json"))["checkpoint_count"] == 3
    # --store wins over the environment
    code, _, err = run(capsys, "--store", str(tmp_path / "elsewhere"), "log")
    assert code == StoreNotFoundError.exit_code and "elsewhere" in err


def test_init_without_a_path_uses_the_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(STORE_ENV, str(tmp_path / "from-env"))
    run_ok(capsys, "init")
    with deltastore.open(tmp_path / "from-env") as store:
        assert store.chunk_size == DEFAULT_CHUNK_SIZE


# -- errors -------------------------------------------------------------------------------------


ERROR_CASES: dict[str, tuple[list[str], type[DeltastoreError], str]] = {
    "no store given": (
        ["log"],
        MissingStoreError,
        "no store given: pass --store PATH or set DELTASTORE_STORE",
    ),
    "init without a path": (["init"], MissingStoreError, "no store given"),
    "missing store": (
        ["--store", "{missing}", "show"],
        StoreNotFoundError,
        "no deltastore store at '{missing}'",
    ),
    "store path is a file": (
        ["--store", "{file}", "stats"],
        StoreNotFoundError,
        "no deltastore store at '{file}'",
    ),
    "unknown ref": (
        ["--store", "{root}", "show", "nosuch"],
        RefNotFoundError,
        "no checkpoint 'nosuch': no branch, tag or checkpoint id matches",
    ),
    "walk past the first checkpoint": (
        ["--store", "{root}", "log", "main~9"],
        RefNotFoundError,
        "no checkpoint 'main~9': history has only 3 checkpoint(s)",
    ),
    "init over a file": (
        ["init", "{file}"],
        StoreExistsError,
        "cannot create a store at '{file}': it is a file",
    ),
    "store from a newer deltastore": (
        ["--store", "{newer}", "log"],
        SchemaVersionError,
        "this store's store format is '99'",
    ),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_errors_are_one_line_with_the_error_class_exit_code(
    filled: tuple[Path, list[str]], tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    root, _ = filled
    (tmp_path / "file").write_text("not a store")
    newer = tmp_path / "newer"
    newer.mkdir()
    (newer / "FORMAT").write_text('{"deltastore_store_format": 99}\n')
    paths = {
        "root": root,
        "missing": tmp_path / "missing",
        "file": tmp_path / "file",
        "newer": newer,
    }
    argv, error_class, message = ERROR_CASES[case]
    code, out, err = run(capsys, *(arg.format(**paths) for arg in argv))
    assert code == error_class.exit_code != 0
    assert out == ""
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert err.startswith(f"deltastore: error: {message.format(**paths)}")
    assert "Traceback" not in err


def test_exit_codes_tell_the_error_classes_apart() -> None:
    codes: list[type[DeltastoreError]] = [
        MissingStoreError,
        StoreNotFoundError,
        SchemaVersionError,
        RefNotFoundError,
    ]
    assert len({c.exit_code for c in codes}) == len(codes)


def test_a_real_process_prints_one_line_and_exits_with_the_code(
    filled: tuple[Path, list[str]],
) -> None:
    root, _ = filled
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    env.pop(STORE_ENV, None)
    result = subprocess.run(
        [sys.executable, "-m", "deltastore", "--store", str(root), "show", "nosuch"],
        capture_output=True,
        text=True,
        env=env,
        cwd=root.parent,
        check=False,
        timeout=120,
    )
    assert result.returncode == RefNotFoundError.exit_code
    assert result.stdout == ""
    assert result.stderr == (
        "deltastore: error: no checkpoint 'nosuch': no branch, tag or checkpoint id matches\n"
    )
