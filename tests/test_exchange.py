"""Export to safetensors / torch.save and import of .pt, .safetensors and model folders.

Round trips compare bits (tests/conftest.py ``assert_same``/``tensor_bits``), and every
refusal is checked to leave nothing behind: no file on export, no checkpoint on import.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import struct
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import deltastore
from deltastore.cli.main import STORE_ENV, main
from deltastore.errors import (
    CorruptObjectError,
    ExportDtypeError,
    ExportError,
    ImportSourceError,
    RefNotFoundError,
)
from deltastore.exchange.atomic import atomic_file
from deltastore.exchange.sources import natural_key, step_from_name
from deltastore.load import CheckpointReader
from tests.conftest import assert_same, tensor_bits, trained_like

# -- helpers ------------------------------------------------------------------------------------


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def store_snapshot(store: deltastore.Store) -> tuple[Any, ...]:
    """Everything an import could change: checkpoints, refs, objects."""
    stats = store.stats()
    return (
        [c.id for c in stats.checkpoints],
        store.refs(),
        stats.object_count,
        sorted(p.name for p in (store.root / "objects").rglob("*") if p.is_file()),
    )


def as_torch(value: Any) -> Any:
    """What a numpy leaf becomes in an export: a tensor of the same dtype and values."""
    if isinstance(value, (np.ndarray, np.generic)):
        arr = np.asarray(value)
        return torch.from_numpy(arr.astype(arr.dtype.newbyteorder("="), order="C"))
    if isinstance(value, dict):
        return type(value)((k, as_torch(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return type(value)(as_torch(v) for v in value)
    return value


def mixed_dtypes() -> dict[str, Any]:
    """One entry per dtype safetensors holds, including non-contiguous views."""
    g = torch.Generator().manual_seed(1)
    base = trained_like((24, 16))
    return {
        "f32": base,
        "f32_transposed": base.t(),  # non-contiguous
        "f32_strided": base[::3, 1::2],  # non-contiguous with an offset
        "f64": base.double(),
        "f16": base.half(),
        "bf16": base.bfloat16().t(),
        "f8": base.to(torch.float8_e4m3fn),
        "c64": torch.complex(base, -base),
        "i8": torch.randint(-128, 127, (7, 5), generator=g, dtype=torch.int8),
        "u8": torch.randint(0, 255, (9,), generator=g, dtype=torch.uint8),
        "i16": torch.randint(-(2**15), 2**15 - 1, (4, 4), generator=g, dtype=torch.int16),
        "i32": torch.randint(-(2**31), 2**31 - 1, (6,), generator=g, dtype=torch.int32),
        "i64": torch.randint(-(2**62), 2**62, (3, 2), generator=g, dtype=torch.int64),
        "u16": torch.randint(0, 2**15, (5,), generator=g, dtype=torch.int32).to(torch.uint16),
        "bool": torch.rand(11, generator=g) > 0.5,
        "scalar": torch.tensor(-0.0),
        "empty": torch.empty(0, 3),
        "nan_payload": torch.tensor([0x7FC00001, 0x7F800001], dtype=torch.int32).view(
            torch.float32
        ),
    }


# -- export: safetensors ------------------------------------------------------------------------


def test_safetensors_export_is_bit_exact_for_every_dtype_and_layout(
    store: deltastore.Store, tmp_path: Path
) -> None:
    tensors = mixed_dtypes()
    store.save({"model": tensors, "step": 5}, "five", step=5, metrics={"loss": 0.25})
    out = store.export("main", tmp_path / "all.safetensors")
    assert out == tmp_path / "all.safetensors"
    loaded = load_file(out)
    assert sorted(loaded) == sorted(f"model/{k}" for k in tensors)
    for key, tensor in tensors.items():
        got = loaded[f"model/{key}"]
        assert (got.dtype, got.shape) == (tensor.dtype, tensor.shape), key
        assert tensor_bits(got) == tensor_bits(tensor), key
    with safe_open(str(out), framework="pt") as f:
        assert f.offset_keys() == [f"model/{k}" for k in tensors]  # written in state order
        assert f.metadata() == {
            "format": "pt",
            "deltastore.checkpoint": store.resolve("main"),
            "deltastore.step": "5",
            "deltastore.message": "five",
            "deltastore.metrics": '{"loss": 0.25}',
        }


def test_safetensors_export_turns_numpy_arrays_into_tensors_of_the_same_values(
    store: deltastore.Store, tmp_path: Path
) -> None:
    arrays = {
        "f4": np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4),
        "big_endian": np.arange(-3, 3, dtype=">i8"),
        "f2": np.array([1.5, -0.0, np.inf], dtype=np.float16),
        "u4": np.array([0, 2**32 - 1], dtype=np.uint32),
        "scalar": np.float64(math.pi),
    }
    store.save(arrays)
    loaded = load_file(store.export("main", tmp_path / "np.safetensors"))
    for key, arr in arrays.items():
        assert_same(as_torch(arr), loaded[key])


def test_prefix_is_stripped_so_load_state_dict_takes_the_file(
    store: deltastore.Store, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.LayerNorm(4))
    optim = torch.optim.Adam(model.parameters())
    model(torch.randn(2, 8)).sum().backward()
    optim.step()
    store.save({"model": model.state_dict(), "optim": optim.state_dict(), "step": 1})
    out = store.export("main", tmp_path / "model.safetensors", prefix="model/")
    fresh = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.LayerNorm(4))
    fresh.load_state_dict(load_file(out))  # strict: exactly the model's keys
    assert_same(dict(fresh.state_dict()), dict(model.state_dict()))
    with safe_open(str(out), framework="pt") as f:
        assert f.metadata()["deltastore.prefix"] == "model"


def test_names_undo_the_key_path_escaping(store: deltastore.Store, tmp_path: Path) -> None:
    """A flat dict's keys come back exactly, '/' and '~' included."""
    a, b = torch.ones(2), torch.zeros(3)
    store.save({"enc/dec": {"w~1": a, "layer/0": b}, 3: {"x": a}})
    loaded = load_file(store.export("main", tmp_path / "sub.safetensors", prefix="enc~1dec"))
    assert sorted(loaded) == ["layer/0", "w~1"]
    assert tensor_bits(loaded["w~1"]) == tensor_bits(a)
    int_key = load_file(store.export("main", tmp_path / "int.safetensors", prefix="3/"))
    assert list(int_key) == ["x"]


def test_a_prefix_naming_one_entry_exports_that_entry(
    store: deltastore.Store, tmp_path: Path
) -> None:
    w = trained_like((4, 4))
    store.save({"model": {"fc.weight": w}})
    loaded = load_file(store.export("main", tmp_path / "w.safetensors", prefix="model/fc.weight"))
    assert list(loaded) == ["fc.weight"] and torch.equal(loaded["fc.weight"], w)


def test_two_entries_with_one_name_are_refused(store: deltastore.Store, tmp_path: Path) -> None:
    store.save({"a/b": torch.ones(1), "a": {"b": torch.zeros(1)}})
    with pytest.raises(ExportError, match="entries 'a/b' and entry 'a~1b' would share the name"):
        store.export("main", tmp_path / "x.safetensors")
    assert files_in(tmp_path) == ["store"]


def test_a_dtype_safetensors_lacks_is_refused_before_any_file(
    store: deltastore.Store, tmp_path: Path
) -> None:
    store.save({"ok": torch.ones(3), "z": torch.ones(2, dtype=torch.complex128)})
    out = tmp_path / "x.safetensors"
    with pytest.raises(ExportDtypeError) as caught:
        store.export("main", out)
    assert (caught.value.key_path, caught.value.dtype, caught.value.path) == (
        "z",
        "complex128",
        str(out),
    )
    assert "which safetensors cannot hold (export it in the torch format)" in str(caught.value)
    assert files_in(tmp_path) == ["store"]
    restored = torch.load(store.export("main", tmp_path / "x.pt"), weights_only=True)
    assert restored["z"].dtype == torch.complex128  # the torch format holds it


def test_nothing_under_the_prefix_is_refused(store: deltastore.Store, tmp_path: Path) -> None:
    store.save({"model": {"w": torch.ones(1)}, "step": 3})
    cid = store.resolve("main")
    with pytest.raises(
        ExportError, match=f"checkpoint {cid[:12]} has no array entries under 'opt'"
    ):
        store.export("main", tmp_path / "x.safetensors", prefix="opt/")
    with pytest.raises(ExportError, match=f"checkpoint {cid[:12]} has no key path 'opt'"):
        store.export("main", tmp_path / "x.pt", prefix="opt")
    with pytest.raises(ExportError, match="has no array entries under 'step'"):
        store.export("main", tmp_path / "x.safetensors", prefix="step")
    assert files_in(tmp_path) == ["store"]


def test_format_comes_from_the_extension_or_is_named(
    store: deltastore.Store, tmp_path: Path
) -> None:
    store.save({"w": torch.ones(2)})
    with pytest.raises(ExportError, match=r"cannot tell the format from the extension '\.npz'"):
        store.export("main", tmp_path / "x.npz")
    with pytest.raises(ExportError, match="unknown format 'onnx'"):
        store.export("main", tmp_path / "x.pt", format="onnx")
    named = store.export("main", tmp_path / "weights.bin", format="safetensors")
    assert list(load_file(named)) == ["w"]
    torch_named = store.export("main", tmp_path / "weights", format="torch")
    assert torch.equal(torch.load(torch_named, weights_only=True)["w"], torch.ones(2))


def test_a_missing_ref_leaves_no_file(store: deltastore.Store, tmp_path: Path) -> None:
    store.save({"w": torch.ones(2)})
    for name in ("x.safetensors", "x.pt"):
        with pytest.raises(RefNotFoundError):
            store.export("nope", tmp_path / name)
    assert files_in(tmp_path) == ["store"]


def test_an_export_failing_midway_keeps_the_old_file_and_leaves_no_temp(
    store: deltastore.Store, tmp_path: Path
) -> None:
    """A corrupt chunk is found while writing: the file that was there stays as it was."""
    store.save({"a": torch.ones(4), "b": trained_like((64, 64))})
    out = tmp_path / "out.safetensors"
    out.write_bytes(b"the previous export")
    manifest_file = store.objects.path(store.resolve("main"))
    chunk_file = max(
        (p for p in (store.root / "objects").rglob("*") if p.is_file() and p != manifest_file),
        key=os.path.getsize,
    )
    data = bytearray(chunk_file.read_bytes())
    data[-1] ^= 0xFF
    chunk_file.chmod(0o644)
    chunk_file.write_bytes(bytes(data))
    for name in ("out.safetensors", "out.pt"):
        with pytest.raises(CorruptObjectError):
            store.export("main", tmp_path / name)
    assert out.read_bytes() == b"the previous export"
    assert files_in(tmp_path) == ["out.safetensors", "store"]


def test_an_export_into_a_missing_folder_names_the_target_before_decoding(
    store: deltastore.Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bug: the error named the temp file (`[Errno 2] No such file or directory:
    '.../.w.pt.3f2a9c01b7de.tmp'`), exit 1, and a torch export had decoded the whole
    checkpoint before it found out."""
    store.save({"w": torch.ones(2)})
    (tmp_path / "a-file").write_text("x")

    def no_decoding(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("export decoded a chunk")

    monkeypatch.setattr(CheckpointReader, "restore_entries", no_decoding)
    for folder, what in (
        (tmp_path / "gone" / "deeper", "does not exist"),
        (tmp_path / "a-file", "is not a folder"),
    ):
        for name in ("w.pt", "w.safetensors"):
            with pytest.raises(ExportError) as raised:
                store.export("main", folder / name)
            assert str(raised.value) == (
                f"cannot export to {str(folder / name)!r}: the folder {str(folder)!r} {what}"
            )
    assert files_in(tmp_path) == ["a-file", "store"]


def test_a_file_that_cannot_be_created_is_named_not_its_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "a-file" / "w.pt"
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(NotADirectoryError) as raised, atomic_file(target):
        pass
    assert raised.value.filename == str(target)
    assert str(raised.value).endswith(f": {str(target)!r}")


# -- export: torch.save -------------------------------------------------------------------------


def test_torch_export_loads_with_weights_only_and_gives_back_the_same_tree(
    store: deltastore.Store, tmp_path: Path
) -> None:
    state = {
        "model": OrderedDict(mixed_dtypes()),
        "param": torch.nn.Parameter(trained_like((3, 3)), requires_grad=False),
        "grad_param": torch.nn.Parameter(trained_like((2,))),
        "optim": {"state": {0: {"exp_avg": trained_like((5,))}}, "param_groups": [{"lr": 1e-3}]},
        "numpy": {"a": np.arange(6, dtype=">f8").reshape(2, 3), "s": np.int16(-7)},
        "meta": ("run", 2**80, -0.0, struct.unpack("<d", struct.pack("<Q", 0x7FF8000000000123))[0]),
        "blob": b"\x00\xff",
        "none": None,
        "flags": [True, False],
    }
    store.save(state)
    out = store.export("main", tmp_path / "all.pt")
    restored = torch.load(out, weights_only=True)
    assert_same(restored, as_torch(state))
    sub = torch.load(
        store.export("main", tmp_path / "o.pth", prefix="optim/state"), weights_only=True
    )
    assert_same(sub, state["optim"]["state"])
    leaf = torch.load(store.export("main", tmp_path / "a.pt", prefix="numpy/a"), weights_only=True)
    assert_same(leaf, as_torch(state["numpy"]["a"]))
    listed = torch.load(
        store.export("main", tmp_path / "l.pt", prefix="optim/param_groups/0"), weights_only=True
    )
    assert listed == {"lr": 1e-3}
    none = torch.load(store.export("main", tmp_path / "n.pt", prefix="none"), weights_only=True)
    assert none is None  # a None leaf is a subtree like any other


# -- import: single files -----------------------------------------------------------------------


def test_import_of_a_torch_save_file_restores_its_state(
    store: deltastore.Store, tmp_path: Path
) -> None:
    state = {
        "model": OrderedDict(mixed_dtypes()),
        "param": torch.nn.Parameter(torch.ones(2)),
        "epoch": 3,
        "history": (0.5, [1, 2]),
        "name": "run-1",
    }
    path = tmp_path / "ckpt.pt"
    torch.save(state, path)
    ids = store.import_path(path)
    assert len(ids) == 1 and store.resolve("main") == ids[0]
    info = store.info(ids[0])
    assert (info.message, info.step, info.branch, info.parent) == ("ckpt.pt", None, "main", None)
    assert_same(store.load(ids[0]), state)


def test_import_of_a_legacy_torch_file_reads_it_whole(
    store: deltastore.Store, tmp_path: Path
) -> None:
    """Files from before torch's zip format cannot be memory-mapped."""
    w = trained_like((8, 8))
    torch.save({"w": w}, tmp_path / "old.pth", _use_new_zipfile_serialization=False)
    (cid,) = store.import_path(tmp_path / "old.pth", message="from 2019", step=9)
    assert (store.info(cid).message, store.info(cid).step) == ("from 2019", 9)
    assert_same(store.load(cid), {"w": w})


def test_import_of_a_safetensors_file_keeps_the_file_order(
    store: deltastore.Store, tmp_path: Path
) -> None:
    tensors = {"z.weight": trained_like((6, 4)), "a.bias": torch.ones(4).half(), "m": torch.ones(2)}
    path = tmp_path / "model.safetensors"
    save_file(tensors, path)
    (cid,) = store.import_path(path, branch="hf")
    with safe_open(str(path), framework="pt") as f:
        order = f.offset_keys()
    restored = store.load(cid)
    assert list(restored) == order
    assert_same(restored, {k: tensors[k] for k in order})
    assert store.info(cid).branch == "hf" and store.info(cid).message == "model.safetensors"


def test_export_then_import_keeps_bits_message_step_and_metrics(
    store: deltastore.Store, tmp_path: Path
) -> None:
    tensors = mixed_dtypes()
    store.save({"model": tensors, "step": 7}, "seven", step=7, metrics={"loss": 1.5, "tok": 10})
    out = store.export("main", tmp_path / "m.safetensors", prefix="model")
    (cid,) = store.import_path(out, branch="back")
    info = store.info(cid)
    assert (info.message, info.step, info.metrics) == ("seven", 7, {"loss": 1.5, "tok": 10})
    restored = store.load(cid)
    assert list(restored) == list(tensors)  # deltastore writes in state order
    for key, tensor in tensors.items():
        assert_same(restored[key], tensor.contiguous())
    # the chunks were in the store already: only the new manifest was written
    assert info.stored_bytes < 4096 < info.logical_bytes


def test_a_file_that_needs_pickle_is_refused_and_the_store_is_unchanged(
    store: deltastore.Store, tmp_path: Path
) -> None:
    store.save({"w": torch.ones(2)})
    before = store_snapshot(store)
    path = tmp_path / "trainer.pt"
    torch.save({"w": torch.ones(2), "args": argparse.Namespace(lr=0.1)}, path)
    with pytest.raises(ImportSourceError) as caught:
        store.import_path(path)
    assert str(caught.value) == (
        f"cannot import {str(path)!r}: it is not weights-only loadable (it needs the Python "
        "object argparse.Namespace); deltastore reads .pt files with "
        "torch.load(weights_only=True) only, so re-save it holding just tensors, containers "
        "and plain values"
    )
    assert store_snapshot(store) == before
    torch.save({"a": np.ones(3)}, tmp_path / "numpy.pt")  # weights_only refuses numpy too
    with pytest.raises(ImportSourceError, match=r"not weights-only loadable .*numpy"):
        store.import_path(tmp_path / "numpy.pt")
    assert store_snapshot(store) == before


def test_files_that_are_not_checkpoints_are_refused(
    store: deltastore.Store, tmp_path: Path
) -> None:
    (tmp_path / "notes.txt").write_text("hi")
    (tmp_path / "junk.bin").write_bytes(b"\x80\x02}q\x00X\x01\x00\x00\x00aq\x01K\x01s.")  # {"a": 1}
    (tmp_path / "noise.pt").write_bytes(bytes(range(256)))
    (tmp_path / "junk.safetensors").write_bytes(b"\x02" + b"\x00" * 7 + b"{]")
    with pytest.raises(ImportSourceError, match=r"not a \.pt, \.pth, \.bin or \.safetensors file"):
        store.import_path(tmp_path / "notes.txt")
    with pytest.raises(
        ImportSourceError, match=r"junk\.bin': not a torch\.save file \(Invalid magic"
    ):
        store.import_path(tmp_path / "junk.bin")
    with pytest.raises(ImportSourceError, match=r"not weights-only loadable \(Unsupported operand"):
        store.import_path(tmp_path / "noise.pt")
    with pytest.raises(ImportSourceError, match="not a safetensors file: the header is not JSON"):
        store.import_path(tmp_path / "junk.safetensors")
    with pytest.raises(ImportSourceError, match="no such file or folder"):
        store.import_path(tmp_path / "missing.pt")
    assert list(store.log()) == []


def test_a_safetensors_dtype_torch_lacks_is_refused(
    store: deltastore.Store, tmp_path: Path
) -> None:
    header = json.dumps({"w": {"dtype": "F4X", "shape": [2], "data_offsets": [0, 1]}}).encode()
    path = tmp_path / "odd.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\x00")
    with pytest.raises(ImportSourceError, match="tensor 'w' has dtype F4X, which torch lacks"):
        store.import_path(path)


def test_without_the_safetensors_package_the_error_says_what_to_install(
    store: deltastore.Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    save_file({"w": torch.ones(2)}, tmp_path / "w.safetensors")
    monkeypatch.setitem(sys.modules, "safetensors", None)  # what an absent package looks like
    with pytest.raises(ImportSourceError, match=r"pip install 'deltastore\[safetensors\]'"):
        store.import_path(tmp_path / "w.safetensors")


# -- import: Hugging Face model folders ---------------------------------------------------------

CONFIG = {"model_type": "tiny", "hidden_size": 8, "layer_norm_eps": 1e-5, "tie": False}


def make_sharded_model(folder: Path, seed: int = 0) -> dict[str, torch.Tensor]:
    """An HF-style folder: config.json, two safetensors shards and their index."""
    folder.mkdir(parents=True)
    tensors = {
        "model.embed.weight": trained_like((16, 8), seed),
        "model.layers.0.attn.weight": trained_like((8, 8), seed + 1),
        "model.layers.0.norm.weight": torch.ones(8).bfloat16(),
        "lm_head.weight": trained_like((16, 8), seed + 2),
    }
    shard_of = {
        "model.embed.weight": "model-00001-of-00002.safetensors",
        "model.layers.0.norm.weight": "model-00002-of-00002.safetensors",
        "lm_head.weight": "model-00002-of-00002.safetensors",
        "model.layers.0.attn.weight": "model-00001-of-00002.safetensors",
    }
    for shard in sorted(set(shard_of.values())):
        save_file({k: v for k, v in tensors.items() if shard_of[k] == shard}, folder / shard)
    index = {"metadata": {"total_size": 0}, "weight_map": shard_of}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    (folder / "config.json").write_text(json.dumps(CONFIG))
    (folder / "tokenizer.json").write_text("{}")  # not weights: left alone
    return tensors


def test_a_sharded_model_folder_is_one_checkpoint_in_index_order(
    store: deltastore.Store, tmp_path: Path
) -> None:
    tensors = make_sharded_model(tmp_path / "tiny-model")
    (cid,) = store.import_path(tmp_path / "tiny-model")
    restored = store.load(cid)
    index_order = json.loads((tmp_path / "tiny-model/model.safetensors.index.json").read_text())
    assert list(restored) == [*index_order["weight_map"], "config"]
    assert_same(restored, {**{k: tensors[k] for k in index_order["weight_map"]}, "config": CONFIG})
    assert store.info(cid).message == "tiny-model" and store.info(cid).step is None
    exported = load_file(store.export(cid, tmp_path / "merged.safetensors"))
    assert_same(dict(sorted(exported.items())), dict(sorted(tensors.items())))
    (tmp_path / "tiny-model/config.json").unlink()  # the index alone says what the folder is
    (no_config,) = store.import_path(tmp_path / "tiny-model")
    assert list(store.load(no_config)) == list(index_order["weight_map"])


def test_a_model_folder_without_index_reads_its_files_in_order(
    store: deltastore.Store, tmp_path: Path
) -> None:
    folder = tmp_path / "bin-model"
    folder.mkdir()
    parts = [{"b.weight": trained_like((3, 3))}, {"a.weight": trained_like((2, 2), 1)}]
    torch.save(parts[0], folder / "pytorch_model-00001-of-00002.bin")
    torch.save(parts[1], folder / "pytorch_model-00002-of-00002.bin")
    (folder / "config.json").write_text(json.dumps(CONFIG))
    (folder / "training_args.bin").write_bytes(b"a pickle we never read")
    (cid,) = store.import_path(folder)
    assert_same(store.load(cid), {**parts[0], **parts[1], "config": CONFIG})


def test_a_model_folder_whose_index_names_a_missing_tensor_is_refused(
    store: deltastore.Store, tmp_path: Path
) -> None:
    make_sharded_model(tmp_path / "m")
    index_path = tmp_path / "m/model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    index["weight_map"]["ghost"] = "model-00001-of-00002.safetensors"
    index_path.write_text(json.dumps(index))
    with pytest.raises(ImportSourceError, match="does not contain tensor ghost"):
        store.import_path(tmp_path / "m")
    index["weight_map"] = {"ghost": "../../etc/passwd"}
    index_path.write_text(json.dumps(index))
    with pytest.raises(ImportSourceError, match="not a map of tensor names to file names"):
        store.import_path(tmp_path / "m")
    assert list(store.log()) == []


# -- import: folders of checkpoints -------------------------------------------------------------


def test_names_sort_naturally_and_give_their_step() -> None:
    names = ["ckpt_10.pt", "ckpt_2.pt", "ckpt_1.pt", "final.pt"]
    assert sorted(names, key=natural_key) == ["ckpt_1.pt", "ckpt_2.pt", "ckpt_10.pt", "final.pt"]
    assert [step_from_name(n) for n in ("checkpoint-1500", "ckpt_2.pt", "epoch=3-step=900.pt")] == [
        1500,
        2,
        900,
    ]
    assert step_from_name("final.pt") is None
    assert step_from_name("v2.safetensors") == 2  # the suffix's digits do not count


def test_a_folder_of_files_becomes_a_chain_of_checkpoints_in_numeric_order(
    store: deltastore.Store, tmp_path: Path
) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    weights = trained_like((128, 64))
    states = {}
    for step in (1, 2, 10):
        weights = weights.clone()
        weights[step] += 0.01  # a training step changes a little
        states[step] = {"model": {"w": weights}, "step": step}
        torch.save(states[step], folder / f"ckpt_{step}.pt")
    (folder / ".DS_Store").write_bytes(b"hidden files are skipped")
    ids = store.import_path(folder, branch="run")
    infos = [store.info(i) for i in ids]
    assert [i.step for i in infos] == [1, 2, 10]
    assert [i.message for i in infos] == ["ckpt_1.pt", "ckpt_2.pt", "ckpt_10.pt"]
    assert [i.parent for i in infos] == [None, ids[0], ids[1]]
    assert store.resolve("run") == ids[-1]
    for cid, step in zip(ids, (1, 2, 10), strict=True):
        assert_same(store.load(cid), states[step])
    # the later checkpoints are deltas of the first: far smaller than it
    assert infos[1].stored_bytes < infos[0].stored_bytes / 2
    # an unchanged re-import stores nothing but its manifest
    (again,) = store.import_path(folder / "ckpt_10.pt", branch="run", message="again")
    assert store.info(again).parent == ids[-1]
    assert store.info(again).stored_bytes < 2048 < store.info(again).logical_bytes


def test_trainer_checkpoint_folders_are_imported_in_step_order(
    store: deltastore.Store, tmp_path: Path
) -> None:
    out = tmp_path / "trainer-out"
    expected = {
        step: make_sharded_model(out / f"checkpoint-{step}", seed=step)
        for step in (500, 1500, 1000)
    }
    (out / "runs").mkdir()  # logs and a README beside them are left alone
    (out / "README.md").write_text("model card")
    ids = store.import_path(out, message="imported")
    infos = [store.info(i) for i in ids]
    assert [i.step for i in infos] == [500, 1000, 1500]
    assert [i.message for i in infos] == [
        "imported: checkpoint-500",
        "imported: checkpoint-1000",
        "imported: checkpoint-1500",
    ]
    assert [i.parent for i in infos] == [None, ids[0], ids[1]]
    for cid, step in zip(ids, (500, 1000, 1500), strict=True):
        restored = store.load(cid)
        assert restored.pop("config") == CONFIG
        assert_same(dict(sorted(restored.items())), dict(sorted(expected[step].items())))


def test_one_bad_file_in_a_folder_stops_the_import_before_anything_is_saved(
    store: deltastore.Store, tmp_path: Path
) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    torch.save({"w": torch.ones(2)}, folder / "ckpt_1.pt")
    torch.save({"w": torch.ones(2), "cfg": argparse.Namespace()}, folder / "ckpt_2.pt")
    with pytest.raises(ImportSourceError, match=r"ckpt_2\.pt': it is not weights-only loadable"):
        store.import_path(folder)
    assert list(store.log()) == [] and store.refs() == {}
    (folder / "ckpt_2.pt").unlink()
    (folder / "notes.txt").write_text("x")
    (folder / "sub").mkdir()
    with pytest.raises(ImportSourceError, match=r"notes.txt, sub: not a .pt, .pth, .bin or "):
        store.import_path(folder)
    assert list(store.log()) == []


def test_a_step_names_a_single_checkpoint(store: deltastore.Store, tmp_path: Path) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    for i in (1, 2):
        torch.save({"w": torch.ones(2) * i}, folder / f"c{i}.pt")
    with pytest.raises(ImportSourceError, match="a step names one checkpoint, and this folder"):
        store.import_path(folder, step=3)
    with pytest.raises(ImportSourceError, match="the folder is empty"):
        (tmp_path / "empty").mkdir()
        store.import_path(tmp_path / "empty")
    assert list(store.log()) == []


def test_forced_progress_shows_bars_for_export_and_import(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    for i in (1, 2):
        torch.save({"w": trained_like((8, 8), i)}, folder / f"c{i}.pt")
    with deltastore.open(tmp_path / "store", create=True, progress=True) as store:
        store.import_path(folder)
        assert "import: 100%" in capsys.readouterr().err
        store.export("main", tmp_path / "w.safetensors")
        assert "export: 100%" in capsys.readouterr().err


# -- command line -------------------------------------------------------------------------------


def test_cli_export_and_import_round_trip(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(STORE_ENV, raising=False)
    root = tmp_path / "store"
    model = {"fc.weight": trained_like((16, 8)), "fc.bias": torch.zeros(16).bfloat16()}
    with deltastore.open(root, create=True, progress=False) as store:
        cid = store.save({"model": model, "step": 4}, "four", step=4)
    out = tmp_path / "model.safetensors"
    assert main(["--store", str(root), "export", "main", str(out), "--prefix", "model/"]) == 0
    assert capsys.readouterr().out == (
        f"exported the array entries under 'model/' of checkpoint {cid[:12]} to {out} "
        "(safetensors)\n"
    )
    assert_same(load_file(out), model)

    assert main(["--store", str(root), "import", str(out), "--branch", "imp", "--step", "40"]) == 0
    printed = capsys.readouterr().out.split()
    with deltastore.open(root, progress=False) as store:
        assert printed == [store.resolve("imp")]
        assert store.info("imp").step == 40 and store.info("imp").message == "four"

    back = tmp_path / "back.bin"
    assert (
        main(["--store", str(root), "export", "imp", str(back), "--format", "torch", "--json"]) == 0
    )
    assert json.loads(capsys.readouterr().out) == {
        "checkpoint": printed[0],
        "format": "torch",
        "path": str(back),
    }
    assert_same(torch.load(back, weights_only=True), model)

    folder = tmp_path / "run"
    folder.mkdir()
    for i in (3, 1):
        save_file({"w": torch.full((4,), float(i))}, folder / f"step{i}.safetensors")
    assert main(["--store", str(root), "import", str(folder), "--json"]) == 0
    imported = json.loads(capsys.readouterr().out)
    assert [(c["step"], c["message"], c["branch"]) for c in imported] == [
        (1, "step1.safetensors", "main"),
        (3, "step3.safetensors", "main"),
    ]
    assert imported[0]["parent"] == cid


def test_cli_errors_are_one_line_with_their_exit_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "store"
    deltastore.init(root)
    (tmp_path / "notes.txt").write_text("x")
    code = main(["--store", str(root), "import", str(tmp_path / "notes.txt")])
    err = capsys.readouterr().err
    assert code == 22
    assert err == (
        f"deltastore: error: cannot import {str(tmp_path / 'notes.txt')!r}: not a .pt, .pth, "
        ".bin or .safetensors file, nor a model folder\n"
    )
    with deltastore.open(root, progress=False) as store:
        store.save({"z": torch.ones(1, dtype=torch.complex128)})
    assert main(["--store", str(root), "export", "main", str(tmp_path / "z.safetensors")]) == 21
    assert capsys.readouterr().err.count("\n") == 1
    assert main(["--store", str(root), "export", "nope", str(tmp_path / "z.pt")]) == 6
    capsys.readouterr()
    missing = tmp_path / "no" / "z.pt"
    assert main(["--store", str(root), "export", "main", str(missing)]) == 21
    assert capsys.readouterr().err == (
        f"deltastore: error: cannot export to {str(missing)!r}: the folder "
        f"{str(missing.parent)!r} does not exist\n"
    )
    assert not (tmp_path / "z.pt").exists() and not (tmp_path / "z.safetensors").exists()


def test_a_thinned_checkpoint_exports_without_its_thinned_entries(
    store: deltastore.Store, tmp_path: Path
) -> None:
    weights = torch.arange(2048, dtype=torch.float32)
    states = [
        {"model": {"w": weights + i}, "optim": {"m": torch.full((2048,), float(i))}}
        for i in range(3)
    ]
    first = store.save(states[0], "0")
    for state in states[1:]:
        store.save(state, "later")
    store.thin("optim/*", keep_newest=1)
    store.gc()  # the thinned chunks are gone from disk too
    safetensors_file = store.export(first, tmp_path / "old.safetensors")
    assert list(load_file(safetensors_file)) == ["model/w"]
    assert tensor_bits(load_file(safetensors_file)["model/w"]) == tensor_bits(weights)
    torch_file = store.export(first, tmp_path / "old.pt")
    loaded = torch.load(torch_file, weights_only=True)
    assert loaded["optim"] == {}
    assert tensor_bits(loaded["model"]["w"]) == tensor_bits(weights)
