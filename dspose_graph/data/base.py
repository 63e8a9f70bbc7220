"""The top-down sample pipeline shared by every dataset: one person box in, one training sample out.

Letters: K keypoints, (H, W) input crop height/width, (h, w) heatmap height/width.

A dataset is a list of :class:`PersonRecord` (one person box each); :class:`TopDownDataset` turns a
record into the sample dict of the data contract: decode the image, pick the crop (the box itself, or a
random one in training), warp image and keypoints with one affine, normalise, and draw Gaussian targets.
How the crop and the targets are laid out is the dataset's codec (``data.codec``, default ``"tokenpose"``).
"""

from __future__ import annotations

import collections
import logging
from dataclasses import dataclass
from typing import Any, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from dspose_graph.data.augment import AugmentParams, CropParams, sample_crop, transform_keypoints
from dspose_graph.data.codec import Codec, get_codec
from dspose_graph.data.image import IMAGE_DTYPES, decode_reduction, load_image, normalize_image, reduced_crop_matrix
from topology.schemas import KeypointSchema

log = logging.getLogger(__name__)

BAD_IMAGE_POLICIES = ("raise", "replace")


@dataclass(frozen=True)
class PersonRecord:
    """One person box: image file, ids, padded crop box (pixels) and ``(K, 3)`` keypoints (x, y, v)."""

    image_file: str
    image_id: int
    ann_id: int
    center: np.ndarray
    scale: np.ndarray
    score: float
    keypoints: np.ndarray


class RecordTable(Sequence[PersonRecord]):
    """Person records packed column-wise into a handful of NumPy arrays; a :class:`PersonRecord` is rebuilt on
    each access.

    A list of N records is about 5N Python objects. DataLoader workers are forked and share the parent's memory
    until a page is written, and reading a Python object writes its reference count (and the cyclic GC writes
    the header of every tracked one): each worker soon holds its own copy of all of them, for COCO train
    (150k persons) hundreds of MB per worker, times the workers of every rank. Arrays of numbers are never
    touched that way. Indexing with a slice gives a list of records.
    """

    def __init__(self, records: Sequence[PersonRecord]) -> None:
        records = list(records)
        names = [r.image_file.encode("utf-8") for r in records]
        self._names = np.frombuffer(b"".join(names), dtype=np.uint8)
        self._offsets = np.cumsum([0] + [len(b) for b in names], dtype=np.int64)
        self._ids = np.array([(r.image_id, r.ann_id) for r in records], dtype=np.int64).reshape(-1, 2)
        self._score = np.array([r.score for r in records], dtype=np.float64)
        if records:
            self._center = np.stack([np.asarray(r.center) for r in records])
            self._scale = np.stack([np.asarray(r.scale) for r in records])
            self._keypoints = np.stack([np.asarray(r.keypoints) for r in records])
        else:
            self._center = self._scale = np.zeros((0, 2))
            self._keypoints = np.zeros((0, 0, 3), dtype=np.float32)

    def __len__(self) -> int:
        return len(self._score)

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        n = len(self)
        i = int(index) + n if int(index) < 0 else int(index)
        if not 0 <= i < n:
            raise IndexError(f"record {index} out of range for {n} records")
        start, end = self._offsets[i], self._offsets[i + 1]
        return PersonRecord(image_file=self._names[start:end].tobytes().decode("utf-8"),
                            image_id=int(self._ids[i, 0]), ann_id=int(self._ids[i, 1]),
                            center=self._center[i].copy(), scale=self._scale[i].copy(), score=float(self._score[i]),
                            keypoints=self._keypoints[i].copy())


class TopDownDataset(Dataset):
    """Samples for top-down pose estimation from a list of person records.

    Args:
        records: the person boxes.
        schema: keypoint definition (flip pairs, upper body).
        input_size: model input ``(w, h)``.
        heatmap_size: target heatmap ``(w, h)``.
        train: draw random crops (:class:`AugmentParams`) instead of the box itself.
        sigma: Gaussian sigma in heatmap pixels.
        codec: crop and target conventions (``data.codec``: ``"tokenpose"`` default, ``"hrnet"``, ``"udp"``).
        unbiased: sub-pixel Gaussian centres (DARK targets) where the codec would round to the nearest pixel.
        augment: augmentation ranges (default :class:`AugmentParams`).
        on_bad_image: ``"replace"`` a sample whose image is missing or does not decode by the next
            readable one (counted in ``bad_images`` and logged), or ``"raise"``. Default: replace in
            training, raise in evaluation (where a silent substitute would corrupt the scores).
        seed: ``None`` draws augmentations from torch's generator (seeded per DataLoader worker and
            epoch); an int makes them a function of ``(seed, epoch, index)`` (see :meth:`set_epoch`).
        source: name of the annotation file, for messages.
        reduced_decode: decode JPEGs at 1/2, 1/4 or 1/8 size when the crop needs fewer pixels (faster;
            the crop's pixels then differ slightly from a full-size decode, see ``data.image.decode_reduction``).
        image_dtype: ``"float32"``: ``sample["image"]`` is the normalised crop; ``"uint8"``: the crop's pixels
            ``(3, H, W)``, for :func:`data.image.normalize_batch` after the transfer (bit-identical input).

    Attributes:
        records: the records as a :class:`RecordTable` (a few arrays, shared by forked workers as they are).
        bad_images: ``Counter`` image file -> records that could not be read from it (this process; each
            DataLoader worker logs its own and marks replaced samples with ``meta["replaced"]``).
    """

    def __init__(
        self,
        records: Sequence[PersonRecord],
        schema: KeypointSchema,
        *,
        input_size: Sequence[int] = (192, 256),
        heatmap_size: Sequence[int] = (48, 64),
        train: bool = False,
        sigma: float = 2.0,
        codec: str | Codec | None = None,
        unbiased: bool = False,
        augment: AugmentParams | None = None,
        on_bad_image: str | None = None,
        seed: int | None = None,
        source: str = "<records>",
        reduced_decode: bool = False,
        image_dtype: str = "float32",
    ) -> None:
        if image_dtype not in IMAGE_DTYPES:
            raise ValueError(f"image_dtype must be one of {IMAGE_DTYPES}, got {image_dtype!r}")
        on_bad_image = on_bad_image or ("replace" if train else "raise")
        if on_bad_image not in BAD_IMAGE_POLICIES:
            raise ValueError(f"on_bad_image must be one of {BAD_IMAGE_POLICIES}, got {on_bad_image!r}")
        for name, size in (("input_size", input_size), ("heatmap_size", heatmap_size)):
            if len(size) != 2 or min(size) < 2:
                raise ValueError(f"{name} must be (w, h) with both >= 2, got {tuple(size)}")
        self.records = records if isinstance(records, RecordTable) else RecordTable(records)
        self.schema = schema
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.heatmap_size = (int(heatmap_size[0]), int(heatmap_size[1]))
        self.aspect_ratio = self.input_size[0] / self.input_size[1]
        self.train = train
        self.sigma = float(sigma)
        self.codec = get_codec(codec)
        self.target = "subpixel" if unbiased and self.codec.target == "nearest" else self.codec.target
        self.augment = augment or AugmentParams()
        self.on_bad_image = on_bad_image
        self.seed = seed
        self.epoch = 0
        self.source = source
        self.bad_images: collections.Counter[str] = collections.Counter()
        self._unreadable: set[int] = set()
        self._flip_index = schema.flip_index
        self.reduced_decode = bool(reduced_decode)
        self.image_dtype = image_dtype
        self._decoded: tuple[str, int, np.ndarray] | None = None  # (file, reduction, pixels) of the last decode

    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's augmentations when ``seed`` is set (call once per epoch)."""
        self.epoch = int(epoch)

    def _rng(self, index: int) -> np.random.Generator:
        if self.seed is None:
            return np.random.default_rng(int(torch.randint(0, 2**62, ()).item()))
        return np.random.default_rng([self.seed, self.epoch, index])

    def _load(self, index: int, rng: np.random.Generator | None = None
              ) -> tuple[PersonRecord, np.ndarray, bool, CropParams, int]:
        """The record's image (with ``reduced_decode``, decoded only as large as its crop needs), the crop and the
        decode reduction; under the replace policy the next readable record's on failure."""
        n = len(self.records)
        for step in range(n):
            i = (index + step) % n
            if i in self._unreadable:
                continue
            record = self.records[i]
            crop = self.crop_for(record, rng)
            reduction = decode_reduction(crop.scale, self.input_size) if self.reduced_decode else 1
            try:
                return record, self._decode(record.image_file, reduction), step > 0, crop, reduction
            except (FileNotFoundError, ValueError) as e:
                if self.on_bad_image == "raise":
                    raise type(e)(f"{self.source}: record {i} (image_id {record.image_id}): {e}") from None
                self._unreadable.add(i)
                self.bad_images[record.image_file] += 1
                log.warning("%s: record %d: %s; replaced by the next readable sample", self.source, i, e)
        raise FileNotFoundError(f"{self.source}: none of the {n} images could be read (first: {self.records[0].image_file})")

    def _decode(self, path: str, reduction: int) -> np.ndarray:
        """:func:`load_image`, re-using the previous decode when consecutive samples share the image and reduction.

        Evaluation reads the persons of an image one after another (COCO val with detected boxes: ~20 per image),
        so each image is decoded once instead of once per person; shuffled training rarely repeats an image and
        pays one comparison. The shared pixels are read-only (the crop is a new array).
        """
        last = self._decoded
        if last is not None and last[0] == path and last[1] == reduction:
            return last[2]
        image = load_image(path, reduction)
        image.setflags(write=False)  # shared between samples: a write would corrupt the next person's crop
        self._decoded = (path, reduction, image)
        return image

    def crop_for(self, record: PersonRecord, rng: np.random.Generator | None) -> CropParams:
        """The crop of a record: the padded box in evaluation, a random one in training."""
        if not self.train or rng is None:
            return CropParams(center=record.center, scale=record.scale)
        return sample_crop(rng, record.center, record.scale, record.keypoints, self.schema, self.aspect_ratio, self.augment)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self.records):
            raise IndexError(f"{self.source}: index {index} out of range for {len(self.records)} samples")
        record, image, replaced, crop, reduction = self._load(index, self._rng(index) if self.train else None)
        return self.make_sample(index, record, image, crop, replaced, reduction)

    def targets(self, record: PersonRecord, crop: CropParams) -> tuple[np.ndarray, np.ndarray]:
        """Target heatmaps ``(K, h, w)`` and weights ``(K,)`` of ``record`` seen through ``crop`` (no image needed).

        The joints go to the heatmap through the codec's crop of the box onto the heatmap grid (TokenPose's
        ``trans_heatmap``), which for the plain and UDP codecs equals the input crop followed by the stride.
        """
        m = self.codec.crop_matrix(crop.center, crop.scale, crop.rotation, self.heatmap_size, flip=crop.flip)
        kp = transform_keypoints(record.keypoints, m, self._flip_index if crop.flip else None)
        return self.codec.encode(kp[:, :2], kp[:, 2] > 0, self.heatmap_size, self.sigma, target=self.target)

    def make_sample(
        self, index: int, record: PersonRecord, image: np.ndarray, crop: CropParams, replaced: bool = False,
        reduction: int = 1,
    ) -> dict[str, Any]:
        """The sample dict for ``record`` cut out of ``image`` (decoded at ``1/reduction``) with ``crop``."""
        m = self.codec.crop_matrix(crop.center, crop.scale, crop.rotation, self.input_size, flip=crop.flip)
        patch = cv2.warpAffine(image, reduced_crop_matrix(m, reduction), self.input_size, flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT)
        heatmap, weight = self.targets(record, crop)
        meta = {
            "index": torch.tensor(index, dtype=torch.int64),
            "image_id": torch.tensor(record.image_id, dtype=torch.int64),
            "ann_id": torch.tensor(record.ann_id, dtype=torch.int64),
            "center": torch.from_numpy(np.asarray(crop.center, dtype=np.float64).copy()),
            "scale": torch.from_numpy(np.asarray(crop.scale, dtype=np.float64).copy()),
            "rotation": torch.tensor(float(crop.rotation), dtype=torch.float64),
            "flip": torch.tensor(bool(crop.flip)),
            "score": torch.tensor(float(record.score), dtype=torch.float64),
            "keypoints": torch.from_numpy(record.keypoints.astype(np.float32)),
            "image_file": record.image_file,
            "replaced": torch.tensor(bool(replaced)),
        }
        return {
            "image": torch.from_numpy(np.ascontiguousarray(patch.transpose(2, 0, 1)) if self.image_dtype == "uint8"
                                      else normalize_image(patch)),
            "heatmap": torch.from_numpy(heatmap),
            "target_weight": torch.from_numpy(weight),
            "meta": meta,
        }
