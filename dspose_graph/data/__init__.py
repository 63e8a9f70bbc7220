"""Datasets, augmentation and heatmap targets for top-down pose estimation (knows no model).

Every dataset's ``__getitem__`` returns ``{"image", "heatmap", "target_weight", "meta"}``; see
:class:`dspose_graph.data.base.TopDownDataset` and ``docs/datasets.md``.
"""

from dspose_graph.data.augment import AugmentParams, CropParams
from dspose_graph.data.base import PersonRecord, TopDownDataset
from dspose_graph.data.codec import CODECS, Codec, get_codec
from dspose_graph.data.coco import CocoKeypointDataset
from dspose_graph.data.image import IMAGENET_MEAN, IMAGENET_STD, load_image, normalize_image, warp_image
from dspose_graph.data.layouts import build_dataset
from dspose_graph.data.mpii import MPIIDataset
from dspose_graph.data.targets import gaussian_heatmaps

__all__ = [
    "AugmentParams", "CropParams", "PersonRecord", "TopDownDataset", "CocoKeypointDataset", "MPIIDataset",
    "IMAGENET_MEAN", "IMAGENET_STD", "load_image", "normalize_image", "warp_image", "build_dataset",
    "gaussian_heatmaps", "CODECS", "Codec", "get_codec",
]
