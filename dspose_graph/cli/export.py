"""``dspose export onnx``: the CLI of ``dspose_graph.export.export_checkpoint`` (ONNX, dynamic batch, checked)."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "export a checkpoint to ONNX (dynamic batch) and check onnxruntime against PyTorch"


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="format", metavar="FORMAT", required=True)
    o = sub.add_parser("onnx", help="ONNX with a dynamic batch axis (images -> heatmaps)")
    o.add_argument("--weights", required=True, help="checkpoint (.pt) or shipped weight name (dspose weights)")
    o.add_argument("--out", required=True, help="output .onnx file")
    o.add_argument("--opset", type=int, default=17, help="ONNX opset, 14 to 23 (default 17)")
    o.add_argument("--check-image", help="an image used for the onnxruntime-vs-PyTorch check (whole image = person)")
    o.add_argument("--atol", type=float, default=1e-4, help="largest allowed |onnxruntime - PyTorch| (default 1e-4)")
    o.add_argument("--no-check", action="store_true", help="skip the onnxruntime check")
    o.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32",
                   help="only fp32: the ONNX graph is float32 (the others are refused with the reason)")
    o.add_argument("--channels-last", action="store_true", help="refused: an ONNX graph has no memory format")
    o.add_argument("--compile", action="store_true", help="refused: torch.compile has no ONNX counterpart")


def run(args: argparse.Namespace) -> int:
    from dspose_graph.export import check_opset, export_checkpoint
    from dspose_graph.io import check_output_file

    check_opset(args.opset)
    check_output_file(args.out)
    path, diff, what = export_checkpoint(args.weights, Path(args.out), args.opset, args.check_image,
                                         None if args.no_check else args.atol, precision=args.precision,
                                         channels_last=args.channels_last, compile=args.compile)
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB, opset {args.opset}, dynamic batch)")
    if diff is not None:
        print(f"max |onnxruntime - PyTorch| on {what}: {diff:.3e} (tolerance {args.atol:g})")
    return 0
