"""Topological signatures of vision and imagery representational geometry.

* :func:`persistence`: Vietoris-Rips persistent homology (H0, H1, ...) of a point cloud
  or a distance matrix, through the fastest installed library (``BACKENDS`` in order of
  the speed measured by ``benchmarks/bench_topology.py``: giotto-ph, gudhi, ripser; each
  imported only when used). Our wrapper computes the Euclidean distances itself (one
  GEMM) and hands the backend the distance matrix.
* :func:`wasserstein`: the q-Wasserstein distance between two diagrams (L-infinity ground
  metric, points may be matched to the diagonal), exactly, by
  ``scipy.optimize.linear_sum_assignment`` on the diagram-plus-diagonal cost matrix;
  essential (infinite) classes are matched among themselves by sorted birth.
* :func:`cv_geometry`: cross-validated squared distances between target means from
  split halves, ``(a_i - a_j) . (b_i - b_j)``: unbiased for the squared distance of the
  true means, so trial noise does not inflate them (the noisier domain would otherwise
  look spread out). The contraction ratio is ``sqrt(mean d2 imagery / mean d2 vision)``
  over target pairs; the split-half draws are those of
  :mod:`fmri2img.analysis.dimensionality`.
* :func:`knn_overlap`: the share of each target's k nearest targets that are the same in
  two geometries (topological RSA), chance ``k / (n - 1)``.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

# fastest first (bench_topology.py on 500 x 512 points): the first importable one is used
BACKENDS: tuple[str, ...] = ("giotto-ph", "gudhi", "ripser")
_MODULES = {"giotto-ph": "gph", "gudhi": "gudhi", "ripser": "ripser"}


def euclidean_distances(x: np.ndarray) -> np.ndarray:
    """(n, n) Euclidean distances from the Gram matrix (float64, exact 0 diagonal)."""
    x = np.asarray(x, dtype=np.float64)
    x = x - x.mean(axis=0)  # centring keeps the Gram identity accurate far from 0
    sq = np.einsum("ij,ij->i", x, x)
    d2 = sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)
    np.fill_diagonal(d2, 0.0)
    d = np.sqrt(np.clip(d2, 0.0, None))
    return (d + d.T) / 2.0


def available_backends() -> list[str]:
    out = []
    for name in BACKENDS:
        try:
            importlib.import_module(_MODULES[name])
        except ImportError:
            continue
        out.append(name)
    return out


def resolve_backend(name: str | None = None) -> str:
    """The backend to use: ``name`` (checked importable) or the first installed."""
    if name is not None:
        if name not in BACKENDS:
            raise ValueError(f"unknown persistent-homology backend {name!r}; one of "
                             f"{', '.join(BACKENDS)}")
        try:
            importlib.import_module(_MODULES[name])
        except ImportError as exc:
            raise ImportError(f"persistent homology backend {name} is not installed: pip "
                              f"install {name}") from exc
        return name
    found = available_backends()
    if not found:
        raise ImportError("persistent homology needs one of the libraries giotto-ph, gudhi "
                          "or ripser: pip install giotto-ph")
    return found[0]


def persistence(points: np.ndarray | None = None, *, distances: np.ndarray | None = None,
                maxdim: int = 1, backend: str | None = None, coeff: int = 2
                ) -> list[np.ndarray]:
    """Vietoris-Rips persistence diagrams H0..H``maxdim`` (each (k, 2): birth, death;
    death ``inf`` for essential classes) of ``points`` (n, d) or of a symmetric
    ``distances`` matrix, over Z/``coeff``; ``backend`` None picks the first installed of
    :data:`BACKENDS`."""
    if (points is None) == (distances is None):
        raise ValueError("give points or distances")
    d = euclidean_distances(points) if distances is None else np.asarray(
        distances, dtype=np.float64)
    if d.ndim != 2 or d.shape[0] != d.shape[1]:
        raise ValueError(f"distances must be square, got {d.shape}")
    name = resolve_backend(backend)
    if name == "giotto-ph":
        from gph import ripser_parallel
        dgms = ripser_parallel(d, maxdim=maxdim, metric="precomputed", coeff=coeff,
                               n_threads=1)["dgms"]
    elif name == "gudhi":
        from gudhi.sklearn.rips_persistence import RipsPersistence
        dgms = RipsPersistence(homology_dimensions=list(range(maxdim + 1)),
                               input_type="full distance matrix",
                               homology_coeff_field=coeff).fit_transform([d])[0]
    else:
        from ripser import ripser
        dgms = ripser(d, maxdim=maxdim, distance_matrix=True, coeff=coeff)["dgms"]
    return [sort_diagram(np.asarray(g, dtype=np.float64).reshape(-1, 2)) for g in dgms]


def sort_diagram(dgm: np.ndarray) -> np.ndarray:
    """Rows sorted by (birth, death), zero-length bars dropped (they carry nothing and
    libraries differ in reporting them)."""
    dgm = np.asarray(dgm, dtype=np.float64).reshape(-1, 2)
    dgm = dgm[dgm[:, 1] > dgm[:, 0]]
    return dgm[np.lexsort((dgm[:, 1], dgm[:, 0]))]


def wasserstein(a: np.ndarray, b: np.ndarray, q: float = 1.0) -> float:
    """q-Wasserstein distance (``q = inf``: bottleneck) between two diagrams with the
    L-infinity ground metric; a point may be matched to its diagonal projection at cost
    ``(death - birth) / 2``. Finite points are matched exactly by a linear assignment on
    the (m + n) x (m + n) cost matrix; essential points by sorted birth (``inf`` when
    their counts differ)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 2)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 2)
    ea, eb = np.sort(a[~np.isfinite(a[:, 1]), 0]), np.sort(b[~np.isfinite(b[:, 1]), 0])
    if ea.size != eb.size:
        return float("inf")
    a, b = a[np.isfinite(a[:, 1])], b[np.isfinite(b[:, 1])]
    ess = np.abs(ea - eb)
    m, n = len(a), len(b)
    if m + n == 0:
        costs = ess
    else:
        cost = np.zeros((m + n, m + n))
        cost[:m, :n] = np.maximum(np.abs(a[:, None, 0] - b[None, :, 0]),
                                  np.abs(a[:, None, 1] - b[None, :, 1]))
        # a point against any diagonal slot costs its distance to the diagonal; a diagonal
        # slot against a diagonal slot costs nothing
        cost[:m, n:] = ((a[:, 1] - a[:, 0]) / 2.0)[:, None]
        cost[m:, :n] = ((b[:, 1] - b[:, 0]) / 2.0)[None, :]
        if np.isinf(q):
            return _bottleneck(cost, ess)
        r, c = linear_sum_assignment(cost**q)
        costs = np.concatenate([cost[r, c], ess])
    if np.isinf(q):
        return float(costs.max()) if costs.size else 0.0
    return float(np.sum(costs**q) ** (1.0 / q))


def _bottleneck(cost: np.ndarray, ess: np.ndarray) -> float:
    """Smallest threshold admitting a perfect matching with every cost <= it (bisection
    over the distinct costs; each test is an assignment on the 0/1 excess matrix)."""
    values = np.unique(cost)
    lo, hi = 0, values.size - 1
    while lo < hi:
        mid = (lo + hi) // 2
        excess = (cost > values[mid]).astype(np.float64)
        r, c = linear_sum_assignment(excess)
        if excess[r, c].sum() == 0:
            hi = mid
        else:
            lo = mid + 1
    return float(max(values[lo], ess.max() if ess.size else 0.0))


def diagram_distances(a: Sequence[np.ndarray], b: Sequence[np.ndarray], q: float = 1.0
                      ) -> np.ndarray:
    """Per homology dimension, :func:`wasserstein` of two lists of diagrams."""
    return np.array([wasserstein(x, y, q) for x, y in zip(a, b, strict=True)])


def total_persistence(dgm: np.ndarray) -> float:
    """Sum of the finite bars' lengths."""
    dgm = np.asarray(dgm, dtype=np.float64).reshape(-1, 2)
    fin = np.isfinite(dgm[:, 1])
    return float((dgm[fin, 1] - dgm[fin, 0]).sum())


def cv_geometry(G: np.ndarray) -> np.ndarray:
    """Cross-validated squared distances between targets, (..., T, T), from the Gram
    matrix of the halves' target means ``G = [A; B][A; B]^T`` (..., 2T, 2T) (see
    :func:`fmri2img.analysis.dimensionality.half_grams`): ``(a_i - a_j) . (b_i - b_j)``,
    symmetrised."""
    T = G.shape[-1] // 2
    ab = G[..., :T, T:]
    diag = np.diagonal(ab, axis1=-2, axis2=-1)
    d2 = diag[..., :, None] + diag[..., None, :] - ab - np.swapaxes(ab, -1, -2)
    return d2


def mean_sq_distance(G: np.ndarray) -> np.ndarray:
    """Mean over target pairs of the cross-validated squared distance, (...): equal to
    ``2 / (T - 1) * sum_t (a_t - abar) . (b_t - bbar)`` with centred half means."""
    T = G.shape[-1] // 2
    d2 = cv_geometry(G)
    iu = np.triu_indices(T, 1)
    return d2[..., iu[0], iu[1]].mean(axis=-1)


def contraction_ratio(msd_imagery: np.ndarray, msd_vision: np.ndarray) -> np.ndarray:
    """``sqrt(mean d2 imagery / mean d2 vision)``; NaN unless both are positive (a
    non-positive cross-validated mean says there is no measurable geometry)."""
    i = np.asarray(msd_imagery, dtype=np.float64)
    v = np.asarray(msd_vision, dtype=np.float64)
    ok = (i > 0) & (v > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(ok, np.sqrt(np.where(ok, i / np.where(ok, v, 1.0), 1.0)), np.nan)


def knn_sets(d: np.ndarray, k: int) -> np.ndarray:
    """(T, k) indices of each row's k nearest other targets (ties by index)."""
    d = np.array(d, dtype=np.float64)
    np.fill_diagonal(d, np.inf)
    return np.argsort(d, axis=1, kind="stable")[:, :k]


def knn_overlap(d_a: np.ndarray, d_b: np.ndarray, k: int) -> float:
    """Mean over targets of |kNN_a(t) & kNN_b(t)| / k."""
    T = d_a.shape[0]
    if not 1 <= k < T:
        raise ValueError(f"k must be in [1, {T - 1}], got {k}")
    na, nb = knn_sets(d_a, k), knn_sets(d_b, k)
    ma = np.zeros((T, T), dtype=bool)
    mb = np.zeros((T, T), dtype=bool)
    rows = np.arange(T)[:, None]
    ma[rows, na] = True
    mb[rows, nb] = True
    return float((ma & mb).sum() / (T * k))


def knn_test(d_a: np.ndarray, d_b: np.ndarray, k: int, n_permutations: int,
             rng: np.random.Generator) -> tuple[float, float, np.ndarray]:
    """kNN overlap, its one-sided p (overlap >= observed) against permutations of the
    target labels of ``d_b``, and the null draws."""
    obs = knn_overlap(d_a, d_b, k)
    T = d_a.shape[0]
    na = knn_sets(d_a, k)
    ma = np.zeros((T, T), dtype=bool)
    ma[np.arange(T)[:, None], na] = True
    nb = knn_sets(d_b, k)  # relabelled geometry: neighbours of perm[t] map back by inv
    null = np.empty(n_permutations)
    for j in range(n_permutations):
        perm = rng.permutation(T)
        inv = np.argsort(perm)
        # d_b[perm][:, perm]: target t takes target perm[t]'s row; its neighbours are
        # inv[nb[perm[t]]]
        mb = np.zeros((T, T), dtype=bool)
        mb[np.arange(T)[:, None], inv[nb[perm]]] = True
        null[j] = (ma & mb).sum() / (T * k)
    p = float((1 + (null >= obs - 1e-12).sum()) / (1 + n_permutations))
    return obs, p, null
