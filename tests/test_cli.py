"""The command line: verbs, --json, DELTASTORE_STORE, one-line errors with exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import deltastore
from deltastore.cli.main import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def filled(tmp_path: Path) -> tuple[Path, list[str]]:
    root = tmp_path / "s"
    with deltastore.open(root, create=True) as store:
        ids = [
            store.save(
                {"model": {"w": torch.full((4, 8), float(i))}, "step": i},
                f"step {i}",
                step=i,
                metrics={"loss": 1.0 / (i + 1)},
            )
            for i in range(3)
        ]
    return root, ids


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_init(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "init", str(tmp_path / "new"))
    assert code == 0 and "initialised empty deltastore store" in out
    assert (tmp_path / "new" / "FORMAT").is_file()


def test_log_table_and_json(
    filled: tuple[Path, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    root, ids = filled
    code, out, _ = run(capsys, "--store", str(root), "log")
    lines = out.splitlines()
    assert code == 0 and lines[0].split()[:3] == ["id", "created", "(UTC)"]
    assert [line.split()[0] for line in lines[1:]] == [i[:12] for i in reversed(ids)]
    assert "step 2" in lines[1] and "loss=0.333333" in lines[1]
    code, out, _ = run(capsys, "--store", str(root), "log", "--json", "-n", "2")
    data = json.loads(out)
    assert [c["id"] for c in data] == ids[:0:-1]
    assert data[0]["step"] == 2 and data[0]["metrics"] == {"loss": 1.0 / 3}


def test_show(filled: tuple[Path, list[str]], capsys: pytest.CaptureFixture[str]) -> None:
    root, ids = filled
    code, out, _ = run(capsys, "--store", str(root), "show", "main~1")
    assert code == 0
    assert f"checkpoint {ids[1]}" in out and f"parent     {ids[0]}" in out
    row = next(line for line in out.splitlines() if line.startswith("model/w"))
    assert row.split() == ["model/w", "float32", "(4,", "8)", "128"]
    code, out, _ = run(capsys, "--store", str(root), "show", ids[0][:8], "--json")
    data = json.loads(out)
    assert data["id"] == ids[0]
    assert data["entries"] == [
        {
            "key_path": "model/w",
            "kind": "torch",
            "dtype": "float32",
            "shape": [4, 8],
            "nbytes": 128,
            "digest": data["entries"][0]["digest"],
            "chunk_count": 1,
        }
    ]


def test_stats(filled: tuple[Path, list[str]], capsys: pytest.CaptureFixture[str]) -> None:
    root, ids = filled
    code, out, _ = run(capsys, "--store", str(root), "stats")
    assert code == 0 and "3 checkpoints" in out and "ratio" in out
    code, out, _ = run(capsys, "--store", str(root), "stats", "--json")
    data = json.loads(out)
    assert data["checkpoint_count"] == 3 and data["logical_bytes"] == 3 * 128
    assert [c["id"] for c in data["checkpoints"]] == ids[::-1]


def test_store_from_environment(
    filled: tuple[Path, list[str]],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root, ids = filled
    monkeypatch.setenv("DELTASTORE_STORE", str(root))
    code, out, _ = run(capsys, "show", "--json")
    assert code == 0 and json.loads(out)["id"] == ids[2]


@pytest.mark.parametrize(
    ("argv", "message", "exit_code"),
    [
        (["log"], "no store given: pass --store PATH or set DELTASTORE_STORE", 2),
        (["--store", "{missing}", "log"], "no deltastore store at", 3),
        (["--store", "{root}", "show", "nosuch"], "no checkpoint 'nosuch'", 6),
        (["--store", "{root}", "show", "main~9"], "history has only 3 checkpoint(s)", 6),
    ],
)
def test_errors_are_one_line(
    filled: tuple[Path, list[str]],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    message: str,
    exit_code: int,
) -> None:
    monkeypatch.delenv("DELTASTORE_STORE", raising=False)
    root, _ = filled
    argv = [a.format(root=root, missing=root.parent / "missing") for a in argv]
    code, out, err = run(capsys, *argv)
    assert code == exit_code
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("deltastore: error: ") and message in err


def test_real_process_prints_no_traceback(filled: tuple[Path, list[str]]) -> None:
    root, _ = filled
    result = subprocess.run(
        [sys.executable, "-m", "deltastore", "--store", str(root), "show", "nosuch"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 6
    assert result.stderr.splitlines() == [
        "deltastore: error: no checkpoint 'nosuch': no branch, tag or checkpoint id matches"
    ]
    assert "Traceback" not in result.stderr
