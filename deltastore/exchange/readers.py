"""Reading foreign weight files without running any code from them.

``.pt``/``.pth``/``.bin`` files are read with ``torch.load(weights_only=True)``
only (DESIGN.md invariant 4): a file that needs pickled Python objects is
refused with :class:`ImportSourceError`, never loaded another way.
``.safetensors`` files are read with the ``safetensors`` package (the
``deltastore[safetensors]`` extra), in the order their bytes sit in the file.
Both packages are imported only when such a file is read.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from deltastore.errors import ImportSourceError
from deltastore.exchange import safetensors_format

TORCH_SUFFIXES = frozenset({".pt", ".pth", ".bin"})
SAFETENSORS_SUFFIX = ".safetensors"
WEIGHT_SUFFIXES = TORCH_SUFFIXES | {SAFETENSORS_SUFFIX}

# torch names the global its allowlist refused, as "Unsupported global: GLOBAL argparse.Namespace
# was not an allowed global" or "unsupported GLOBAL os.system whose module os is blocked";
# other refusals say what else it met ("Unsupported operand 110" in a file that is no pickle).
_REFUSED_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")
_WEIGHTS_ONLY_DETAIL = re.compile(r"WeightsUnpickler error:\s*([^\n]+)")


def is_weight_file(path: Path) -> bool:
    return path.suffix.lower() in WEIGHT_SUFFIXES


def _torch(path: Path) -> Any:
    try:
        import torch
    except ImportError:
        raise ImportSourceError(str(path), "reading it needs torch (pip install torch)") from None
    return torch


def load_torch_file(path: Path) -> Any:
    """``torch.load(path, weights_only=True)`` onto the CPU, or a clear ImportSourceError.

    Files in torch's zip format (every torch.save since 1.6) are memory-mapped:
    loading is then cheap, and the store reads each tensor's pages once as it
    saves them.  Older files are read whole.
    """
    torch = _torch(path)
    try:
        return torch.load(
            path, weights_only=True, map_location="cpu", mmap=zipfile.is_zipfile(path)
        )
    except pickle.UnpicklingError as exc:  # raised by torch's allowlist; nothing was unpickled
        raise ImportSourceError(str(path), _not_weights_only(exc)) from None
    except MemoryError:
        raise
    except Exception as exc:  # torch.load says "not a checkpoint" with any of a dozen types
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ImportSourceError(str(path), f"not a torch.save file ({detail[:200]})") from None


def _not_weights_only(exc: Exception) -> str:
    text = str(exc)
    refused = _REFUSED_GLOBAL.search(text)
    if refused:
        why = f"it needs the Python object {refused.group(1)}"
    else:
        detail = _WEIGHTS_ONLY_DETAIL.search(text)
        why = detail.group(1).strip() if detail else "torch refused its contents"
    return (
        f"it is not weights-only loadable ({why}); deltastore reads .pt files with "
        "torch.load(weights_only=True) only, so re-save it holding just tensors, "
        "containers and plain values"
    )


def read_safetensors_header(path: Path) -> safetensors_format.FileHeader:
    """The header of a .safetensors file, checked to hold only dtypes torch can load."""
    try:
        header = safetensors_format.read_header(path)
    except ValueError as exc:
        raise ImportSourceError(str(path), f"not a safetensors file: {exc}") from None
    torch = _torch(path)
    for tensor in header.tensors:
        name = safetensors_format.TORCH_NAMES.get(tensor.code)
        if name is None or not isinstance(getattr(torch, name, None), torch.dtype):
            raise ImportSourceError(
                str(path), f"tensor {tensor.name!r} has dtype {tensor.code}, which torch lacks"
            )
    return header


def safetensors_api(path: Path) -> tuple[type[Exception], Any]:
    """The safetensors package's error class and ``safe_open``, or a clear ImportSourceError."""
    try:
        from safetensors import SafetensorError, safe_open
    except ImportError:
        raise ImportSourceError(
            str(path),
            "reading .safetensors needs the safetensors package "
            "(pip install 'deltastore[safetensors]')",
        ) from None
    return SafetensorError, safe_open


def load_safetensors_file(path: Path, names: Sequence[str] | None = None) -> dict[str, Any]:
    """The tensors ``names`` (default: all, in file order) of a .safetensors file."""
    SafetensorError, safe_open = safetensors_api(path)  # noqa: N806 - a class and a function
    header = read_safetensors_header(path)  # also checks that torch knows every dtype
    wanted = [t.name for t in header.tensors] if names is None else names
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return {name: f.get_tensor(name) for name in wanted}
    except SafetensorError as exc:
        raise ImportSourceError(str(path), f"not a readable safetensors file ({exc})") from None
