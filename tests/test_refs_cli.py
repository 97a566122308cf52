"""Refs on the command line: tag, branch, refs, rev-parse and log of any ref."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import deltastore
from deltastore.cli.main import STORE_ENV, main
from deltastore.errors import InvalidRefNameError, RefExistsError, RefNotFoundError


@pytest.fixture(autouse=True)
def no_store_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(STORE_ENV, raising=False)


@pytest.fixture
def history(tmp_path: Path) -> tuple[Path, list[str]]:
    """Three checkpoints on main, steps 0, 10 and 20, messages "save 0".."save 2"."""
    root = tmp_path / "store"
    with deltastore.open(root, create=True, progress=False) as store:
        ids = [
            store.save({"w": torch.full((4,), float(i))}, f"save {i}", step=10 * i)
            for i in range(3)
        ]
    return root, ids


def run(capsys: pytest.CaptureFixture[str], root: Path, *argv: str) -> tuple[int, str, str]:
    code = main(["--store", str(root), *argv])
    out, err = capsys.readouterr()
    return code, out, err


def run_ok(capsys: pytest.CaptureFixture[str], root: Path, *argv: str) -> str:
    code, out, err = run(capsys, root, *argv)
    assert (code, err) == (0, ""), err
    return out


def run_fails(
    capsys: pytest.CaptureFixture[str], root: Path, error: type[Exception], *argv: str
) -> str:
    """Run a failing command: the error class's exit code, one line on stderr, nothing else."""
    code, out, err = run(capsys, root, *argv)
    assert code == getattr(error, "exit_code", None) != 0
    assert out == ""
    assert err.startswith("deltastore: error: ") and err.count("\n") == 1, err
    return err.removeprefix("deltastore: error: ").rstrip("\n")


def refs_of(root: Path) -> dict[str, tuple[str, str]]:
    with deltastore.open(root) as store:
        return store.refs()


# -- tag ----------------------------------------------------------------------------------------


def test_tag_names_the_checkpoint_a_ref_resolves_to(
    history: tuple[Path, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    root, ids = history
    assert run_ok(capsys, root, "tag", "v1", "main~2") == f"tag 'v1' -> {ids[0][:12]} (step 0)\n"
    assert run_ok(capsys, root, "tag", "latest") == f"tag 'latest' -> {ids[2][:12]} (step 20)\n"
    assert refs_of(root) == {
        "latest": ("tag", ids[2]),
        "main": ("branch", ids[2]),
        "v1": ("tag", ids[0]),
    }


def test_tag_moves_only_with_force(
    history: tuple[Path, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    root, ids = history
    run_ok(capsys, root, "tag", "v1", "main~2")
    message = run_fails(capsys, root, RefExistsError, "tag", "v1", "main")
    assert message == f"tag 'v1' already exists (at {ids[0][:12]}); use force to move it"
    assert refs_of(root)["v1"] == ("tag", ids[0])
    out = run_ok(capsys, root, "tag", "v1", "main", "--force")
    assert out == f"moved tag 'v1' from {ids[0][:12]} to {ids[2][:12]} (step 20)\n"
    assert refs_of(root)["v1"] == ("tag", ids[2])
    # setting a tag to where it already is needs no force
    assert run_ok(capsys, root, "tag", "v1", ids[2][:8]) == (
        f"tag 'v1' already at {ids[2][:12]} (step 20)\n"
    )


def test_tag_delete_removes_the_tag_but_not_the_checkpoint(
    history: tuple[Path, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    root, ids = history
    run_ok(capsys, root, "tag", "v1", "main~1")
    assert (
        run_ok(capsys, root, "tag", "--delete", "v1") == f"deleted tag 'v1' (was {ids[1][:12]})\n"
    )
    assert "v1" not in refs_of(root)
    assert run_ok(capsys, root, "rev-parse", ids[1][:10]) == ids[1] + "\n"
    message = run_fails(capsys, root, RefNotFoundError, "tag", "-d", "v1")
    assert message == "no checkpoint 'v1': no tag of that name"


def test_tag_and_branch_json_print_the_change_as_json(
    history: tuple[Path, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    """Bug: `tag NAME --json` and `branch NAME --json` took the flag and printed text."""
    root, ids = history
    assert json.loads(run_ok(capsys, root, "tag", "v1", "main~2", "--json")) == {
        "name": "v1",
        "kind": "tag",
        "id": ids[0],
        "previous": None,
    }
    moved = json.loads(run_ok(capsys, root, "tag", "v1", "main", "--force", "--json"))
    assert (moved["id"], moved["previous"]) == (ids[2], ids[0])
    assert json.loads(run_ok(capsys, root, "branch", "exp", "main~1", "--json")) == {
        "name": "exp",
        "kind": "branch",
        "id": ids[1],
        "previous": None,
    }
    assert json.loads(run_ok(capsys, root, "branch", "--delete", "exp", "--json")) == {
        "name": "exp",
        "kind": "branch",
        "id": None,
        "previous": ids[1],
    }
    deleted = json.loads(run_ok(capsys, root, "tag", "-d", "v1", "--json"))
    assert (deleted["id"], deleted["previous"]) == (None, ids[2])
    assert refs_of(root) == {"main": ("branch", ids[2])}


REFUSED: dict[str, tuple[list[str], type[Exception], str]] = {
    # a slip of the verb must not delete the main branch
    "tag --delete of a branch": (
        ["tag", "--delete", "main"],
        RefNotFoundError,
        "no checkpoint 'main': no tag of that name ('main' is a branch)",
    ),
    "name that reads as an expression": (
        ["tag", "v~1"],
        InvalidRefNameError,
        "invalid ref name 'v~1': use letters, digits",
    ),
    "unknown ref": (
        ["tag", "v1", "nosuch"],
        RefNotFoundError,
        "no checkpoint 'nosuch': no branch, tag or checkpoint id matches",
    ),
    "walk past the first checkpoint": (
        ["branch", "exp", "main~5"],
        RefNotFoundError,
        "no checkpoint 'main~5': history has only 3 checkpoint(s)",
    ),
    "tag over a branch, even with force": (
        ["tag", "main", "main~1", "-f"],
        RefExistsError,
        "branch 'main' already exists",
    ),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_refused_ref_changes_fail_with_one_line_and_change_nothing(
    history: tuple[Path, list[str]], capsys: pytest.CaptureFixture[str], case: str
) -> None:
    root, ids = history
    argv, error, message = REFUSED[case]
    assert run_fails(capsys, root, error, *argv).startswith(message)
    assert refs_of(root) == {"main": ("branch", ids[2])}


def test_bare_tag_lists_tags_only(
    history: tuple[Path, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    root, ids = history
    assert run_ok(capsys, root, "tag") == "no tags yet\n"
    assert json.loads(run_ok(capsys, root, "tag", "--json")) == []
    run_ok(capsys, root, "tag", "v1", "main~1")
    lines = run_ok(capsys, root, "tag").splitlines()
    assert [line.split() for line in lines] == [
        ["name", "kind", "id", "step", "message"],
        ["v1", "tag", ids[1][:12], "10", "save", "1"],
    ]


# -- branch -------------------------------------------------------------------------------------


def test_branch_starts_a_line_of_history_that_saves_extend(
    history: tuple[Path, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    root, ids = history
    assert run_ok(capsys, root, "branch", "exp", "main~1") == (
        f"branch 'exp' -> {ids[1][:12]} (step 10)\n"
    )
    with deltastore.open(root, progress=False) as store:
        new = store.save({"w": torch.zeros(4)}, "on exp", step=11, branch="exp")
    assert refs_of(root) == {"exp": ("branch", new), "main": ("branch", ids[2])}
    logged = json.loads(run_ok(capsys, root, "log", "exp", "--json"))
    assert [c["id"] for c in logged] == [new, ids[1], ids[0]]
    assert logged[0]["branch"] == "exp"


def test_branch_force_and_delete(
    history: tuple[Path, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    root, ids = history
    run_ok(capsys, root, "branch", "exp", "main~2")
    run_fails(capsys, root, RefExistsError, "branch", "exp")
    run_ok(capsys, root, "branch", "exp", "--force")
    assert refs_of(root)["exp"] == ("branch", ids[2])
    run_ok(capsys, root, "tag", "v1")
    message = run_fails(capsys, root, RefNotFoundError, "branch", "--delete", "v1")
    assert message == "no checkpoint 'v1': no branch of that name ('v1' is a tag)"
    assert (
        run_ok(capsys, root, "branch", "-d", "exp") == f"deleted branch 'exp' (was {ids[2][:12]})\n"
    )
    assert set(refs_of(root)) == {"main", "v1"}
    listed = json.loads(run_ok(capsys, root, "branch", "--json"))
    assert [(r["name"], r["kind"]) for r in listed] == [("main", "branch")]


def test_delete_and_name_are_exclusive(
    history: tuple[Path, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    root, _ = history
    with pytest.raises(SystemExit) as exc:
        main(["--store", str(root), "branch", "exp", "--delete", "other"])
    assert exc.value.code == 2
    assert "not allowed with" in capsys.readouterr().err
    assert set(refs_of(root)) == {"main"}


# -- refs ---------------------------------------------------------------------------------------


def test_refs_lists_every_ref_with_its_checkpoint(
    history: tuple[Path, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    root, ids = history
    run_ok(capsys, root, "tag", "v0", "main~2")
    run_ok(capsys, root, "branch", "exp", "main~1")
    data = json.loads(run_ok(capsys, root, "refs", "--json"))
    assert data == [
        {"name": "exp", "kind": "branch", "id": ids[1], "step": 10, "message": "save 1"},
        {"name": "main", "kind": "branch", "id": ids[2], "step": 20, "message": "save 2"},
        {"name": "v0", "kind": "tag", "id": ids[0], "step": 0, "message": "save 0"},
    ]
    lines = run_ok(capsys, root, "refs").splitlines()
    assert [line.split() for line in lines] == [
        ["name", "kind", "id", "step", "message"],
        ["exp", "branch", ids[1][:12], "10", "save", "1"],
        ["main", "branch", ids[2][:12], "20", "save", "2"],
        ["v0", "tag", ids[0][:12], "0", "save", "0"],
    ]


def test_refs_of_an_empty_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    deltastore.init(tmp_path / "empty")
    assert run_ok(capsys, tmp_path / "empty", "refs") == "no refs yet\n"
    assert json.loads(run_ok(capsys, tmp_path / "empty", "refs", "--json")) == []


# -- rev-parse ----------------------------------------------------------------------------------


def test_rev_parse_prints_full_ids_of_any_ref_expression(
    history: tuple[Path, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    root, ids = history
    run_ok(capsys, root, "tag", "v1", "main~1")
    out = run_ok(capsys, root, "rev-parse", "main", "main~2", "v1", "v1~", ids[2][:7], ids[0])
    assert out.splitlines() == [ids[2], ids[0], ids[1], ids[0], ids[2], ids[0]]
    assert run_ok(capsys, root, "rev-parse", "--short", "main~1") == ids[1][:12] + "\n"
    assert json.loads(run_ok(capsys, root, "rev-parse", "v1", "main", "--json")) == [
        {"ref": "v1", "id": ids[1]},
        {"ref": "main", "id": ids[2]},
    ]


def test_rev_parse_of_an_unknown_ref_fails_with_one_line(
    history: tuple[Path, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    root, _ = history
    message = run_fails(capsys, root, RefNotFoundError, "rev-parse", "main", "nosuch")
    assert message == "no checkpoint 'nosuch': no branch, tag or checkpoint id matches"
    message = run_fails(capsys, root, RefNotFoundError, "rev-parse", "abc")
    assert message.endswith("(id prefixes need at least 6 hex digits)")


# -- log of any ref -----------------------------------------------------------------------------


def test_log_follows_tags_walks_and_limits(
    history: tuple[Path, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    root, ids = history
    run_ok(capsys, root, "tag", "v1", "main~1")
    for ref, expected in [
        ("v1", [ids[1], ids[0]]),
        ("main~2", [ids[0]]),
        (ids[1][:8], [ids[1], ids[0]]),
    ]:
        assert [c["id"] for c in json.loads(run_ok(capsys, root, "log", ref, "--json"))] == expected
    limited = json.loads(run_ok(capsys, root, "log", "--limit", "2", "--json"))
    assert [c["id"] for c in limited] == [ids[2], ids[1]]
    table = run_ok(capsys, root, "log", "v1", "-n", "1").splitlines()
    assert len(table) == 2 and table[1].startswith(ids[1][:12])
    assert json.loads(run_ok(capsys, root, "log", "-n", "0", "--json")) == []


def test_log_refuses_a_negative_limit(
    history: tuple[Path, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    """Bug: `log -n -1` printed "no checkpoints yet" for a store full of them."""
    root, _ = history
    with pytest.raises(SystemExit) as exc:
        main(["--store", str(root), "log", "-n", "-1"])
    assert exc.value.code == 2
    assert "must be 0 or more, not -1" in capsys.readouterr().err


def test_log_of_an_unknown_branch_fails(
    history: tuple[Path, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    root, _ = history
    message = run_fails(capsys, root, RefNotFoundError, "log", "exp")
    assert message == "no checkpoint 'exp': no branch, tag or checkpoint id matches"
