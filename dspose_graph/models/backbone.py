"""timm HRNet cut after stage 3, as TokenPose uses it.

timm's HRNet feature taps (``features_only=True``, ``feature_location`` ``"incre"`` or ``""``) all sit after
stage 4: index 1 is the stride-4 branch of the *final* stage, not of stage 3. TokenPose instead reads the
stride-4 branch of stage 3 and never builds stage 4. So we build timm's ``HighResolutionNet`` through
``timm.create_model`` on the meta device (nothing allocated), drop ``transition3``/``stage4`` and the fuse
layers of stage 3's last module that feed the two coarser outputs (TokenPose's ``multi_scale_output=False``),
and only then allocate and initialise what remains, as official TokenPose does (:func:`init_like_tokenpose`).
Stage-4 weights are never materialised or run.

Pretrained weights (``pretrained=PATH``): timm's HRNet and the ImageNet files official HRNet/TokenPose start
from (``hrnet_w32-36af842e.pth``, ``hrnet_w48-8ef0771d.pth``, HRNet-Image-Classification's ``cls_hrnet.py``)
name stage 1-3 tensors alike (``conv1.weight``, ``layer1.0.conv1.weight``, ``transition1.0.0.weight``,
``stage2.0.branches.0.0.conv1.weight``, ``stage3.3.fuse_layers.0.2.0.weight``, ...): timm ported that code
and its module indices, and the modules official HRNet leaves as ``None`` are parameter-free ``Identity`` in
timm. The loader therefore reads both layouts by name; it also finds the backbone inside a whole-model file
(TokenPose's ``pre_feature.``, MMPose's ``backbone.``, ours ``backbone.net.``) and accepts files without
BatchNorm's ``num_batches_tracked`` counters (older PyTorch, and ignored by training anyway).

Shapes:
    B: batch, C: channels of the highest-resolution stage-3 branch (32 for W32, 48 for W48),
    H, W: input size. ``(B, 3, H, W) -> (B, C, H/4, W/4)``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)

BACKBONES = ("hrnet_w18_small", "hrnet_w18_small_v2", "hrnet_w18", "hrnet_w32", "hrnet_w48")
# Modules of timm's HighResolutionNet that TokenPose's stage-3 cut does not use.
_DROPPED = ("transition3", "stage4", "incre_modules", "downsamp_modules", "final_layer", "classifier")


# Where a whole-model file keeps the HRNet: TokenPose's pose models (pre_feature.), MMPose (backbone.), our
# DSPose (backbone.net.), an HRNetStage3 state dict (net.); a bare HRNet file has none.
_PREFIXES = ("", "backbone.net.", "pre_feature.", "backbone.", "net.")


@dataclass(frozen=True)
class PretrainedReport:
    """What :meth:`HRNetStage3.load_pretrained` took from a weight file."""

    source: str
    prefix: str
    loaded: int
    ignored: int


INIT_STD = 0.001  # official TokenPose/HRNet's random backbone: conv weights ~ N(0, 0.001^2)


def init_like_tokenpose(module: nn.Module) -> None:
    """Official TokenPose's random backbone (``HRNET_base.init_weights``): conv weights from N(0, 0.001^2), zero
    biases, BatchNorm weight 1 and bias 0 (timm would draw Kaiming-normal convs). Only a run without
    ``model.pretrained`` trains from it: a pretrained file replaces every stage 1-3 tensor."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, std=INIT_STD)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Weights from a ``.pth``/``.pt``/``.bin`` (torch) or ``.safetensors`` file, unwrapping common containers."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weight file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises several types for corrupt/pickled files
            raise ValueError(f"weight file {path} could not be read as a torch state dict: {e}") from e
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"weight file {path} holds no state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


class HRNetStage3(nn.Module):
    """The highest-resolution output of HRNet stage 3 (stride 4), built from timm's HRNet.

    Args:
        name: timm HRNet variant (one of :data:`BACKBONES`).
        pretrained: ``None``/``False`` for official TokenPose's random init (:func:`init_like_tokenpose`), a path
            to a timm/ImageNet HRNet weight file, or ``True`` for timm's own download (needs a network).
        device: where to allocate the weights (``"meta"`` builds shapes only, e.g. to count parameters).

    Shapes:
        input ``(B, 3, H, W)``, output ``(B, C, H/4, W/4)`` with ``C = self.out_channels``.
    """

    def __init__(self, name: str = "hrnet_w32", pretrained: bool | str | Path | None = None,
                 device: str | torch.device | None = None) -> None:
        super().__init__()
        if name not in BACKBONES:
            raise ValueError(f"unknown backbone {name!r}; valid: {', '.join(BACKBONES)}")
        self.name = name
        # head='' keeps timm from building the classification head; meta device allocates nothing.
        net = timm.create_model(name, pretrained=False, head="", device="meta")
        for attr in _DROPPED:
            if hasattr(net, attr):
                delattr(net, attr)
        last = net.stage3[-1]
        last.fuse_layers = last.fuse_layers[:1]
        last.multi_scale_output = False
        self.net = net.to_empty(device=device or "cpu")
        init_like_tokenpose(self.net)
        self.out_channels = int(net.stage3_cfg["num_channels"][0])
        if pretrained:
            self.load_pretrained(pretrained)

    def load_pretrained(self, pretrained: bool | str | Path) -> PretrainedReport:
        """Load the stage 1-3 weights from a timm or official HRNet ImageNet checkpoint (or a whole pose model).

        Every stage 1-3 tensor must be present (``num_batches_tracked`` may be absent) with this variant's
        shape; otherwise ``ValueError`` lists the missing or mismatched names. The file's other tensors
        (stage 4, classification head, a pose head) are ignored and counted.
        """
        if pretrained is True:
            source = f"timm:{self.name}"
            state = timm.create_model(self.name, pretrained=True, head="").state_dict()
        else:
            source = str(pretrained)
            state = read_state_dict(pretrained)
        own = self.net.state_dict()
        required = [k for k in own if not k.endswith("num_batches_tracked")]
        prefix = max(_PREFIXES, key=lambda p: sum(p + k in state for k in required))
        missing = [k for k in required if prefix + k not in state]
        if missing:
            raise ValueError(
                f"weight file {source} lacks {len(missing)} of {len(required)} {self.name} stage 1-3 tensors "
                f"(looked for names {'with prefix ' + repr(prefix) if prefix else 'without prefix'}): "
                f"{', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}; expected a timm or official "
                f"HRNet ImageNet {self.name} checkpoint (e.g. hrnet_w32-36af842e.pth for hrnet_w32)"
            )
        taken = {k: state[prefix + k] for k in own if prefix + k in state}
        bad = [f"{k}: {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in taken.items() if v.shape != own[k].shape]
        if bad:
            raise ValueError(f"weight file {source} does not fit {self.name}: {len(bad)} stage 1-3 tensors differ in "
                             f"shape (file vs model), e.g. {'; '.join(bad[:5])}")
        self.net.load_state_dict(taken, strict=False)
        report = PretrainedReport(source=source, prefix=prefix, loaded=len(taken), ignored=len(state) - len(taken))
        log.info("loaded %d %s stage 1-3 tensors from %s (prefix %r; ignored %d others)", report.loaded, self.name,
                 source, prefix, report.ignored)
        return report

    def forward(self, x: Tensor) -> Tensor:
        n = self.net
        x = n.act1(n.bn1(n.conv1(x)))
        x = n.act2(n.bn2(n.conv2(x)))
        x = n.layer1(x)
        xl = [t(x) for t in n.transition1]
        yl = n.stage2(xl)
        xl = [yl[i] if isinstance(t, nn.Identity) else t(yl[-1]) for i, t in enumerate(n.transition2)]
        return n.stage3(xl)[0]
