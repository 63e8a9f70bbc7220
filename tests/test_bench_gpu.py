"""``dspose bench gpu`` without CUDA: says so and exits 0 (the measuring part needs a GPU)."""

from __future__ import annotations

import torch

from dspose_graph.cli import bench


def test_bench_gpu_without_cuda_says_so_and_succeeds(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    benches = bench.available()
    assert "gpu" in benches
    assert bench._run_file(benches["gpu"], ["--no-compile"]) == 0
    assert "no CUDA device is available here; nothing measured" in capsys.readouterr().out
