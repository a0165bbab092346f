"""The few array operations ridge's solvers need, for numpy/scipy or torch (CPU or CUDA),
so that the algorithm (:mod:`.cv`) is written once for both."""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.linalg


class Ops(abc.ABC):
    """The few array operations the solvers need, for one backend, dtype and device."""

    name: str
    np_dtype: np.dtype

    @abc.abstractmethod
    def asarray(self, a: np.ndarray) -> Any:
        ...

    @abc.abstractmethod
    def numpy(self, a: Any) -> np.ndarray:
        ...

    @abc.abstractmethod
    def zeros(self, shape: tuple[int, ...]) -> Any:
        ...

    @abc.abstractmethod
    def eye(self, n: int) -> Any:
        ...

    @abc.abstractmethod
    def copy(self, a: Any) -> Any:
        ...

    @abc.abstractmethod
    def add_diag_(self, a: Any, value: float) -> None:
        ...

    @abc.abstractmethod
    def clip_min(self, a: Any, value: float) -> Any:
        ...

    @abc.abstractmethod
    def tril(self, a: Any) -> Any:
        """Lower triangle of ``a`` as a new array (a factor's other triangle is not zero)."""

    @abc.abstractmethod
    def addmm_(self, out: Any, a: Any, b: Any, alpha: float = 1.0) -> None:
        """``out += alpha * a @ b`` in place (``out`` may be a view)."""

    @abc.abstractmethod
    def eigh(self, a: Any, overwrite: bool = False) -> tuple[Any, Any]:
        """Eigenvalues (ascending) and eigenvectors of symmetric ``a``; with
        ``overwrite`` the eigenvectors may take ``a``'s memory (``a`` is then garbage)."""

    @abc.abstractmethod
    def cholesky(self, a: Any) -> Any | None:
        """Lower Cholesky factor of ``a`` (may overwrite it), or None if not positive definite."""

    @abc.abstractmethod
    def factor_buffer(self, a: Any) -> Any:
        """Scratch space for :meth:`cholesky_shifted` of matrices shaped like ``a``."""

    @abc.abstractmethod
    def cholesky_shifted(self, a: Any, shift: float, buffer: Any) -> Any | None:
        """Lower Cholesky factor of ``a + shift I`` computed in ``buffer`` (no allocation
        of an n x n matrix per call), or None if it is not positive definite."""

    @abc.abstractmethod
    def cho_solve(self, chol: Any, b: Any) -> Any:
        ...

    @abc.abstractmethod
    def solve_lower(self, chol: Any, b: Any) -> Any:
        ...

    def spd_solve(self, a: Any, b: Any) -> Any:
        """``a^{-1} b`` for symmetric positive definite ``a`` (a symmetric solve if its
        Cholesky factorisation fails, i.e. ``a`` is not numerically positive definite)."""
        chol = self.cholesky(self.copy(a))
        if chol is not None:
            return self.cho_solve(chol, b)
        return self._sym_solve(a, b)

    def spd_solver(self, a: Any) -> Callable[[Any], Any]:
        """``b -> a^{-1} b`` for one symmetric positive definite ``a`` and many ``b``: the
        factorisation of :meth:`spd_solve`, done once."""
        chol = self.cholesky(self.copy(a))
        if chol is not None:
            return lambda b: self.cho_solve(chol, b)
        return lambda b: self._sym_solve(a, b)

    @abc.abstractmethod
    def _sym_solve(self, a: Any, b: Any) -> Any:
        ...

    def index(self, idx: np.ndarray) -> Any:
        """An index usable to select columns or rows of this backend's arrays."""
        return idx

    def sync(self) -> None:
        """Wait for queued device work, so that timings mean something."""
        return None  # CPU backends run synchronously; the torch backend overrides this


class NumpyOps(Ops):
    name = "numpy"

    def __init__(self, dtype: np.dtype):
        self.np_dtype = np.dtype(dtype)

    def asarray(self, a: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(a, dtype=self.np_dtype)

    def numpy(self, a: np.ndarray) -> np.ndarray:
        return np.asarray(a)

    def zeros(self, shape: tuple[int, ...]) -> np.ndarray:
        return np.zeros(shape, dtype=self.np_dtype)

    def eye(self, n: int) -> np.ndarray:
        return np.eye(n, dtype=self.np_dtype)

    def copy(self, a: np.ndarray) -> np.ndarray:
        return a.copy()

    def add_diag_(self, a: np.ndarray, value: float) -> None:
        n = min(a.shape)
        a[np.arange(n), np.arange(n)] += value

    def clip_min(self, a: np.ndarray, value: float) -> np.ndarray:
        return np.maximum(a, value)

    def tril(self, a: np.ndarray) -> np.ndarray:
        return np.tril(a)

    def addmm_(self, out: np.ndarray, a: np.ndarray, b: np.ndarray, alpha: float = 1.0) -> None:
        if alpha == 1.0:
            out += a @ b
        else:
            out += alpha * (a @ b)

    def eigh(self, a: np.ndarray, overwrite: bool = False) -> tuple[np.ndarray, np.ndarray]:
        if overwrite and a.flags.c_contiguous:
            # the transpose of a C-ordered symmetric matrix is the same matrix in the
            # Fortran order LAPACK works in: factored in place, no p x p copy
            return scipy.linalg.eigh(a.T, driver="evd", overwrite_a=True, check_finite=False)
        return scipy.linalg.eigh(a, driver="evd", overwrite_a=overwrite, check_finite=False)

    def cholesky(self, a: np.ndarray) -> np.ndarray | None:
        try:
            return scipy.linalg.cholesky(a, lower=True, overwrite_a=True, check_finite=False)
        except np.linalg.LinAlgError:
            return None

    def factor_buffer(self, a: np.ndarray) -> np.ndarray:
        return np.empty(a.shape, dtype=self.np_dtype, order="F")  # LAPACK factors F in place

    def cholesky_shifted(self, a: np.ndarray, shift: float,
                         buffer: np.ndarray) -> np.ndarray | None:
        buffer.T[...] = a  # a is symmetric: a plain copy, not a transposing one
        self.add_diag_(buffer, shift)
        return self.cholesky(buffer)

    def cho_solve(self, chol: np.ndarray, b: np.ndarray) -> np.ndarray:
        return scipy.linalg.cho_solve((chol, True), b, check_finite=False)

    def solve_lower(self, chol: np.ndarray, b: np.ndarray) -> np.ndarray:
        return scipy.linalg.solve_triangular(chol, b, lower=True, check_finite=False)

    def _sym_solve(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return scipy.linalg.solve(a, b, assume_a="sym", check_finite=False)


class TorchOps(Ops):
    name = "torch"

    def __init__(self, dtype: np.dtype, device: str):
        import torch  # the numpy backend needs no torch; this one loads it when chosen

        self.torch = torch
        self.np_dtype = np.dtype(dtype)
        self.dtype = {np.dtype(np.float32): torch.float32,
                      np.dtype(np.float64): torch.float64}[self.np_dtype]
        try:
            self.device = torch.device(device)
        except RuntimeError as exc:
            raise ValueError(f"invalid torch device {device!r}: {exc}") from exc
        if self.device.type == "cuda":
            if not torch.cuda.is_available():
                raise ValueError(f"device {device!r} requested but CUDA is not available")
            if self.device.index is not None and self.device.index >= torch.cuda.device_count():
                raise ValueError(
                    f"device {device!r} requested but only {torch.cuda.device_count()} "
                    "CUDA device(s) are visible"
                )

    def asarray(self, a: np.ndarray) -> Any:
        a = np.ascontiguousarray(a, dtype=self.np_dtype)
        if not a.flags.writeable:  # torch.from_numpy warns on read-only memory
            a = a.copy()
        return self.torch.from_numpy(a).to(self.device)

    def numpy(self, a: Any) -> np.ndarray:
        return a.detach().cpu().numpy()

    def zeros(self, shape: tuple[int, ...]) -> Any:
        return self.torch.zeros(shape, dtype=self.dtype, device=self.device)

    def eye(self, n: int) -> Any:
        return self.torch.eye(n, dtype=self.dtype, device=self.device)

    def copy(self, a: Any) -> Any:
        return a.clone()

    def add_diag_(self, a: Any, value: float) -> None:
        a.diagonal().add_(value)

    def clip_min(self, a: Any, value: float) -> Any:
        return a.clamp(min=value)

    def tril(self, a: Any) -> Any:
        return self.torch.tril(a)

    def addmm_(self, out: Any, a: Any, b: Any, alpha: float = 1.0) -> None:
        out.addmm_(a, b, alpha=alpha)

    def eigh(self, a: Any, overwrite: bool = False) -> tuple[Any, Any]:
        if overwrite and self.device.type == "cpu" and a.is_contiguous():
            # LAPACK in place on the tensor's own memory: torch's eigh would hold a
            # second p x p matrix (1 GB at NSD's 15,724 voxels), and on the AMD EPYC
            # benchmark machine scipy's OpenBLAS syevd also ran 1.7x faster than MKL's
            s, V = NumpyOps(self.np_dtype).eigh(a.numpy(), overwrite=True)
            return self.torch.from_numpy(s), self.torch.from_numpy(V)
        return self.torch.linalg.eigh(a)

    def cholesky(self, a: Any) -> Any | None:
        chol, info = self.torch.linalg.cholesky_ex(a)
        return chol if int(info) == 0 else None

    def factor_buffer(self, a: Any) -> Any:
        # column-major, the layout LAPACK/cuSOLVER factor in place: no hidden copies in
        # the Cholesky and the triangular solves that follow
        n = a.shape[0]
        return self.torch.empty_strided((n, n), (1, n), dtype=self.dtype, device=self.device)

    def cholesky_shifted(self, a: Any, shift: float, buffer: Any) -> Any | None:
        buffer.mT.copy_(a)  # a is symmetric: a plain copy, not a transposing one
        buffer.diagonal().add_(shift)
        info = self.torch.empty((), dtype=self.torch.int32, device=self.device)
        self.torch.linalg.cholesky_ex(buffer, out=(buffer, info))
        return buffer if int(info) == 0 else None

    def cho_solve(self, chol: Any, b: Any) -> Any:
        return self.torch.cholesky_solve(b, chol)

    def solve_lower(self, chol: Any, b: Any) -> Any:
        return self.torch.linalg.solve_triangular(chol, b, upper=False)

    def _sym_solve(self, a: Any, b: Any) -> Any:
        return self.torch.linalg.solve(a, b)

    def index(self, idx: np.ndarray) -> Any:
        return self.torch.as_tensor(idx, device=self.device)

    def sync(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize(self.device)


def make_ops(backend: str, dtype: str, device: str = "cpu") -> Ops:
    """The operations layer for ``backend`` ("numpy" or "torch") in ``dtype`` on ``device``."""
    np_dtype = np.dtype(dtype)
    if np_dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"dtype must be float32 or float64, got {dtype!r}")
    if backend == "numpy":
        if device != "cpu":
            raise ValueError(f"the numpy backend runs on the CPU only, got device={device!r}")
        return NumpyOps(np_dtype)
    if backend == "torch":
        return TorchOps(np_dtype, device)
    raise ValueError(f"unknown backend {backend!r}; expected 'numpy' or 'torch'")
