"""Codecs: the conventions that encode a person into a crop and targets and decode heatmaps back, as one choice.

A model is only as exact as the agreement between how its training targets were drawn and how its heatmaps are
read back. Every convention involved is a field of :class:`Codec`, and the named codecs of :data:`CODECS` set
them together so that encoding and decoding cannot drift apart:

- ``"tokenpose"`` (default): official TokenPose (leeyegy/TokenPose ``lib/``). The crop maps the box with the
  isotropic factor ``(dst_w - 1) / (src_w - 1)`` about ``((dst_w - 1) / 2, (dst_h - 1) / 2)``; the heatmap
  frame is its own crop of the box (not the input frame divided by a stride); ground-truth boxes are measured
  with their last pixel (``x2 - x1 + 1``), detection boxes are not clipped; targets are untruncated Gaussians
  at the exact sub-pixel joint; the flip test averages without a shift; DARK blurs with zero padding.
- ``"hrnet"``: SimpleBaseline/HRNet's plain crop (``dst / src`` about ``dst / 2`` per axis), boxes of size
  ``x2 - x1``, Gaussians centred on the nearest pixel and cut at 3 sigma, HRNet's one-pixel flip shift,
  DARK with reflected borders. This was the library's default before codecs existed.
- ``"udp"``: unbiased data processing (Huang et al., CVPR 2020): ``(dst - 1) / src`` about ``(dst - 1) / 2``
  per axis, sub-pixel Gaussians cut at 3 sigma, no flip shift, reflected DARK borders.

The legacy ``udp`` flag of the data and decoding functions maps onto codecs: ``udp=True`` is ``"udp"``,
``udp=False`` is ``"hrnet"`` (what it meant when it was written), ``udp=None`` defers to ``codec``.
"""

from __future__ import annotations

from dataclasses import dataclass

AFFINES = ("tokenpose", "plain", "udp")
TARGETS = ("tokenpose", "nearest", "subpixel")
BLUR_BORDERS = ("zero", "reflect")


@dataclass(frozen=True)
class Codec:
    """One consistent set of crop, target and decoding conventions.

    Attributes:
        name: the key in :data:`CODECS`.
        affine: crop geometry, ``"tokenpose"``, ``"plain"`` or ``"udp"`` (see ``transforms.crop_affine``).
        box_last_pixel: ground-truth boxes measure ``x2 - x1 + 1`` pixels (TokenPose) instead of ``x2 - x1``.
        clip_detections: clip detector boxes to the image as ground-truth boxes are (TokenPose does not).
        target: ``"tokenpose"`` (sub-pixel, untruncated, TokenPose's in-bounds rule), ``"nearest"`` (HRNet:
            centred on the nearest pixel, cut at 3 sigma) or ``"subpixel"`` (DARK/UDP: sub-pixel, cut).
        flip_shift: shift mirrored heatmaps one pixel right in the flip test (HRNet's ``SHIFT_HEATMAP``).
        blur_border: DARK's modulation blur pads with ``"zero"`` (TokenPose) or ``"reflect"`` (OpenCV default).
    """

    name: str
    affine: str
    box_last_pixel: bool
    clip_detections: bool
    target: str
    flip_shift: bool
    blur_border: str

    def __post_init__(self) -> None:
        for field_name, value, valid in (("affine", self.affine, AFFINES), ("target", self.target, TARGETS),
                                         ("blur_border", self.blur_border, BLUR_BORDERS)):
            if value not in valid:
                raise ValueError(f"codec {self.name!r}: {field_name} must be one of {list(valid)}, got {value!r}")


CODECS: dict[str, Codec] = {
    "tokenpose": Codec("tokenpose", affine="tokenpose", box_last_pixel=True, clip_detections=False,
                       target="tokenpose", flip_shift=False, blur_border="zero"),
    "hrnet": Codec("hrnet", affine="plain", box_last_pixel=False, clip_detections=True,
                   target="nearest", flip_shift=True, blur_border="reflect"),
    "udp": Codec("udp", affine="udp", box_last_pixel=False, clip_detections=True,
                 target="subpixel", flip_shift=False, blur_border="reflect"),
}
DEFAULT_CODEC = "tokenpose"


def get_codec(codec: str | Codec | None = None, udp: bool | None = None) -> Codec:
    """The :class:`Codec` named ``codec`` (default :data:`DEFAULT_CODEC`), or the one the legacy ``udp`` flag means.

    ``udp=True`` means ``"udp"`` and ``udp=False`` means ``"hrnet"``; giving both ``udp`` and a different
    ``codec`` is an error.
    """
    if udp is not None:
        legacy = "udp" if udp else "hrnet"
        if codec is not None and (codec.name if isinstance(codec, Codec) else codec) != legacy:
            name = codec.name if isinstance(codec, Codec) else codec
            raise ValueError(f"udp={udp} means codec {legacy!r} but codec {name!r} was given; pass only one")
        return CODECS[legacy]
    if codec is None:
        return CODECS[DEFAULT_CODEC]
    if isinstance(codec, Codec):
        return codec
    if codec not in CODECS:
        raise ValueError(f"unknown codec {codec!r}; valid: {sorted(CODECS)}")
    return CODECS[codec]
