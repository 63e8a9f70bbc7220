"""Keypoint topologies for DSPose: dataset schemas, physical-space (mutual information + spectral
clustering) and feature-space (top-t cosine kNN) adjacency builders. Knows no model."""

from dspose_graph.topology.schemas import COCO17, MPII16, KeypointSchema, get_schema

__all__ = ["COCO17", "MPII16", "KeypointSchema", "get_schema"]
