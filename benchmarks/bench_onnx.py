"""Inference speed of an exported model in ONNX Runtime against PyTorch eager (fp32) and PyTorch's fastest path
on this machine, same weights, same batch, one run (images/s of the network's forward pass; the crop, flip test
and decode around it are the same code for all).

PyTorch's paths are those of ``dspose_graph.models.runtime`` (docs/speed.md): fp32 eager (the reference),
bf16 + channels_last, and with ``--compile`` bf16 + channels_last + torch.compile; "fastest PyTorch" is the best
of them in this run. Timings alternate between the runtimes round by round (medians), so that load changes on a
shared machine hit all alike. ONNX Runtime gets the same thread count as torch.

    python benchmarks/bench_onnx.py                       # dspose_b (random weights), batch 8, 2 threads
    python benchmarks/bench_onnx.py --weights dspose_t_synthetic --batch 32
    python benchmarks/bench_onnx.py --compile             # adds the compiled path (minutes of compiling on a CPU)
"""

from __future__ import annotations

import argparse
import copy
import tempfile
from pathlib import Path
from typing import Callable

import torch

from timing import round_robin


def _model(args: argparse.Namespace):
    """``(model, what it is, codec name)``; the codec only labels the ONNX file (the forward pass ignores it)."""
    from dspose_graph.data.codec import get_codec
    from dspose_graph.models import create_model
    from dspose_graph.models.checkpoint import inference_spec, load_model
    from dspose_graph.weights import resolve_weights

    if args.weights:
        model, state = load_model(resolve_weights(args.weights), "cpu")
        return model, args.weights, inference_spec(state, model).codec
    torch.manual_seed(0)
    return create_model(args.preset).eval(), f"{args.preset} (random weights)", get_codec().name


def main(argv: list[str] | None = None) -> int:
    from dspose_graph.export import OnnxModel, export_onnx, import_onnxruntime
    from dspose_graph.models.runtime import prepare_model

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="dspose_b", help="model preset with random weights (default dspose_b)")
    p.add_argument("--weights", help="a checkpoint or shipped weight name instead of --preset")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--compile", action="store_true", help="also time bf16 + channels_last + torch.compile")
    args = p.parse_args(argv)
    import_onnxruntime()  # says which extra to install before anything is built
    torch.set_num_threads(args.threads)
    model, what, codec = _model(args)
    w, h = model.input_size
    images = torch.randn(args.batch, 3, h, w, generator=torch.Generator().manual_seed(0))
    paths = {"pytorch fp32 eager": {}, "pytorch bf16+channels_last": {"precision": "bf16", "channels_last": True}}
    if args.compile:
        paths["pytorch bf16+channels_last+compile"] = {"precision": "bf16", "channels_last": True, "compile": True,
                                                       "freeze": True}
    fns: dict[str, Callable[[], object]] = {}
    for name, options in paths.items():
        prepared = prepare_model(copy.deepcopy(model), "cpu", **options)
        fns[name] = lambda prepared=prepared: prepared(images)
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        onnx_path = export_onnx(model, Path(tmp) / "model.onnx", codec=codec)
        session = OnnxModel(onnx_path, "cpu", threads=args.threads)
        fns["onnxruntime fp32"] = lambda: session(images)
        for fn in fns.values():  # first calls: compiling, ORT's graph optimisation
            fn()
        seconds = round_robin(fns, args.rounds, args.warmup)
    ort_version = import_onnxruntime().__version__
    print(f"forward pass of {what}: batch {args.batch}, {args.threads} threads, median of {args.rounds} interleaved "
          f"rounds (torch {torch.__version__}, onnxruntime {ort_version})")
    eager = seconds["pytorch fp32 eager"]
    print(f"{'runtime':<38}{'images/s':>10}{'x eager':>9}")
    for name, s in seconds.items():
        print(f"{name:<38}{args.batch / s:>10.1f}{eager / s:>9.2f}")
    fastest = min((n for n in seconds if n.startswith("pytorch")), key=seconds.get)
    ort = seconds["onnxruntime fp32"]
    print(f"onnxruntime vs PyTorch eager: {eager / ort:.2f}x; vs the fastest PyTorch path ({fastest}): "
          f"{seconds[fastest] / ort:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
