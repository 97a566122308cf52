"""Every error deltastore raises: its exact message, builtin bases, attributes and exit code.

Each message is written out once here, in full: a reworded message is a
deliberate change, and a broken f-string (a literal ``{path}``) cannot pass.
"""

from __future__ import annotations

import errno
import inspect
import pickle
from dataclasses import dataclass

import pytest

import deltastore
from deltastore import errors

ID_A = "a" * 64
ID_C = "c" * 64


@dataclass(frozen=True)
class Case:
    error: errors.DeltastoreError
    message: str
    builtins: tuple[type[BaseException], ...]  # builtin classes it must also be
    exit_code: int


CASES: dict[str, Case] = {
    "root": Case(errors.DeltastoreError("something went wrong"), "something went wrong", (), 1),
    "store not found": Case(
        errors.StoreNotFoundError("runs/x"),
        "no deltastore store at 'runs/x' (create one with `deltastore init runs/x` "
        "or deltastore.open(path, create=True))",
        (FileNotFoundError, OSError),
        3,
    ),
    "store exists": Case(
        errors.StoreExistsError("runs/x", "it is a file"),
        "cannot create a store at 'runs/x': it is a file",
        (FileExistsError, OSError),
        3,
    ),
    "schema version": Case(
        errors.SchemaVersionError("catalog schema", "0009", "up to 0002"),
        "this store's catalog schema is '0009', newer than this deltastore supports "
        "(up to 0002); upgrade deltastore to open it. Nothing was changed.",
        (),
        4,
    ),
    "unsupported type": Case(
        errors.UnsupportedTypeError("optim/state/0/fn", "builtins.function", "not data"),
        "cannot store builtins.function at key path 'optim/state/0/fn': not data",
        (TypeError,),
        5,
    ),
    "unsupported type at the root": Case(
        errors.UnsupportedTypeError("", "builtins.set"),
        "cannot store builtins.set at key path '<root>'",
        (TypeError,),
        5,
    ),
    "ref not found": Case(
        errors.RefNotFoundError("main~3", "history has only 2 checkpoint(s)"),
        "no checkpoint 'main~3': history has only 2 checkpoint(s)",
        (KeyError, LookupError),
        6,
    ),
    "ref not found without a reason": Case(
        errors.RefNotFoundError("v1"), "no checkpoint 'v1'", (KeyError, LookupError), 6
    ),
    "ambiguous ref": Case(
        errors.AmbiguousRefError("abcdef", [f"abcdef{i}" + "0" * 57 for i in range(7)]),
        "no checkpoint 'abcdef': prefix is ambiguous (7 matches: abcdef000000, abcdef100000, "
        "abcdef200000, abcdef300000, abcdef400000)",
        (KeyError, LookupError),
        6,
    ),
    "entry not found": Case(
        errors.EntryNotFoundError(ID_C, "model/w"),
        "checkpoint cccccccccccc has no array entry 'model/w'",
        (KeyError, LookupError),
        6,
    ),
    "entry thinned": Case(
        errors.EntryThinnedError(ID_C, "optim/state/0/exp_avg"),
        "entry 'optim/state/0/exp_avg' of checkpoint cccccccccccc was thinned away "
        "(deltastore thin); the checkpoint's other entries remain",
        (KeyError, LookupError),
        6,
    ),
    "corrupt object": Case(
        errors.CorruptObjectError(ID_A, "object is missing"),
        "corrupt object aaaaaaaaaaaaaaaa: object is missing",
        (),
        7,
    ),
    "corrupt object, located": Case(
        errors.CorruptObjectError(
            ID_A, "bad magic", checkpoint_id=ID_C, key_path="model/w", chunk_index=0
        ),
        "corrupt object aaaaaaaaaaaaaaaa in checkpoint cccccccccccc, entry 'model/w', "
        "chunk 0: bad magic",
        (),
        7,
    ),
    "concurrent update": Case(
        errors.ConcurrentUpdateError("main", 8),
        "branch 'main' moved during the save 8 times in a row; giving up",
        (),
        8,
    ),
    "invalid ref name": Case(
        errors.InvalidRefNameError("a~1", "no '~'"),
        "invalid ref name 'a~1': no '~'",
        (ValueError,),
        2,
    ),
    "ref exists": Case(
        errors.RefExistsError("best", "tag", ID_C),
        "tag 'best' already exists (at cccccccccccc); use force to move it",
        (ValueError,),
        2,
    ),
    "async save": Case(
        errors.AsyncSaveError(200, errors.StorageError("write object abcd", OSError(28, "full"))),
        "the background save of step 200 failed: could not write object abcd: full",
        (),
        10,
    ),
    "storage": Case(
        errors.StorageError("write object abcd", OSError(errno.ENOSPC, "No space left on device")),
        "could not write object abcd: No space left on device",
        (OSError,),
        9,
    ),
    "storage, cause without errno": Case(
        errors.StorageError("sync object folders", OSError("I/O failed")),
        "could not sync object folders: I/O failed",
        (OSError,),
        9,
    ),
    # -- export and import (deltastore.exchange) --
    "export": Case(
        errors.ExportError("out.npz", "cannot tell the format"),
        "cannot export to 'out.npz': cannot tell the format",
        (ValueError,),
        21,
    ),
    "export dtype": Case(
        errors.ExportDtypeError("out.safetensors", "model/z", "complex128"),
        "cannot export to 'out.safetensors': entry 'model/z' has dtype complex128, which "
        "safetensors cannot hold (export it in the torch format)",
        (ValueError,),
        21,
    ),
    "import source": Case(
        errors.ImportSourceError("notes.txt", "not a weights file"),
        "cannot import 'notes.txt': not a weights file",
        (ValueError,),
        22,
    ),
    # -- verify, rebuild and cat --
    "object not found": Case(
        errors.ObjectNotFoundError("abc", "name an object by its id"),
        "no object 'abc': name an object by its id",
        (KeyError, LookupError),
        6,
    ),
    "ambiguous object": Case(
        errors.AmbiguousObjectError("abcdef", [f"abcdef{i}" + "0" * 57 for i in range(2)]),
        "no object 'abcdef': prefix is ambiguous (2 matches: abcdef000000, abcdef100000)",
        (KeyError, LookupError),
        6,
    ),
    "wrong object kind": Case(
        errors.WrongObjectKindError(ID_A, "chunk", "record"),
        "object aaaaaaaaaaaa is a chunk, not a record: try `deltastore cat chunk aaaaaaaaaaaa`",
        (ValueError,),
        2,
    ),
    "catalog intact": Case(
        errors.CatalogIntactError("runs/x"),
        "the catalog of 'runs/x' opens and passes a quick verify; use --force (force=True) "
        "to rebuild it anyway",
        (),
        31,
    ),
    "catalog damaged": Case(
        errors.CatalogDamagedError("runs/x", "file is not a database"),
        "the catalog of 'runs/x' cannot be read (file is not a database); `deltastore rebuild` "
        "recreates it from the objects",
        (),
        32,
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_message(name: str) -> None:
    case = CASES[name]
    assert str(case.error) == case.message
    assert isinstance(case.error, deltastore.DeltastoreError)


@pytest.mark.parametrize("name", list(CASES))
def test_builtin_bases_and_exit_code(name: str) -> None:
    case = CASES[name]
    for builtin in case.builtins:  # `except KeyError` in user code keeps working
        assert isinstance(case.error, builtin), builtin
    assert type(case.error).exit_code == case.exit_code


def test_every_error_class_is_covered() -> None:
    """A new error class must bring its message here."""
    classes = {
        cls
        for name, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, errors.DeltastoreError) and not name.startswith("_")
    }
    assert classes == {type(case.error) for case in CASES.values()}
    assert set(deltastore.__all__) >= {cls.__name__ for cls in classes}


@pytest.mark.parametrize(
    "name", ["ref not found", "ambiguous ref", "entry not found", "object not found"]
)
def test_key_errors_print_their_message_without_quotes(name: str) -> None:
    """KeyError's own __str__ would show "'no checkpoint ...'" in quotes."""
    error = CASES[name].error
    assert str(error) == error.args[0] == CASES[name].message
    assert not str(error).startswith(("'", '"'))


def test_oserror_based_errors_print_no_errno_prefix() -> None:
    """OSError's own __str__ would show "[Errno None] ..." or "[Errno 28] ..."."""
    for name in ("store not found", "store exists", "storage"):
        assert not str(CASES[name].error).startswith("[Errno")


def test_attributes() -> None:
    assert errors.StoreNotFoundError("runs/x").path == "runs/x"
    assert errors.StoreExistsError("runs/x", "it is a file").path == "runs/x"
    schema = errors.SchemaVersionError("store format", "9", "up to 1")
    assert (schema.what, schema.found, schema.supported) == ("store format", "9", "up to 1")
    unsupported = errors.UnsupportedTypeError("a/b", "builtins.set", "why")
    assert (unsupported.key_path, unsupported.type_name, unsupported.reason) == (
        "a/b",
        "builtins.set",
        "why",
    )
    ref = errors.RefNotFoundError("main~3", "too far")
    assert (ref.ref, ref.reason) == ("main~3", "too far")
    ambiguous = errors.AmbiguousRefError("abcdef", [ID_A, ID_C])
    assert (ambiguous.ref, ambiguous.candidates) == ("abcdef", [ID_A, ID_C])
    assert ambiguous.reason == "prefix is ambiguous (2 matches: aaaaaaaaaaaa, cccccccccccc)"
    entry = errors.EntryNotFoundError(ID_C, "model/w")
    assert (entry.checkpoint_id, entry.key_path) == (ID_C, "model/w")
    concurrent = errors.ConcurrentUpdateError("main", 8)
    assert (concurrent.branch, concurrent.attempts) == ("main", 8)
    assert errors.InvalidRefNameError("a~1", "no '~'").name == "a~1"


def test_storage_error_keeps_the_operating_system_error() -> None:
    cause = OSError(errno.ENOSPC, "No space left on device")
    error = errors.StorageError("write object abcd", cause)
    assert (error.what, error.cause, error.errno) == ("write object abcd", cause, errno.ENOSPC)
    assert error.strerror == "could not write object abcd: No space left on device"
    assert errors.StorageError("sync", OSError("I/O failed")).errno is None


def test_corrupt_object_attributes() -> None:
    bare = errors.CorruptObjectError(ID_A, "object is missing")
    assert (bare.object_id, bare.reason) == (ID_A, "object is missing")
    assert (bare.checkpoint_id, bare.key_path, bare.chunk_index) == (None, None, None)


def test_located_names_checkpoint_entry_and_chunk_and_leaves_the_original() -> None:
    bare = errors.CorruptObjectError(ID_A, "object is missing")
    located = bare.located(ID_C, "optim/state/0/exp_avg", 3)
    assert type(located) is errors.CorruptObjectError and located is not bare
    assert (located.object_id, located.reason) == (ID_A, "object is missing")
    assert (located.checkpoint_id, located.key_path, located.chunk_index) == (
        ID_C,
        "optim/state/0/exp_avg",
        3,
    )
    assert str(located) == (
        "corrupt object aaaaaaaaaaaaaaaa in checkpoint cccccccccccc, "
        "entry 'optim/state/0/exp_avg', chunk 3: object is missing"
    )
    assert str(bare) == "corrupt object aaaaaaaaaaaaaaaa: object is missing"
    assert bare.checkpoint_id is None


def test_located_for_a_manifest_names_only_the_checkpoint() -> None:
    located = errors.CorruptObjectError(ID_C, "bad magic").located(ID_C, None, None)
    assert (located.key_path, located.chunk_index) == (None, None)
    assert str(located) == "corrupt object cccccccccccccccc in checkpoint cccccccccccc: bad magic"


def test_located_again_replaces_the_location() -> None:
    first = errors.CorruptObjectError(ID_A, "r").located(ID_C, "a", 1)
    again = first.located(ID_A, "b", 0)
    assert (again.checkpoint_id, again.key_path, again.chunk_index) == (ID_A, "b", 0)
    assert str(again).endswith("in checkpoint aaaaaaaaaaaa, entry 'b', chunk 0: r")


def test_errors_survive_pickling() -> None:
    """Bug: most errors could not be unpickled, so they did not cross process boundaries.

    An error raised in a worker (multiprocessing, ProcessPoolExecutor, a torch
    DataLoader or spawned DDP rank saving a checkpoint) is pickled to reach the
    parent.  Exception's default __reduce__ re-calls the class with
    ``self.args`` (the formatted message alone), which does not fit these
    constructors: an EntryNotFoundError in a ProcessPoolExecutor task reached
    the caller as BrokenProcessPool.
    """
    broken: dict[str, str] = {}
    for name, case in CASES.items():
        try:
            restored = pickle.loads(pickle.dumps(case.error))
        except Exception as exc:  # what the parent process would meet
            broken[name] = f"{type(exc).__name__}: {exc}"
            continue
        if (type(restored), str(restored), _facts(restored)) != (
            type(case.error),
            str(case.error),
            _facts(case.error),
        ):
            broken[name] = f"restored as {restored!r} with {_facts(restored)}"
    assert broken == {}


def _facts(error: BaseException) -> dict[str, object]:
    """An error's attributes, with exceptions among them (a cause) compared by type and args."""
    return {
        key: (type(value), value.args) if isinstance(value, BaseException) else value
        for key, value in vars(error).items()
    }
