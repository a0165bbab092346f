"""Reading the pickled THINGS-EEG2 dicts (.npy and .pt) without executing their code.

The THINGS-EEG2 ``.npy`` files are not plain arrays: the official ones are ``np.save`` of a
dict (a 0-d object array whose payload is a pickle stream) and the NICE/ATM 250 Hz ones are
a bare ``pickle.dump`` under a ``.npy`` name. ``np.load(allow_pickle=True)`` would run any
callable such a stream names, so a downloaded or tampered file could execute code. This
module unpickles with an allowlist holding only what NumPy arrays, dtypes, scalars and plain
containers need; any other global is refused before it is called. The ``.pt`` files go
through ``torch.load(weights_only=True)``, which applies the same idea to tensors, with
NumPy's array globals added so a numpy ``times`` does not force a trusted load.
"""

from __future__ import annotations

import builtins
import codecs
import collections
import importlib
import logging
import pickle
import re
import struct
import zipfile
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from fmri2img.errors import DataError

log = logging.getLogger(__name__)

NPY_MAGIC = b"\x93NUMPY"
PICKLE_PROTO = 0x80

# NumPy 2 moved numpy.core to numpy._core; files written by either must load under either.
try:
    NUMPY_MULTIARRAY = importlib.import_module("numpy._core.multiarray")
    NUMPY_NUMERIC = importlib.import_module("numpy._core.numeric")
except ImportError:  # NumPy 1.x
    NUMPY_MULTIARRAY = importlib.import_module("numpy.core.multiarray")
    NUMPY_NUMERIC = importlib.import_module("numpy.core.numeric")


class _RefusedCodec(Exception):
    """Raised inside the unpickler, turned into a DataError naming the file."""


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """Protocol-2 pickles spell bytes as ``_codecs.encode(text, "latin1")``; other codecs
    (zlib, base64...) are never needed for arrays, so they are not offered."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise _RefusedCodec(f"refusing to unpickle codecs.encode(..., {encoding!r})")
    return codecs.encode(text, "latin1")


_NUMPY_MODULE_NAMES = ("numpy.core.multiarray", "numpy._core.multiarray")
_NUMERIC_MODULE_NAMES = ("numpy.core.numeric", "numpy._core.numeric")

_ALLOWED: dict[tuple[str, str], Any] = {
    **{(m, "_reconstruct"): NUMPY_MULTIARRAY._reconstruct for m in _NUMPY_MODULE_NAMES},
    **{(m, "scalar"): NUMPY_MULTIARRAY.scalar for m in _NUMPY_MODULE_NAMES},
    # protocol 5 reduces arrays to _frombuffer(buffer, dtype, shape, order): a pure view
    **{(m, "_frombuffer"): NUMPY_NUMERIC._frombuffer for m in _NUMERIC_MODULE_NAMES},
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("_codecs", "encode"): _latin1_encode,
    ("codecs", "encode"): _latin1_encode,
}
for _name in ("list", "dict", "tuple", "set", "frozenset", "str", "int", "float", "bool",
              "complex", "bytes", "bytearray", "slice"):
    # "__builtin__" is what protocol-2 pickles written by Python 2 name
    _ALLOWED[("builtins", _name)] = _ALLOWED[("__builtin__", _name)] = getattr(builtins, _name)


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose globals come only from the allowlist above."""

    def __init__(self, file: BinaryIO, path: str | Path) -> None:
        super().__init__(file)
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            pass
        # NumPy 2 pickles dtypes of builtin types as numpy.dtypes.Float64DType etc.
        if module == "numpy.dtypes" and name.endswith("DType"):
            found = getattr(np.dtypes, name, None)
            if isinstance(found, type) and issubclass(found, np.dtype):
                return found
        raise DataError(
            f"refusing to unpickle {module}.{name}: only NumPy arrays and plain containers "
            "are allowed in this file (it may be tampered with or not a THINGS-EEG2 file)",
            self._path)

    def persistent_load(self, pid: Any) -> Any:
        raise DataError("refusing to unpickle a persistent id (not a NumPy pickle)",
                        self._path)


def _unpickle(f: BinaryIO, path: str | Path) -> Any:
    try:
        return RestrictedUnpickler(f, path).load()
    except _RefusedCodec as exc:
        raise DataError(str(exc), path) from None
    except (EOFError, pickle.UnpicklingError, ValueError, TypeError, IndexError,
            AttributeError, struct.error, UnicodeDecodeError) as exc:
        raise DataError(f"truncated or corrupt pickle stream ({type(exc).__name__}: {exc})",
                        path) from exc


def _read_npy_header(f: BinaryIO, path: str | Path) -> None:
    """Leaves ``f`` at the pickle payload of a 0-d object ``.npy``; refuses anything else."""
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise DataError(f".npy format version {version} is not supported", path)
    except (ValueError, EOFError, SyntaxError, struct.error) as exc:
        raise DataError(f"truncated or corrupt .npy header ({exc})", path) from exc
    if dtype != np.dtype(object):
        raise DataError(f"holds a plain {dtype} array of shape {shape}, not a dict saved with "
                        "np.save (expected a 0-d object array)", path)
    if shape != ():
        raise DataError(f"holds an object array of shape {shape}, not a dict saved with "
                        "np.save (expected a 0-d object array)", path)


def load_pickled_dict(path: str | Path) -> dict[str, Any]:
    """The dict in ``path``: either ``np.save`` of a dict (``.npy`` magic, 0-d object array,
    what ``np.load(...).item()`` reads) or a bare ``pickle.dump`` of one (what
    ``np.load(allow_pickle=True)`` returns directly). Nothing in the file is executed."""
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found", path)
    with path.open("rb") as f:
        head = f.read(len(NPY_MAGIC))
        f.seek(0)
        if head == NPY_MAGIC:
            _read_npy_header(f, path)
        elif not head:
            raise DataError("file is empty", path)
        elif head[0] != PICKLE_PROTO:
            raise DataError("neither a .npy file (no \\x93NUMPY magic) nor a pickle stream "
                            f"(first bytes {head!r})", path)
        obj = _unpickle(f, path)
    # the doc's reader rule: .item() only for a 0-d object array
    if isinstance(obj, np.ndarray) and obj.dtype == object and obj.shape == ():
        obj = obj.item()
    if not isinstance(obj, dict):
        raise DataError(f"holds a {type(obj).__name__}, expected a dict", path)
    return obj


def file_kind(path: str | Path) -> str:
    """"npy" (NumPy magic), "pickle" (protocol >= 2 stream) or "other", from the first bytes."""
    with Path(path).open("rb") as f:
        head = f.read(len(NPY_MAGIC))
    if head == NPY_MAGIC:
        return "npy"
    if head[:1] == bytes([PICKLE_PROTO]):
        return "pickle"
    return "other"


# What a torch.save'd dict holding numpy arrays (e.g. `times`) needs beyond weights_only's
# defaults; files written under NumPy 1 name the functions numpy.core.multiarray.*.
_TORCH_NUMPY_GLOBALS: list[Any] = [
    np.ndarray, np.dtype,
    *{type(np.dtype(c)) for c in "?bBhHiIlLqQefdgFDGUSO"},
    NUMPY_MULTIARRAY._reconstruct, NUMPY_MULTIARRAY.scalar,
    (NUMPY_MULTIARRAY._reconstruct, "numpy.core.multiarray._reconstruct"),
    (NUMPY_MULTIARRAY.scalar, "numpy.core.multiarray.scalar"),
]


def load_torch_dict(path: str | Path, allow_pickle: bool) -> dict[str, Any]:
    """The dict in a ``torch.save`` file, built by ``torch.load(weights_only=True)`` (tensors,
    numpy arrays, plain containers) unless ``allow_pickle`` trusts the file's own code."""
    # mmap keeps the multi-GB eeg tensor in the page cache instead of a private copy; only
    # the zip container (torch >= 1.6) supports it.
    mmap = zipfile.is_zipfile(path)
    try:
        if allow_pickle:
            log.warning("%s: torch.load(weights_only=False): the file is trusted and any code "
                        "pickled in it runs", path)
            obj = torch.load(path, map_location="cpu", weights_only=False, mmap=mmap)
        else:
            with torch.serialization.safe_globals(_TORCH_NUMPY_GLOBALS):
                obj = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        if found or ("WeightsUnpickler" in str(exc) and "Unsupported" in str(exc)):
            what = found.group(1) if found else "an object torch does not allow"
            raise DataError(
                f"holds pickled Python objects ({what}) beyond tensors, numpy arrays and plain "
                "containers, which torch.load(weights_only=True) refuses to build; it can be "
                "read only with read_eeg_file(..., allow_pickle=True), which runs code from the "
                "file: do that only for a file from a trusted source", path) from exc
        raise DataError(f"truncated or corrupt torch file ({exc})", path) from exc
    except (RuntimeError, EOFError, ValueError, OSError) as exc:
        raise DataError(f"truncated or corrupt torch file ({type(exc).__name__}: "
                        f"{str(exc)[:200]})", path) from exc
    if not isinstance(obj, dict):
        raise DataError(f"holds a {type(obj).__name__}, expected a dict", path)
    return obj
