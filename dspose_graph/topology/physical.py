r"""Physical-space topology: mutual information between joints and its spectral clustering (Sec. 3.2).

Every joint is a random variable observed once per annotated person. The default variable is the joint's
2-D position normalised by the person's centre and scale, :math:`x_k = (p_k - c) / s`; the default
estimator bins each coordinate at its quantiles (``bins`` per axis, so ``bins^2`` states per joint) and
takes the plug-in mutual information of the joint histogram of every pair,

.. math::
    I(X_i; X_j) = \sum_{u, v} p(u, v) \log \frac{p(u, v)}{p(u)\, p(v)},

over the persons in which *both* joints are annotated (missing joints are dropped pairwise, never
filled). The matrix is normalised to [0, 1] by its largest off-diagonal value and clustered with
normalised spectral clustering (Ng, Jordan & Weiss): the first ``n`` eigenvectors of
:math:`L = I - D^{-1/2} W D^{-1/2}`, rows scaled to unit length, seeded k-means. The clusters are the
groups of A_s in Eq. (4). ``docs/topology.md`` has the table of variables and estimators tried.

Shapes:
    N: persons, K: joints, D: dimensions of one joint's variable.
    ``X``: ``(N, K, D)``; ``valid``: ``(N, K)`` bool; MI and affinities: ``(K, K)``; labels: ``(K,)``.
"""

from __future__ import annotations

import logging
from typing import Callable, Sequence

import numpy as np
from scipy.cluster.vq import kmeans2
from scipy.spatial import cKDTree
from scipy.special import digamma

from dspose_graph.topology.annotations import PoseStatistics

log = logging.getLogger(__name__)

DEFAULT_VARIABLE = "position"
DEFAULT_ESTIMATOR = "binned"


def default_bins(num_samples: int) -> int:
    """Bins per axis so the 4-D joint histogram of a pair holds about two persons per cell (2 to 10)."""
    return int(np.clip(round((num_samples / 2) ** 0.25), 2, 10))


# ---------------------------------------------------------------- random variables


def _position(stats: PoseStatistics, root: str | None) -> tuple[np.ndarray, np.ndarray]:
    x = (stats.keypoints - stats.centers[:, None]) / stats.scales[:, None, None]
    return x, stats.annotated


def _root_offset(stats: PoseStatistics, root: str | None) -> tuple[np.ndarray, np.ndarray]:
    if root is None:
        root = next((n for n in ("pelvis", "thorax") if n in stats.schema.keypoints), None)
        if root is None:
            raise ValueError(f"variable 'root_offset' needs root=<joint name> for schema {stats.schema.name!r}")
    r = stats.schema.index(root)
    x, valid = _position(stats, None)
    return x - x[:, r:r + 1], valid & valid[:, r:r + 1]


def _visibility(stats: PoseStatistics, root: str | None) -> tuple[np.ndarray, np.ndarray]:
    # Not annotated counts as not visible, so every person observes every joint's flag.
    return stats.visible[..., None].astype(np.float64), np.ones_like(stats.annotated)


VARIABLES: dict[str, Callable[[PoseStatistics, str | None], tuple[np.ndarray, np.ndarray]]] = {
    "position": _position,
    "root_offset": _root_offset,
    "visibility": _visibility,
}


def joint_variables(stats: PoseStatistics, variable: str = DEFAULT_VARIABLE, root: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The random variable of each joint: ``X (N, K, D)`` and ``valid (N, K)`` (observed or not)."""
    if variable not in VARIABLES:
        raise ValueError(f"unknown joint variable {variable!r}; valid: {sorted(VARIABLES)}")
    return VARIABLES[variable](stats, root)


# ---------------------------------------------------------------- estimators


def _quantile_codes(X: np.ndarray, valid: np.ndarray, bins: int) -> np.ndarray:
    """``(N, K)`` state index in ``[0, bins**D)`` from per-axis quantile bins of the valid samples."""
    n, k, d = X.shape
    codes = np.zeros((n, k), dtype=np.int64)
    qs = np.linspace(0, 1, bins + 1)[1:-1]
    for j in range(k):
        v = valid[:, j]
        if not v.any():
            continue
        code = np.zeros(int(v.sum()), dtype=np.int64)
        for c in range(d):
            x = X[v, j, c]
            code = code * bins + np.searchsorted(np.quantile(x, qs), x, side="right")
        codes[v, j] = code
    return codes


def mi_binned(X: np.ndarray, valid: np.ndarray, bins: int | None = None) -> np.ndarray:
    """Plug-in MI of quantile-binned joint variables, every pair over its jointly valid samples.

    The histograms of all K(K-1)/2 pairs come from one ``bincount`` over (pair, state_i, state_j); a
    person counts for a pair only where both joints are valid (pairwise deletion). Diagonal is 0.
    """
    n, k, d = X.shape
    bins = default_bins(int(valid.sum(0).min())) if bins is None else int(bins)
    if bins < 2:
        raise ValueError(f"bins must be >= 2, got {bins}")
    s = bins ** d
    codes = _quantile_codes(X, valid, bins)
    i, j = np.triu_indices(k, 1)
    both = valid[:, i] & valid[:, j]
    cell = (np.arange(i.size) * s + codes[:, i]) * s + codes[:, j]
    counts = np.bincount(cell[both], minlength=i.size * s * s).reshape(i.size, s, s).astype(np.float64)
    p = counts / np.maximum(counts.sum(axis=(1, 2), keepdims=True), 1)
    pi, pj = p.sum(axis=2, keepdims=True), p.sum(axis=1, keepdims=True)
    nz = p > 0
    terms = p[nz] * np.log(p[nz] / (pi * pj)[nz])
    pair_mi = np.bincount(np.nonzero(nz)[0], weights=terms, minlength=i.size)
    mi = np.zeros((k, k))
    mi[i, j] = mi[j, i] = pair_mi
    return mi


def mi_gaussian(X: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """MI of jointly Gaussian variables, ``0.5 log(|S_i| |S_j| / |S_ij|)``, from pairwise covariances."""
    n, k, d = X.shape
    mi = np.zeros((k, k))
    for i in range(k):
        for j in range(i + 1, k):
            m = valid[:, i] & valid[:, j]
            if m.sum() <= 2 * d:
                continue
            cov = np.cov(np.concatenate([X[m, i], X[m, j]], axis=1).T)
            logdet = [np.linalg.slogdet(c)[1] for c in (cov[:d, :d], cov[d:, d:], cov)]
            mi[i, j] = mi[j, i] = 0.5 * (logdet[0] + logdet[1] - logdet[2])
    return mi


def mi_ksg(X: np.ndarray, valid: np.ndarray, k: int = 3, max_samples: int | None = 4000, seed: int = 0) -> np.ndarray:
    """Kraskov-Stoegbauer-Grassberger kNN MI (estimator 1, max-norm), KD-trees from scipy.

    ``max_samples`` persons per pair (seeded subsample) keep the cost bounded; tiny jitter breaks the
    ties of integer pixel coordinates.
    """
    rng = np.random.default_rng(seed)
    n, kk, d = X.shape
    mi = np.zeros((kk, kk))
    for i in range(kk):
        for j in range(i + 1, kk):
            m = np.flatnonzero(valid[:, i] & valid[:, j])
            if m.size <= k + 1:
                continue
            if max_samples is not None and m.size > max_samples:
                m = np.sort(rng.choice(m, max_samples, replace=False))
            a = X[m, i] + 1e-9 * rng.standard_normal((m.size, d))
            b = X[m, j] + 1e-9 * rng.standard_normal((m.size, d))
            ab = np.concatenate([a, b], axis=1)
            eps = cKDTree(ab).query(ab, k + 1, p=np.inf)[0][:, -1] - 1e-12
            na = cKDTree(a).query_ball_point(a, eps, p=np.inf, return_length=True) - 1
            nb = cKDTree(b).query_ball_point(b, eps, p=np.inf, return_length=True) - 1
            val = digamma(k) + digamma(m.size) - np.mean(digamma(na + 1) + digamma(nb + 1))
            mi[i, j] = mi[j, i] = max(val, 0.0)
    return mi


ESTIMATORS: dict[str, Callable[..., np.ndarray]] = {"binned": mi_binned, "gaussian": mi_gaussian, "ksg": mi_ksg}


def mutual_information(X: np.ndarray, valid: np.ndarray, estimator: str = DEFAULT_ESTIMATOR,
                       names: Sequence[str] | None = None, **params) -> np.ndarray:
    """``(K, K)`` symmetric MI between joints (nats; diagonal set to 0) with the named estimator."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown MI estimator {estimator!r}; valid: {sorted(ESTIMATORS)}")
    if X.ndim != 3 or valid.shape != X.shape[:2]:
        raise ValueError(f"expected X (N, K, D) and valid (N, K), got {X.shape} and {valid.shape}")
    if not np.isfinite(X[valid]).all():
        raise ValueError("joint variables contain NaN/inf at observed joints; expected finite coordinates")
    names = list(names) if names is not None else [str(i) for i in range(X.shape[1])]
    seen = valid.sum(axis=0)
    if (seen < 2).any():
        raise ValueError(f"joints {[names[i] for i in np.flatnonzero(seen < 2)]} are observed in fewer than 2 persons; "
                         "expected every joint annotated at least twice")
    mi = ESTIMATORS[estimator](X, valid, **params)
    mi = 0.5 * (mi + mi.T)
    np.fill_diagonal(mi, 0.0)
    return mi


def normalize_mi(mi: np.ndarray) -> np.ndarray:
    """MI scaled to [0, 1] by its largest off-diagonal value (negative estimates clipped); diagonal 1."""
    m = np.clip(np.asarray(mi, dtype=np.float64), 0.0, None)
    np.fill_diagonal(m, 0.0)
    top = m.max()
    if not np.isfinite(top) or top <= 0:
        raise ValueError("mutual information is zero between every pair of joints; nothing to cluster")
    m = m / top
    np.fill_diagonal(m, 1.0)
    return m


# ---------------------------------------------------------------- spectral clustering


def _laplacian_spectrum(affinity: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    w = np.array(affinity, dtype=np.float64)
    if w.ndim != 2 or w.shape[0] != w.shape[1]:
        raise ValueError(f"affinity must be a square (K, K) matrix, got shape {w.shape}")
    if not np.isfinite(w).all() or (w < 0).any():
        raise ValueError("affinity must be finite and non-negative")
    np.fill_diagonal(w, 0.0)
    w = 0.5 * (w + w.T)
    deg = w.sum(axis=1)
    if (deg <= 0).any():
        raise ValueError(f"joints {np.flatnonzero(deg <= 0).tolist()} have zero affinity to every other joint")
    dinv = 1.0 / np.sqrt(deg)
    lap = np.eye(len(w)) - dinv[:, None] * w * dinv[None, :]
    return np.linalg.eigh(lap)


def eigengap(affinity: np.ndarray, max_clusters: int | None = None) -> int:
    """Cluster count ``n >= 2`` maximising the gap ``lambda_{n+1} - lambda_n`` of the normalised Laplacian."""
    values, _ = _laplacian_spectrum(affinity)
    k = len(values)
    top = k - 1 if max_clusters is None else min(int(max_clusters), k - 1)
    if top < 2:
        raise ValueError(f"eigengap needs at least 3 joints and max_clusters >= 2, got K={k}, max_clusters={max_clusters}")
    gaps = np.diff(values)[1:top]  # gaps[n - 2] = lambda_{n+1} - lambda_n, 1-based
    return int(np.argmax(gaps)) + 2


def canonical_labels(labels: Sequence[int] | np.ndarray) -> np.ndarray:
    """Relabel clusters 0, 1, ... in order of their lowest keypoint index (so equal partitions compare equal)."""
    labels = np.asarray(labels)
    order = {}
    for lab in labels:
        order.setdefault(int(lab), len(order))
    return np.array([order[int(lab)] for lab in labels], dtype=np.int64)


def spectral_clustering(affinity: np.ndarray, n_clusters: int, seed: int = 0, n_init: int = 20) -> np.ndarray:
    """``(K,)`` cluster labels of a symmetric affinity (normalised Laplacian + seeded k-means, best of ``n_init``)."""
    k = np.asarray(affinity).shape[0]
    if not isinstance(n_clusters, (int, np.integer)) or isinstance(n_clusters, bool) or not 1 <= n_clusters <= k:
        raise ValueError(f"number of clusters must be an integer in [1, K={k}], got {n_clusters!r}")
    if n_clusters == 1:
        return np.zeros(k, dtype=np.int64)
    _, vectors = _laplacian_spectrum(affinity)
    u = vectors[:, :n_clusters]
    u = u / np.maximum(np.linalg.norm(u, axis=1, keepdims=True), 1e-12)
    rng = np.random.default_rng(seed)
    best, best_inertia = None, np.inf
    for _ in range(n_init):
        centroids, labels = kmeans2(u, n_clusters, minit="++", seed=np.random.default_rng(rng.integers(2**32)))
        if len(np.unique(labels)) < n_clusters:
            continue
        inertia = float(((u - centroids[labels]) ** 2).sum())
        if inertia < best_inertia - 1e-12:
            best, best_inertia = labels, inertia
    if best is None:
        raise ValueError(f"k-means found no split into {n_clusters} non-empty clusters of {k} joints")
    return canonical_labels(best)


def cluster_mi(mi_normalized: np.ndarray, clusters: int | str, seed: int = 0, default: int | None = None) -> np.ndarray:
    """Labels for ``clusters`` = an integer, ``"eigengap"``, or ``"auto"`` (``default`` if given, else eigengap)."""
    if clusters == "auto":
        clusters = default if default is not None else "eigengap"
    if clusters == "eigengap":
        clusters = eigengap(mi_normalized)
        log.info("eigengap chose %d clusters", clusters)
    return spectral_clustering(mi_normalized, clusters, seed=seed)


def physical_mi(stats: PoseStatistics, variable: str = DEFAULT_VARIABLE, estimator: str = DEFAULT_ESTIMATOR,
                root: str | None = None, **params) -> np.ndarray:
    """Normalised ``(K, K)`` MI of a dataset's joints: variable -> estimator -> [0, 1]."""
    x, valid = joint_variables(stats, variable, root)
    mi = mutual_information(x, valid, estimator, names=stats.schema.keypoints, **params)
    return normalize_mi(mi)
