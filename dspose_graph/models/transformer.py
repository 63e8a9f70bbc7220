"""TokenPose's token Transformer: patch tokens + sine positions + one learnable token per keypoint.

Shapes (this module):
    B: batch, C: backbone channels, Hf, Wf: feature map size, ph, pw: patch size, P: patches
    ``(Hf/ph)*(Wf/pw)``, K: keypoints, D: token dim, S: number of Transformer stages.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def sine_position_embedding(h: int, w: int, dim: int, temperature: float = 10000.0) -> Tensor:
    """Frozen 2-D sine table ``(1, h*w, dim)`` laid out as TokenPose's (y half then x half, sin/cos interleaved).

    Positions are the 1-based row/column index normalised to ``(0, 2*pi]``.
    """
    if dim % 4:
        raise ValueError(f"sine position embedding needs a token dim divisible by 4, got {dim}")
    half = dim // 2
    eps = 1e-6
    y = torch.arange(1, h + 1, dtype=torch.float32) / (h + eps) * 2 * math.pi
    x = torch.arange(1, w + 1, dtype=torch.float32) / (w + eps) * 2 * math.pi
    freq = temperature ** (2 * (torch.arange(half) // 2) / half)

    def encode(v: Tensor) -> Tensor:
        a = v[:, None] / freq  # (n, half)
        return torch.stack((a[:, 0::2].sin(), a[:, 1::2].cos()), dim=2).flatten(1)

    ey = encode(y)[:, None, :].expand(h, w, half)
    ex = encode(x)[None, :, :].expand(h, w, half)
    return torch.cat((ey, ex), dim=2).reshape(1, h * w, dim)


def attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """``softmax(q k^T / sqrt(d)) v`` over ``(B, heads, N, d)`` tensors.

    ``F.scaled_dot_product_attention`` everywhere but in one case: bfloat16 on the CPU with gradients (training
    under bf16 autocast). There the fused CPU kernel's backward is slower in bf16 than in fp32 (TokenPose's 273
    tokens of 24 channels, batch 8, 2 cores: 28 ms forward+backward vs 18 ms fp32) and the plain
    matmul-softmax-matmul takes 13-24 ms in bf16 (``python benchmarks/bench_model.py --kernels``); the DSPose-B
    bf16 train step drops from 1.36 to 1.17 s (docs/decisions/model.md). Same maths; the softmax input is bf16
    there, as autocast makes it for any bf16 matmul (tests/test_model_runtime.py checks both against fp32).
    """
    if q.dtype == torch.bfloat16 and q.device.type == "cpu" and torch.is_grad_enabled():
        return (q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5).softmax(dim=-1) @ v
    return F.scaled_dot_product_attention(q, k, v)


class Attention(nn.Module):
    """Multi-head self-attention (scale ``1/sqrt(D/heads)``); the kernel is :func:`attention`'s choice."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"token dim {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = attention(q, k, v)
        return self.proj(y.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    """Pre-norm Transformer block: ``x + Attn(LN(x))`` then ``x + MLP(LN(x))`` with a GELU MLP."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class KeypointTokenEncoder(nn.Module):
    """Feature map -> keypoint tokens, as TokenPose (``sine-full`` positions).

    The feature map is cut into ``ph x pw`` patches, each flattened (patch row, patch column, channel) and
    linearly embedded; the sine table is added to the visual tokens, K learnable keypoint tokens are put in
    front, and the sequence goes through ``sum(depths)`` blocks grouped in stages. As in TokenPose's
    ``sine-full`` mode the positions are added to the visual tokens again before every block except the first
    block of each stage. The keypoint tokens after each stage are concatenated (TokenPose-L reads 3 stages).

    Shapes:
        input ``(B, C, Hf, Wf)``, output ``(B, K, S*D)``.
    """

    def __init__(self, in_channels: int, feature_size: tuple[int, int], patch_size: tuple[int, int],
                 num_keypoints: int, dim: int, depths: tuple[int, ...], heads: int, mlp_ratio: float) -> None:
        super().__init__()
        (fw, fh), (pw, ph) = feature_size, patch_size
        if fw % pw or fh % ph:
            raise ValueError(
                f"feature map {fw}x{fh} (w x h, input/4) is not divisible by the patch grid {pw}x{ph}; "
                f"choose an input size whose quarter is a multiple of the patch size"
            )
        self.patch_size = (ph, pw)
        self.num_keypoints = num_keypoints
        self.out_dim = dim * len(depths)
        self.patch_embed = nn.Linear(in_channels * ph * pw, dim)
        # A Parameter with requires_grad=False (not a buffer) so that it is counted and stored as TokenPose does.
        self.pos_embed = nn.Parameter(sine_position_embedding(fh // ph, fw // pw, dim), requires_grad=False)
        self.keypoint_tokens = nn.Parameter(torch.zeros(1, num_keypoints, dim))
        self.stages = nn.ModuleList(
            nn.ModuleList(Block(dim, heads, mlp_ratio) for _ in range(d)) for d in depths
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.trunc_normal_(self.keypoint_tokens, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, feature: Tensor) -> Tensor:
        b, c, h, w = feature.shape
        ph, pw = self.patch_size
        # (B, C, h, w) -> (B, P, ph*pw*C) with each patch flattened row, column, channel.
        x = feature.reshape(b, c, h // ph, ph, w // pw, pw).permute(0, 2, 4, 3, 5, 1).reshape(b, -1, ph * pw * c)
        x = self.patch_embed(x) + self.pos_embed
        x = torch.cat((self.keypoint_tokens.expand(b, -1, -1), x), dim=1)
        k = self.num_keypoints
        outs = []
        for stage in self.stages:
            for i, block in enumerate(stage):
                if i > 0:
                    x = torch.cat((x[:, :k], x[:, k:] + self.pos_embed), dim=1)
                x = block(x)
            outs.append(x[:, :k])
        return torch.cat(outs, dim=2)
