r"""Physical-space adjacency from keypoint groups (Eq. 4 of the paper).

.. math::
    A_s[i, j] = 1 \text{ if } g(i) = g(j) \text{ else } 0, \qquad A_w = \mathbf{1}\mathbf{1}^\top,
    \qquad A_p = a \cdot A_s + b \cdot A_w, \quad a \in (0.7, 1),\ a + b = 1.

Shapes:
    K: number of keypoints. All matrices are ``(K, K)`` float arrays.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def labels_from_groups(groups: Sequence[Sequence[int]], num_keypoints: int) -> np.ndarray:
    """``(K,)`` group label per keypoint; ``groups`` must partition ``range(num_keypoints)``."""
    labels = np.full(num_keypoints, -1, dtype=np.int64)
    for g, members in enumerate(groups):
        for k in members:
            if not 0 <= k < num_keypoints:
                raise ValueError(f"group {g} has keypoint index {k} outside [0, {num_keypoints})")
            if labels[k] != -1:
                raise ValueError(f"keypoint {k} is in groups {labels[k]} and {g}; groups must not overlap")
            labels[k] = g
    missing = np.flatnonzero(labels < 0)
    if missing.size:
        raise ValueError(f"keypoints {missing.tolist()} are in no group; groups must cover range({num_keypoints})")
    return labels


def structural_adjacency(labels: Sequence[int] | np.ndarray) -> np.ndarray:
    """A_s: 1 where two keypoints share a group (self included), else 0."""
    labels = np.asarray(labels)
    return (labels[:, None] == labels[None, :]).astype(np.float32)


def physical_adjacency(labels: Sequence[int] | np.ndarray, a: float = 0.9) -> np.ndarray:
    """A_p = a·A_s + (1 - a)·ones (Eq. 4), with ``a`` validated to lie in the paper's open interval (0.7, 1)."""
    a = float(a)
    if not 0.7 < a < 1.0:
        raise ValueError(f"physical adjacency weight a={a} is outside the paper's range (0.7, 1); b = 1 - a")
    a_s = structural_adjacency(labels)
    return (a * a_s + (1.0 - a) * np.ones_like(a_s)).astype(np.float32)
