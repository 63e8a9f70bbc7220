"""``dspose export onnx``: a checkpoint as an ONNX file with a dynamic batch axis, checked against PyTorch.

After writing, the command runs onnxruntime and PyTorch on the same input (``--check-image``, or a fixed
random batch) and prints the largest absolute heatmap difference; above ``--atol`` it fails.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

HELP = "export a checkpoint to ONNX (dynamic batch) and check onnxruntime against PyTorch"


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="format", metavar="FORMAT", required=True)
    o = sub.add_parser("onnx", help="ONNX with a dynamic batch axis (images -> heatmaps)")
    o.add_argument("--weights", required=True, help="checkpoint (.pt)")
    o.add_argument("--out", required=True, help="output .onnx file")
    o.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    o.add_argument("--check-image", help="an image used for the onnxruntime-vs-PyTorch check (whole image = person)")
    o.add_argument("--atol", type=float, default=1e-4, help="largest allowed |onnxruntime - PyTorch| (default 1e-4)")
    o.add_argument("--no-check", action="store_true", help="skip the onnxruntime check")


def run(args: argparse.Namespace) -> int:
    from dspose_graph.export import compare_onnx, export_onnx, top_t_margin
    from dspose_graph.predict import Predictor

    predictor = Predictor(args.weights, flip_test=False)
    model = predictor.model
    path = export_onnx(model, Path(args.out), opset=args.opset)
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB, opset {args.opset}, dynamic batch)")
    if args.no_check:
        return 0
    if args.check_image:
        from dspose_graph.data import load_image

        image = load_image(args.check_image)
        crops, _, _ = predictor.crop(image, np.array([[0.0, 0.0, image.shape[1], image.shape[0]]]))
        what = Path(args.check_image).name
    else:
        w, h = model.input_size
        crops = torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(0))
        what = "a seeded random batch of 2"
    diff = compare_onnx(path, model, crops)
    print(f"max |onnxruntime - PyTorch| on {what}: {diff:.3e} (tolerance {args.atol:g})")
    if diff > args.atol:
        margin = top_t_margin(model, crops)
        hint = ""
        if margin is not None and margin < 1e-6:
            hint = (f"; the model's top-t feature edges are decided by float rounding on this input (smallest gap "
                    f"between the t-th and (t+1)-th similarity: {margin:.1e}), so the two runtimes keep different "
                    f"edges: typical of an undertrained model whose keypoint tokens are nearly parallel")
        raise ValueError(f"{path}: onnxruntime output differs from PyTorch by {diff:.3e} > --atol {args.atol:g}{hint}")
    return 0
