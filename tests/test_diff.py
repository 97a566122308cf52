"""Store.diff and `deltastore diff`: statuses, statistics checked against numpy, no decoding."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import deltastore
from deltastore import array_diff, codecs, diff
from deltastore.cli.main import STORE_ENV, main
from deltastore.diff import (
    ADDED,
    CHANGED,
    CHANGED_TYPE,
    IDENTICAL,
    REMOVED,
    THINNED,
    CheckpointDiff,
)
from deltastore.errors import RefNotFoundError
from deltastore.load import CheckpointReader

from .conftest import trained_like

#: Small chunks so that the entries below span several chunks.
CHUNK = 1024


@pytest.fixture
def small_store(tmp_path: Path) -> Any:
    with deltastore.open(tmp_path / "store", create=True, chunk_size=CHUNK, progress=False) as s:
        yield s


@pytest.fixture(autouse=True)
def no_store_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(STORE_ENV, raising=False)


def diff_of(store: deltastore.Store, a: Any, b: Any, **kwargs: Any) -> CheckpointDiff:
    """Save ``a`` then ``b`` (on main) and diff them."""
    store.save(a, "a", step=1)
    store.save(b, "b", step=2)
    return store.diff("main~1", "main", **kwargs)


def entry(result: CheckpointDiff, key_path: str) -> diff.EntryDiff:
    (found,) = [e for e in result.entries if e.key_path == key_path]
    return found


# -- the expected numbers, computed element by element in plain Python -------------------------


def expected_stats(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> dict[str, Any]:
    """What diff must report, from first principles: bits per element, Python floats.

    An element is changed when its bytes differ; its difference counts only
    then (so NaNs and infs that stay put contribute nothing).
    """
    size = a.dtype.itemsize
    raw_a, raw_b = a.tobytes(), b.tobytes()
    changed = 0
    diffs: list[complex] = []
    for i, (x, y) in enumerate(zip(a.reshape(-1).tolist(), b.reshape(-1).tolist(), strict=True)):
        if raw_a[i * size : (i + 1) * size] != raw_b[i * size : (i + 1) * size]:
            changed += 1
            diffs.append(y - x)
    magnitudes = [abs(d) for d in diffs] or [0.0]
    diff_norm = math.sqrt(math.fsum(m * m for m in magnitudes))
    base_norm = math.sqrt(math.fsum(abs(x) ** 2 for x in a.reshape(-1).tolist()))
    return {
        "changed_elements": changed,
        "changed_fraction": changed / a.size,
        "max_abs": max(magnitudes) if not any(map(math.isnan, magnitudes)) else math.nan,
        "diff_norm": diff_norm,
        "base_norm": base_norm,
    }


def assert_stats(stats: array_diff.ArrayDifference | None, expected: dict[str, Any]) -> None:
    assert stats is not None
    assert stats.changed_elements == expected["changed_elements"]
    assert stats.changed_fraction == expected["changed_fraction"]
    assert _same_float(stats.max_abs, expected["max_abs"])  # exact: one subtraction in float64
    assert stats.diff_norm == pytest.approx(expected["diff_norm"], rel=1e-12)
    assert stats.base_norm == pytest.approx(expected["base_norm"], rel=1e-12)
    assert stats.relative == pytest.approx(expected["diff_norm"] / expected["base_norm"], rel=1e-12)


def _same_float(x: Any, y: Any) -> bool:
    return (isinstance(x, float) and math.isnan(x) and math.isnan(y)) or x == y


def float_pair(n: int = 1500, seed: int = 0) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """float32 weights and a version with ~10% of them nudged, a zero turned -0.0,
    and a NaN and an inf that both versions hold unchanged."""
    a = trained_like((n,), seed).numpy()
    a[3], a[4], a[5] = 0.0, np.nan, np.inf
    b = a.copy()
    rng = np.random.default_rng(seed)
    picked = rng.choice(np.arange(10, n), size=n // 10, replace=False)
    b[picked] += rng.normal(0, 0.01, size=picked.size).astype(np.float32)
    b[3] = -0.0
    return a, b


# -- statistics ---------------------------------------------------------------------------------


@pytest.mark.parametrize("slice_elements", [1 << 20, 97, 1])
def test_float_statistics_match_an_element_by_element_computation(
    small_store: deltastore.Store, monkeypatch: pytest.MonkeyPatch, slice_elements: int
) -> None:
    """Slices combine to the same numbers whatever their size (a tensor of 1.5k elements
    spans 6 chunks; with 97- or 1-element slices the partial norms must merge exactly)."""
    monkeypatch.setattr(array_diff, "SLICE_ELEMENTS", slice_elements)
    a, b = float_pair()
    a_finite = a.copy()
    a_finite[4:6] = 0.0  # the base norm of an array holding NaN is NaN: checked below
    b_finite = b.copy()
    b_finite[4:6] = 0.0
    result = diff_of(
        small_store, {"t": torch.from_numpy(a_finite)}, {"t": torch.from_numpy(b_finite)}
    )
    found = entry(result, "t")
    assert found.status == CHANGED
    expected = expected_stats(a_finite, b_finite)
    assert expected["changed_elements"] == 1500 // 10 + 1  # the nudges and the -0.0
    assert_stats(found.stats, expected)


def test_nan_and_inf_that_stay_put_do_not_count(small_store: deltastore.Store) -> None:
    a, b = float_pair()
    stats = entry(diff_of(small_store, {"t": a}, {"t": b}), "t").stats
    assert stats is not None
    expected = expected_stats(a, b)
    assert stats.changed_elements == expected["changed_elements"]
    assert stats.max_abs == expected["max_abs"] and math.isfinite(stats.max_abs)
    assert stats.diff_norm == pytest.approx(expected["diff_norm"], rel=1e-12)
    # ‖a‖ is NaN (a holds a NaN), so the relative change is NaN, as documented
    assert stats.base_norm is not None and math.isnan(stats.base_norm)
    assert stats.relative is not None and math.isnan(stats.relative)


def test_negative_zero_is_a_change_of_size_zero(small_store: deltastore.Store) -> None:
    """Bits decide what changed: -0.0 vs 0.0 changes; a NaN with the same payload does not."""
    nan = struct.unpack("<f", struct.pack("<I", 0x7FC00123))[0]
    a = np.array([0.0, nan, 1.0, 2.0], dtype=np.float32)
    b = np.array([-0.0, nan, 1.0, 2.0], dtype=np.float32)
    stats = entry(diff_of(small_store, {"t": a}, {"t": b}), "t").stats
    assert stats is not None
    assert (stats.changed_elements, stats.max_abs, stats.diff_norm) == (1, 0.0, 0.0)


def test_relative_change_when_a_is_all_zeros(small_store: deltastore.Store) -> None:
    """‖a‖ = 0: the relative change is 0 for a zero difference, inf otherwise."""
    zeros = torch.zeros(8)
    signs = torch.zeros(8)
    signs[2] = -0.0
    moved = torch.zeros(8)
    moved[5] = 0.25
    result = diff_of(
        small_store,
        {"signs": zeros, "moved": zeros.clone()},
        {"signs": signs, "moved": moved},
    )
    signs_stats, moved_stats = entry(result, "signs").stats, entry(result, "moved").stats
    assert signs_stats is not None and moved_stats is not None
    assert (signs_stats.changed_elements, signs_stats.relative) == (1, 0.0)
    assert (moved_stats.changed_elements, moved_stats.max_abs) == (1, 0.25)
    assert moved_stats.diff_norm == 0.25 and moved_stats.relative == math.inf


def test_a_nan_that_appears_makes_the_statistics_nan(small_store: deltastore.Store) -> None:
    a = torch.ones(100)
    b = a.clone()
    b[7] = float("nan")
    b[8] = 3.0
    stats = entry(diff_of(small_store, {"t": a}, {"t": b}), "t").stats
    assert stats is not None and stats.changed_elements == 2
    assert stats.max_abs is not None and math.isnan(stats.max_abs)
    assert stats.diff_norm is not None and math.isnan(stats.diff_norm)
    assert stats.relative is not None and math.isnan(stats.relative)


def test_huge_float64_values_do_not_overflow_the_norm(small_store: deltastore.Store) -> None:
    """A naive sum of squares of 1e200 overflows to inf; the scaled norm does not."""
    a = np.array([1e200, 3e200, 0.0])
    b = np.array([-1e200, 3e200, 4e200])
    stats = entry(diff_of(small_store, {"t": a}, {"t": b}), "t").stats
    assert stats is not None
    assert stats.max_abs == 4e200
    assert stats.diff_norm == pytest.approx(math.hypot(2e200, 4e200), rel=1e-14)
    assert stats.base_norm == pytest.approx(math.hypot(1e200, 3e200), rel=1e-14)
    assert stats.relative == pytest.approx(math.hypot(2, 4) / math.hypot(1, 3), rel=1e-14)


@pytest.mark.parametrize(
    "dtype", [torch.float16, torch.bfloat16, torch.float64, torch.float8_e4m3fn]
)
def test_other_float_dtypes_widen_exactly(
    small_store: deltastore.Store, dtype: torch.dtype
) -> None:
    a = trained_like((300,), 3).to(dtype)
    b = (trained_like((300,), 3) * 1.5).to(dtype)
    b[:100] = a[:100]
    stats = entry(diff_of(small_store, {"t": a}, {"t": b}), "t").stats
    wide_a, wide_b = a.to(torch.float64).numpy(), b.to(torch.float64).numpy()
    bits_a = a.view(torch.uint8).numpy().reshape(300, -1)
    bits_b = b.view(torch.uint8).numpy().reshape(300, -1)
    changed = (bits_a != bits_b).any(axis=1)
    assert stats is not None and stats.changed_elements == int(changed.sum()) > 150
    differences = [y - x for x, y, c in zip(wide_a, wide_b, changed, strict=True) if c]
    assert stats.max_abs == max(abs(d) for d in differences)
    assert stats.diff_norm == pytest.approx(
        math.sqrt(math.fsum(d * d for d in differences)), rel=1e-12
    )
    assert stats.base_norm == pytest.approx(
        math.sqrt(math.fsum(float(x) ** 2 for x in wide_a)), rel=1e-12
    )


def test_complex_entries_use_the_magnitude_of_the_difference(
    small_store: deltastore.Store,
) -> None:
    a = np.array([1 + 1j, 2 - 1j, 0j, 5j], dtype=np.complex128)
    b = np.array([1 + 1j, 2 + 2j, 3 + 4j, 5j], dtype=np.complex128)
    stats = entry(diff_of(small_store, {"t": a}, {"t": b}), "t").stats
    assert_stats(stats, expected_stats(a, b))
    assert stats is not None and stats.max_abs == 5.0  # |3+4j|


def test_integer_entries_report_exact_max_abs_and_fraction(
    small_store: deltastore.Store,
) -> None:
    """The difference of two int64s needs 65 bits: max|Δ| must still be exact."""
    low, high = -(2**63), 2**63 - 1
    result = diff_of(
        small_store,
        {
            "i64": torch.tensor([low, 0, 5, 9]),
            "u64": torch.tensor([0, 7], dtype=torch.uint64),
            "i8": np.array([-128, 1, 2, 3, 4], dtype=np.int8),
            "be": np.array([1, 2, 3], dtype=">i4"),
            "mask": torch.tensor([True, False, True, False]),
        },
        {
            "i64": torch.tensor([high, 0, -5, 9]),
            "u64": torch.tensor([2**64 - 1, 7], dtype=torch.uint64),
            "i8": np.array([127, 1, 2, 3, 5], dtype=np.int8),
            "be": np.array([1, -70000, 3], dtype=">i4"),
            "mask": torch.tensor([False, False, True, True]),
        },
    )
    expected = {
        "i64": (2, 4, 2**64 - 1),
        "u64": (1, 2, 2**64 - 1),
        "i8": (2, 5, 255),
        "be": (1, 3, 70002),
        "mask": (2, 4, None),
    }
    for key, (changed, count, max_abs) in expected.items():
        stats = entry(result, key).stats
        assert stats is not None, key
        assert (stats.changed_elements, stats.element_count, stats.max_abs) == (
            changed,
            count,
            max_abs,
        ), key
        assert type(stats.max_abs) is type(max_abs), key  # a Python int, not a rounded float
        assert stats.changed_fraction == changed / count
        assert (stats.diff_norm, stats.base_norm, stats.relative) == (None, None, None)


# -- statuses, from the catalog -----------------------------------------------------------------


def test_statuses_added_removed_changed_type_identical_changed(
    small_store: deltastore.Store,
) -> None:
    w = trained_like((16, 16))
    result = diff_of(
        small_store,
        {
            "same": w,
            "dtype": torch.ones(4),
            "shape": torch.ones(4),
            "gone": torch.ones(2),
            "moved": torch.ones(3),
        },
        {
            "same": w.clone(),
            "dtype": torch.ones(4, dtype=torch.float64),
            "shape": torch.ones(2, 2),
            "moved": torch.tensor([1.0, 2.0, 1.0]),
            "new": torch.ones(5),
        },
    )
    statuses = {e.key_path: e.status for e in result.entries}
    assert statuses == {
        "same": IDENTICAL,
        "dtype": CHANGED_TYPE,
        "shape": CHANGED_TYPE,
        "gone": REMOVED,
        "moved": CHANGED,
        "new": ADDED,
    }
    assert entry(result, "gone").b is None and entry(result, "new").a is None
    retyped = entry(result, "shape")
    assert retyped.a is not None and retyped.b is not None
    assert (retyped.a.shape, retyped.b.shape) == ((4,), (2, 2))
    assert all(e.stats is None for e in result.entries if e.status != CHANGED)
    summary = result.to_json()["summary"]
    assert summary == {
        ADDED: 1,
        REMOVED: 1,
        CHANGED_TYPE: 2,
        CHANGED: 1,
        IDENTICAL: 1,
        THINNED: 0,
    }


def thinned_history(store: deltastore.Store) -> None:
    """Three saves of weights and optimizer state; `thin 'optim/*' --keep-newest 1` then
    leaves the optimizer state in main only."""
    for step in (1, 2, 3):
        w = trained_like((8, 8), step)
        store.save({"model": {"w": w}, "optim": {"m": w * 0.1, "n": w * 0.2}}, step=step)
    assert len(store.thin("optim/*", keep_newest=1).checkpoints) == 2


def test_entries_thinned_from_a_side_are_thinned_not_added_or_removed(
    small_store: deltastore.Store,
) -> None:
    """Bug: after `deltastore thin`, diff reported the optimizer state thinned out of the
    older checkpoint as `added` (and, the other way round, `removed`), as if the training
    had grown an optimizer.  The older manifest still lists those entries; the catalog no
    longer does: they are `thinned`, and nothing is decoded for them."""
    thinned_history(small_store)
    forward = small_store.diff("main~1", "main")
    assert [(e.key_path, e.status, e.thinned_in) for e in forward.entries] == [
        ("model/w", CHANGED, ()),
        ("optim/m", THINNED, ("a",)),
        ("optim/n", THINNED, ("a",)),
    ]
    m = entry(forward, "optim/m")
    assert m.a is None and m.b is not None and (m.b.dtype, m.b.shape) == ("float32", (8, 8))
    assert m.stats is None
    backward = small_store.diff("main", "main~1").to_json()
    assert backward["summary"][THINNED] == 2 and backward["summary"][REMOVED] == 0
    assert [(e["key_path"], e["thinned_in"]) for e in backward["entries"][1:]] == [
        ("optim/m", ["b"]),
        ("optim/n", ["b"]),
    ]
    assert backward["entries"][1]["a"] == {"dtype": "float32", "shape": [8, 8], "nbytes": 256}
    assert backward["entries"][1]["b"] is None
    both = small_store.diff("main~2", "main~1")
    assert [(e.key_path, e.status, e.thinned_in, e.a, e.b) for e in both.entries[1:]] == [
        ("optim/m", THINNED, ("a", "b"), None, None),
        ("optim/n", THINNED, ("a", "b"), None, None),
    ]
    assert [e.key_path for e in small_store.diff("main~1", "main", prefix="model/").entries] == [
        "model/w"
    ]


def test_an_entry_thinned_from_a_and_dropped_from_b_is_thinned(
    small_store: deltastore.Store,
) -> None:
    """thin wins over removed: the older side's data is gone either way."""
    small_store.save({"w": torch.ones(2), "optim": {"m": torch.ones(2)}}, step=1)
    small_store.save({"w": torch.zeros(2)}, step=2)
    small_store.thin("optim/*", keep_newest=1)
    (thinned,) = [e for e in small_store.diff("main~1", "main").entries if e.key_path != "w"]
    assert (thinned.key_path, thinned.status, thinned.thinned_in) == ("optim/m", THINNED, ("a",))


def test_identical_entries_are_found_without_decoding(
    small_store: deltastore.Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two checkpoints that share their (multi-chunk) weights and differ only in entries
    that need no numbers: diffing them must not decode a single chunk."""
    weights = {f"layer{i}": trained_like((64, 64), i) for i in range(4)}
    small_store.save({"model": weights, "old": torch.ones(3)}, step=1)
    small_store.save({"model": dict(weights), "new": torch.ones(3, dtype=torch.int8)}, step=2)

    def no_decoding(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("diff decoded a chunk")

    monkeypatch.setattr(CheckpointReader, "restore_entries", no_decoding)
    monkeypatch.setattr(CheckpointReader, "decode_chunk_into", no_decoding)
    monkeypatch.setattr(codecs, "decode_into", no_decoding)
    result = small_store.diff("main~1", "main")
    assert [(e.key_path, e.status) for e in result.entries] == [
        ("old", REMOVED),
        ("new", ADDED),
        *((f"model/layer{i}", IDENTICAL) for i in range(4)),
    ]
    # the patch bites: an entry that did change needs decoding
    small_store.save({"model": {**weights, "layer0": weights["layer0"] + 1}}, step=3)
    with pytest.raises(AssertionError, match="diff decoded a chunk"):
        small_store.diff("main~1", "main")


def test_prefix_keeps_only_matching_key_paths(small_store: deltastore.Store) -> None:
    result = diff_of(
        small_store,
        {"model": {"w": torch.ones(3), "b": torch.zeros(2)}, "optim": {"m": torch.ones(3)}},
        {"model": {"w": torch.ones(3) * 2, "b": torch.zeros(2)}, "optim": {"m": torch.zeros(3)}},
        prefix="model/",
    )
    assert {e.key_path: e.status for e in result.entries} == {
        "model/w": CHANGED,
        "model/b": IDENTICAL,
    }
    assert result.prefix == "model/"
    assert small_store.diff("main~1", "main", prefix="nothing/").entries == []


def test_entries_come_largest_change_first(small_store: deltastore.Store) -> None:
    base = torch.ones(10)
    result = diff_of(
        small_store,
        {
            "small": base,
            "big": base.clone(),
            "nan": base.clone(),
            "zero": torch.zeros(2),
            "count": torch.tensor([1, 2]),
            "same": base.clone(),
            "gone": base.clone(),
        },
        {
            "small": base + 0.001,
            "big": base * 3,
            "nan": torch.full((10,), float("nan")),
            "zero": torch.ones(2),
            "count": torch.tensor([1, 3]),
            "same": base.clone(),
        },
    )
    assert [e.key_path for e in result.entries] == [
        "gone",
        "nan",
        "zero",
        "big",
        "small",
        "count",
        "same",
    ]


def test_metric_deltas_and_steps(small_store: deltastore.Store) -> None:
    small_store.save(
        {"w": torch.ones(2)}, "first", step=100, metrics={"loss": 2.5, "acc": 0.5, "old": 3}
    )
    small_store.save(
        {"w": torch.ones(2)}, "second", step=200, metrics={"loss": 2.0, "acc": 0.5, "tokens": 7}
    )
    result = small_store.diff("main~1", "main")
    assert (result.a.step, result.b.step) == (100, 200)
    assert [m.to_json() for m in result.metrics] == [
        {"name": "loss", "status": CHANGED, "a": 2.5, "b": 2.0, "delta": -0.5},
        {"name": "acc", "status": IDENTICAL, "a": 0.5, "b": 0.5, "delta": 0.0},
        {"name": "old", "status": REMOVED, "a": 3, "b": None, "delta": None},
        {"name": "tokens", "status": ADDED, "a": None, "b": 7, "delta": None},
    ]
    data = result.to_json()
    assert data["a"] == {"id": result.a.id, "step": 100, "message": "first"}
    assert data["b"] == {"id": result.b.id, "step": 200, "message": "second"}


def test_small_batches_give_the_same_result(
    small_store: deltastore.Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Changed entries decode in batches bounded in bytes; the batching changes nothing."""
    a = {f"t{i}": trained_like((40, 10), i) for i in range(5)}
    b = {k: v * 1.01 for k, v in a.items()}
    whole = diff_of(small_store, a, b).to_json()
    monkeypatch.setattr(diff, "BATCH_BYTES", 1000)
    assert small_store.diff("main~1", "main").to_json() == whole


def test_numpy_scalars_and_parameters_compare(small_store: deltastore.Store) -> None:
    result = diff_of(
        small_store,
        {"s": np.float32(1.5), "p": torch.nn.Parameter(torch.ones(3))},
        {"s": np.float32(2.0), "p": torch.nn.Parameter(torch.tensor([1.0, 1.0, 4.0]))},
    )
    s, p = entry(result, "s").stats, entry(result, "p").stats
    assert s is not None and (s.changed_elements, s.max_abs, s.relative) == (1, 0.5, 0.5 / 1.5)
    assert p is not None and (p.changed_elements, p.max_abs) == (1, 3.0)


def test_unknown_ref_raises(small_store: deltastore.Store) -> None:
    small_store.save({"w": torch.ones(2)})
    with pytest.raises(RefNotFoundError, match="nosuch"):
        small_store.diff("main", "nosuch")


def test_progress_bar_counts_the_bytes_decoded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with deltastore.open(tmp_path / "s", create=True, progress=True) as store:
        store.save({"w": torch.ones(1000), "same": torch.ones(7)})
        store.save({"w": torch.zeros(1000), "same": torch.ones(7)})
        capsys.readouterr()
        store.diff("main~1", "main")
    err = capsys.readouterr().err
    assert "diff" in err and "7.81k/7.81k" in err  # 2 x 4000 bytes; the identical entry not


# -- the command line ---------------------------------------------------------------------------


@pytest.fixture
def cli_store(tmp_path: Path) -> Path:
    """main~1 -> main: one entry changed a lot, one a little, one int, one identical,
    one added, one removed; metrics loss and lr."""
    root = tmp_path / "cli"
    with deltastore.open(root, create=True, progress=False) as store:
        w = torch.arange(12, dtype=torch.float32).reshape(3, 4)
        store.save(
            {
                "model": {"w": w, "b": torch.ones(4), "same": torch.ones(6)},
                "step": torch.tensor([10]),
                "old": torch.ones(1),
            },
            "a",
            step=10,
            metrics={"loss": 2.0, "lr": 0.1},
        )
        store.save(
            {
                "model": {
                    "w": w * 2,
                    "b": torch.tensor([1.0, 1.0, 1.0, 1.5]),
                    "same": torch.ones(6),
                },
                "step": torch.tensor([20]),
                "new": torch.ones(2),
            },
            "b",
            step=20,
            metrics={"loss": 1.5, "lr": 0.1},
        )
    return root


def cli(capsys: pytest.CaptureFixture[str], root: Path, *argv: str) -> str:
    code = main(["--store", str(root), *argv])
    out, err = capsys.readouterr()
    assert (code, err) == (0, ""), err
    return out


def test_cli_diff_json_is_the_api_result(
    cli_store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = json.loads(cli(capsys, cli_store, "diff", "main~1", "main", "--json"))
    with deltastore.open(cli_store) as store:
        assert data == store.diff("main~1", "main").to_json()
    assert data["summary"] == {
        ADDED: 1,
        REMOVED: 1,
        CHANGED_TYPE: 0,
        CHANGED: 3,
        IDENTICAL: 1,
        THINNED: 0,
    }
    w = next(e for e in data["entries"] if e["key_path"] == "model/w")
    assert w["stats"]["changed_elements"] == 11  # 0 * 2 == 0
    assert w["stats"]["max_abs"] == 11.0 and w["stats"]["relative"] == pytest.approx(1.0)
    assert w["a"] == {"dtype": "float32", "shape": [3, 4], "nbytes": 48}
    assert data["metrics"][0] == {
        "name": "loss",
        "status": CHANGED,
        "a": 2.0,
        "b": 1.5,
        "delta": -0.5,
    }


def test_cli_diff_table_is_sorted_and_summarises_identical_entries(
    cli_store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = cli(capsys, cli_store, "diff", "main~1", "main").splitlines()
    assert lines[1].split()[:3] == ["a", lines[1].split()[1], "10"]
    assert lines[2].split()[2] == "20"
    header = lines.index(next(line for line in lines if line.startswith("status")))
    assert lines[header].split() == [
        "status", "key", "path", "dtype", "shape", "max|Δ|", "‖Δ‖", "rel", "changed%"
    ]  # fmt: skip
    rows = [line.split() for line in lines[header + 1 : header + 6]]
    assert rows == [
        ["removed", "old", "float32", "(1)"],
        ["added", "new", "float32", "(2)"],
        ["changed", "model/w", "float32", "(3,", "4)", "11", f"{math.sqrt(506):.4g}", "1", "91.7%"],
        ["changed", "model/b", "float32", "(4)", "0.5", "0.5", "0.25", "25%"],
        ["changed", "step", "int64", "(1)", "10", "100%"],
    ]
    assert lines[header + 6] == "1 entry identical (24 B; --all lists them)"
    metrics = lines[lines.index("") + 1 :]
    metrics = metrics[metrics.index("") + 1 :]
    assert [line.split() for line in metrics] == [
        ["metric", "a", "b", "Δ"],
        ["loss", "2", "1.5", "-0.5"],
        ["lr", "0.1", "0.1", "+0"],
    ]


def test_cli_diff_table_names_the_side_an_entry_was_thinned_from(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with deltastore.open(tmp_path / "s", create=True, chunk_size=CHUNK, progress=False) as store:
        thinned_history(store)
    rows = [
        line.split()[:5]
        for line in cli(capsys, tmp_path / "s", "diff", "main~1", "main").splitlines()
        if line.startswith("thinned")
    ]
    assert rows == [
        ["thinned", "(a)", "optim/m", "float32", "(8,"],
        ["thinned", "(a)", "optim/n", "float32", "(8,"],
    ]
    both = cli(capsys, tmp_path / "s", "diff", "main~2", "main~1").splitlines()
    assert [line.split() for line in both if line.startswith("thinned")] == [
        ["thinned", "(a,", "b)", "optim/m"],
        ["thinned", "(a,", "b)", "optim/n"],
    ]


def test_cli_diff_all_and_prefix(cli_store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = cli(capsys, cli_store, "diff", "main~1", "main", "--prefix", "model/", "--all")
    keys = [
        line.split()[1] for line in out.splitlines() if line.startswith(("changed", "identical"))
    ]
    assert keys == ["model/w", "model/b", "model/same"]
    assert "old" not in out and "identical (" not in out
    same = cli(capsys, cli_store, "diff", "main", "main", "--prefix", "model/")
    assert "all 3 entries under 'model/' identical (88 B; --all lists them)" in same  # 48 + 16 + 24
    none = cli(capsys, cli_store, "diff", "main~1", "main", "--prefix", "nope/")
    assert "no entries under 'nope/'" in none


def test_cli_diff_of_an_unknown_ref_is_one_line(
    cli_store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["--store", str(cli_store), "diff", "main", "nosuch"])
    out, err = capsys.readouterr()
    assert code == RefNotFoundError.exit_code and out == ""
    assert (
        err
        == "deltastore: error: no checkpoint 'nosuch': no branch, tag or checkpoint id matches\n"
    )
