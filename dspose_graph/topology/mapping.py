"""Carry a physical topology from one skeleton to another (the paper's MPII -> COCO mapping, as a rule).

The paper clusters MPII and uses, for COCO, five groups: head, shoulders, elbows + wrists, hips,
knees + ankles. That is the MPII partition pushed through three rules, which work for any pair of
schemas whose joints share names up to a ``left_``/``l_`` spelling:

1. *Keep the rest.* A target joint with a source counterpart takes the counterpart's cluster.
   A source joint that the target lacks (MPII's thorax, pelvis) is represented by its skeleton
   neighbours present in the target (COCO's shoulders, hips), which take its cluster instead: MPII
   annotates the thorax between the shoulders and the pelvis between the hips, so in COCO the
   shoulders *are* the upper torso.
2. *Group symmetric joints.* Two clusters that are mirror images under the target's flip pairs merge.
3. *Group the head joints.* Target joints with no source counterpart (COCO's face) form one group.

On MPII's six clusters this yields exactly COCO's five groups (tested).
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np

from dspose_graph.topology.physical import canonical_labels
from dspose_graph.topology.schemas import KeypointSchema

log = logging.getLogger(__name__)

_SPELLINGS = (("left_", "l_"), ("right_", "r_"))


def canonical_name(name: str) -> str:
    """Joint name with side prefixes spelled ``l_``/``r_`` and lower case, for matching across schemas."""
    n = name.lower()
    for long, short in _SPELLINGS:
        if n.startswith(long):
            return short + n[len(long):]
    return n


def correspondence(source: KeypointSchema, target: KeypointSchema) -> dict[int, int]:
    """``{target index: source index}`` for joints present in both schemas (by canonical name)."""
    src = {canonical_name(n): i for i, n in enumerate(source.keypoints)}
    return {t: src[canonical_name(n)] for t, n in enumerate(target.keypoints) if canonical_name(n) in src}


def map_clusters(source: KeypointSchema, source_labels: Sequence[int] | np.ndarray, target: KeypointSchema) -> np.ndarray:
    """``(K_target,)`` group labels of ``target`` derived from ``source``'s clusters by the three rules above."""
    source_labels = np.asarray(source_labels)
    if source_labels.shape != (source.num_keypoints,):
        raise ValueError(f"source labels have shape {source_labels.shape}; expected ({source.num_keypoints},) for schema {source.name!r}")
    match = correspondence(source, target)
    if not match:
        raise ValueError(f"schemas {source.name!r} and {target.name!r} share no joint names; cannot map clusters")
    labels = np.full(target.num_keypoints, -1, dtype=np.int64)
    for t, s in match.items():
        labels[t] = source_labels[s]
    # Rule 1: target joints standing in for a missing source joint take that joint's cluster.
    present = set(match.values())
    src_to_tgt = {s: t for t, s in match.items()}
    for a, b in source.skeleton:
        for missing, neighbour in ((a, b), (b, a)):
            if missing not in present and neighbour in present:
                labels[src_to_tgt[neighbour]] = source_labels[missing]
    # Rule 2: merge mirror-image clusters.
    parent = {int(c): int(c) for c in np.unique(labels[labels >= 0])}

    def find(c: int) -> int:
        while parent[c] != c:
            c = parent[c]
        return c

    for i, j in target.flip_pairs:
        if labels[i] >= 0 and labels[j] >= 0:
            ri, rj = find(int(labels[i])), find(int(labels[j]))
            parent[max(ri, rj)] = min(ri, rj)
    mapped = labels >= 0
    labels[mapped] = [find(int(c)) for c in labels[mapped]]
    # Rule 3: unmatched target joints (the face, for MPII -> COCO) form one group.
    if (~mapped).any():
        labels[~mapped] = labels.max() + 1
        log.debug("joints without a counterpart in %s grouped together: %s", source.name,
                  [target.keypoints[i] for i in np.flatnonzero(~mapped)])
    return canonical_labels(labels)
