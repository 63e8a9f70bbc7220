"""The benchmarks are found by name and run: ``dspose bench gpu`` without CUDA says so, the data benchmark's
references agree with our pipeline before it times them (on real images), the kernel table prints. Timings
themselves are never asserted."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dspose_graph.benchmarks import available, benchmarks_dir, run_benchmark, select_benchmarks


def test_the_checkouts_benchmarks_are_found_by_name(tmp_path):
    assert benchmarks_dir() == Path(__file__).resolve().parents[1] / "benchmarks"
    assert select_benchmarks("codec") == {"codec": benchmarks_dir() / "bench_codec.py"}
    assert select_benchmarks("all") == available() and {"codec", "data", "gpu", "model"} <= set(available())
    with pytest.raises(ValueError, match=r"unknown benchmark 'nope'; available: \['codec', .*\] or 'all'"):
        select_benchmarks("nope")
    # A bench file's main(argv) runs with its folder on sys.path (for shared helpers), removed after.
    (tmp_path / "bench_x_helper.py").write_text("ANSWER = 3\n")
    (tmp_path / "bench_x.py").write_text("import bench_x_helper as h\n"
                                         "def main(argv):\n    return h.ANSWER + len(argv)\n")
    assert run_benchmark(tmp_path / "bench_x.py", ["a"]) == 4 and str(tmp_path) not in sys.path


@pytest.mark.slow
def test_bench_gpu_without_cuda_runs_the_training_path_on_the_cpu_and_says_so(monkeypatch, capsys, tmp_path,
                                                                           coco_mini, write_config):
    # CUDA-less mode: the same path (config's loader with a worker, uint8 crops, trainer, evaluation) on the CPU.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    config = write_config(tmp_path / "tiny.yaml", coco_mini, tmp_path / "unused")
    benches = available()
    assert "gpu" in benches
    argv = ["--config", str(config), "--set", "data.image_dtype=uint8", "--precision", "fp32,bf16", "--steps", "2",
            "--eval-crops", "4", "--json", str(tmp_path / "rows.json")]
    assert run_benchmark(benches["gpu"], argv) == 0
    out = capsys.readouterr().out
    assert "CUDA-less mode: no CUDA device is available here" in out and "say nothing about a GPU" in out
    assert "2 epochs of 2 steps (8 crops each" in out and "evaluation of 4 crops" in out
    for label in ("fp32", "bf16 autocast"):
        assert re.search(rf"^{label} +NCHW +\d+\.\d +\d+\.\d +\d\.\d\d +\d+\.\d +\d+\.\d% +- +\d+\.\d +\d+\.\d$",
                         out, re.M), label
    assert "compare:" in out and "data wait" in out and "scaling efficiency" in out
    rows = json.loads((tmp_path / "rows.json").read_text())["rows"]
    assert [(r["precision"], r["channels_last"], r["steps"]) for r in rows] == [("fp32", False, 2), ("bf16", False, 2)]
    assert all(r["images_per_s"] > 0 and 0 <= r["data_wait"] < 1 and "PCK@0.2" in r["metrics"] for r in rows)


@pytest.mark.slow
def test_bench_gpu_under_torchrun_measures_ddp_and_prints_once(coco_mini, tmp_path, child_env, write_config):
    # Two gloo processes on the CPU: one table from rank 0, images counted over both ranks.
    config = write_config(tmp_path / "tiny.yaml", coco_mini, tmp_path / "unused", workers=0)
    env = child_env()
    env["CUDA_VISIBLE_DEVICES"] = ""
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          "--module", "dspose_graph", "bench", "gpu", "--config", str(config), "--steps", "2",
                          "--eval-crops", "4", "--json", str(tmp_path / "rows.json")],
                         env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("CUDA-less mode") == 1 and "torchrun, 2 processes" in res.stdout
    assert "DDP's scaling efficiency" in res.stdout and res.stdout.count("compare:") == 1
    saved = json.loads((tmp_path / "rows.json").read_text())
    row = saved["rows"][0]
    assert saved["world_size"] == 2 and row["steps"] == 2
    assert row["per_gpu"] == pytest.approx(row["images_per_s"] / 2)


def test_bench_gpu_refuses_an_unknown_precision(monkeypatch, coco_mini, write_config, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    config = write_config(tmp_path / "tiny.yaml", coco_mini, tmp_path / "unused")
    with pytest.raises(ValueError, match="--precision 'none': expected a comma-separated list of fp32, bf16, fp16"):
        run_benchmark(available()["gpu"], ["--config", str(config), "--precision", "none"])


def test_bench_data_checks_its_references_then_prints_the_table(coco_mini, capsys):
    """bench_data first checks that both references build our crops and targets (it raises otherwise)."""
    assert run_benchmark(available()["data"], ["--root", str(coco_mini), "--samples", "8", "--workers", "0",
                                                       "--batch", "4", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    for row in ("reference, per-pixel targets", "reference, HRNet patch loop", "ours ", "ours' decoding alone"):
        assert re.search(rf"^{re.escape(row)}.*\d+\.\d+", out, re.M), row
    assert re.search(r"goal >= 2x end to end vs the per-pixel reference: (met|NOT met) \(\d+\.\d\dx\)", out)
    assert re.search(r"evaluation read \(\d+ persons in \d+ images.* sharing one decode per image \(\d+\.\d\dx\)", out)


def test_bench_model_kernels_prints_fp32_and_bf16(capsys):
    assert run_benchmark(available()["model"], ["--kernels", "--batch", "1", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    convs = [line for line in out.splitlines() if line.startswith("conv 3x3")]
    assert len(convs) == 3 and all(len(re.findall(r"\d+\.\d\d", line)) == 3 for line in convs)  # ms, ms, ratio
    assert out.count("attention forward") == 4
