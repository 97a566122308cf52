"""Every error deltastore raises: its exact message, builtin base and attributes."""

from __future__ import annotations

import errno

import deltastore
from deltastore import errors


def test_store_not_found() -> None:
    err = errors.StoreNotFoundError("runs/x")
    assert isinstance(err, FileNotFoundError) and err.path == "runs/x"
    assert str(err) == (
        "no deltastore store at 'runs/x' (create one with `deltastore init runs/x` "
        "or deltastore.open(path, create=True))"
    )


def test_store_exists() -> None:
    err = errors.StoreExistsError("p", "it is a file")
    assert isinstance(err, FileExistsError)
    assert str(err) == "cannot create a store at 'p': it is a file"


def test_schema_version() -> None:
    err = errors.SchemaVersionError("store format", "9", "up to 1")
    assert (err.what, err.found, err.supported) == ("store format", "9", "up to 1")
    assert str(err) == (
        "this store's store format is '9', newer than this deltastore supports (up to 1); "
        "upgrade deltastore to open it. Nothing was changed."
    )


def test_unsupported_type() -> None:
    err = errors.UnsupportedTypeError("a/b", "builtins.set", "why")
    assert isinstance(err, TypeError)
    assert (err.key_path, err.type_name, err.reason) == ("a/b", "builtins.set", "why")
    assert str(err) == "cannot store builtins.set at key path 'a/b': why"
    assert str(errors.UnsupportedTypeError("", "x")) == "cannot store x at key path '<root>'"


def test_ref_not_found_is_a_key_error_without_quotes() -> None:
    err = errors.RefNotFoundError("main~3", "history has only 2 checkpoint(s)")
    assert isinstance(err, KeyError) and err.ref == "main~3"
    assert str(err) == "no checkpoint 'main~3': history has only 2 checkpoint(s)"
    assert str(errors.RefNotFoundError("x")) == "no checkpoint 'x'"


def test_ambiguous_ref() -> None:
    err = errors.AmbiguousRefError("abcdef", ["abcdef" + "0" * 58, "abcdef" + "1" * 58])
    assert isinstance(err, errors.RefNotFoundError)
    assert str(err) == (
        "no checkpoint 'abcdef': prefix is ambiguous (2 matches: abcdef000000, abcdef111111)"
    )


def test_entry_not_found() -> None:
    err = errors.EntryNotFoundError("f" * 64, "model/w")
    assert isinstance(err, KeyError) and err.key_path == "model/w"
    assert str(err) == "checkpoint ffffffffffff has no array entry 'model/w'"


def test_corrupt_object_and_located() -> None:
    err = errors.CorruptObjectError("a" * 64, "object is missing")
    assert str(err) == "corrupt object aaaaaaaaaaaaaaaa: object is missing"
    located = err.located("c" * 64, "optim/state/0/exp_avg", 3)
    assert (located.object_id, located.reason) == ("a" * 64, "object is missing")
    assert (located.checkpoint_id, located.key_path, located.chunk_index) == (
        "c" * 64,
        "optim/state/0/exp_avg",
        3,
    )
    assert str(located) == (
        "corrupt object aaaaaaaaaaaaaaaa in checkpoint cccccccccccc, "
        "entry 'optim/state/0/exp_avg', chunk 3: object is missing"
    )


def test_concurrent_update() -> None:
    err = errors.ConcurrentUpdateError("main", 8)
    assert str(err) == "branch 'main' moved during the save 8 times in a row; giving up"


def test_invalid_ref_name() -> None:
    err = errors.InvalidRefNameError("a~1", "no tildes")
    assert isinstance(err, ValueError)
    assert str(err) == "invalid ref name 'a~1': no tildes"


def test_storage_error_keeps_errno() -> None:
    cause = OSError(errno.ENOSPC, "No space left on device")
    err = errors.StorageError("write object abcd", cause)
    assert isinstance(err, OSError) and err.errno == errno.ENOSPC and err.cause is cause
    assert str(err) == "could not write object abcd: No space left on device"


def test_every_error_has_a_distinct_meaningful_exit_code() -> None:
    classes = [
        getattr(errors, name)
        for name in dir(errors)
        if isinstance(getattr(errors, name), type)
        and issubclass(getattr(errors, name), deltastore.DeltastoreError)
    ]
    assert all(c.exit_code != 0 for c in classes)
    assert errors.StoreNotFoundError.exit_code != errors.RefNotFoundError.exit_code
    assert errors.CorruptObjectError.exit_code not in (1, 2)
