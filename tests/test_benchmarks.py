"""The benchmarks run: ``dspose bench gpu`` without CUDA says so, the data benchmark's references agree with our
pipeline before it times them (on real images), the kernel table prints. Timings themselves are never asserted."""

from __future__ import annotations

import re

import torch

from dspose_graph.cli import bench


def test_bench_gpu_without_cuda_says_so_and_succeeds(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    benches = bench.available()
    assert "gpu" in benches
    assert bench._run_file(benches["gpu"], ["--no-compile"]) == 0
    assert "no CUDA device is available here; nothing measured" in capsys.readouterr().out


def test_bench_data_checks_its_references_then_prints_the_table(coco_mini, capsys):
    """bench_data first checks that both references build our crops and targets (it raises otherwise)."""
    assert bench._run_file(bench.available()["data"], ["--root", str(coco_mini), "--samples", "8", "--workers", "0",
                                                       "--batch", "4", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    for row in ("reference, per-pixel targets", "reference, HRNet patch loop", "ours ", "ours' decoding alone"):
        assert re.search(rf"^{re.escape(row)}.*\d+\.\d+", out, re.M), row
    assert re.search(r"goal >= 2x end to end vs the per-pixel reference: (met|NOT met) \(\d+\.\d\dx\)", out)
    assert re.search(r"evaluation read \(\d+ persons in \d+ images.* sharing one decode per image \(\d+\.\d\dx\)", out)


def test_bench_model_kernels_prints_fp32_and_bf16(capsys):
    assert bench._run_file(bench.available()["model"], ["--kernels", "--batch", "1", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    convs = [line for line in out.splitlines() if line.startswith("conv 3x3")]
    assert len(convs) == 3 and all(len(re.findall(r"\d+\.\d\d", line)) == 3 for line in convs)  # ms, ms, ratio
    assert out.count("attention forward") == 4
