"""Which device each torchrun rank picks, and which device its collectives use (CUDA queries patched on CPU)."""

from __future__ import annotations

import datetime

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from dspose_graph.train import distributed as D
from dspose_graph.train import evaluate


class FakeCuda:
    """Stands in for a node with ``count`` GPUs: records set_device and what the process group receives."""

    def __init__(self, monkeypatch, count: int = 4) -> None:
        self.current = torch.device("cuda", 0)
        self.set_calls: list[torch.device] = []
        self.init_kwargs: dict = {}
        self.collectives: list[tuple[str, torch.device, object]] = []
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
        monkeypatch.setattr(torch.cuda, "set_device", self.set_device)
        monkeypatch.setattr(dist, "is_initialized", lambda: False)
        monkeypatch.setattr(dist, "init_process_group", lambda **kw: self.init_kwargs.update(kw))
        monkeypatch.setattr(dist, "all_gather_object", self.all_gather_object)
        monkeypatch.setattr(dist, "broadcast_object_list", self.broadcast_object_list)
        monkeypatch.setattr(dist, "barrier", lambda device_ids=None: self.collectives.append(
            ("barrier", self.current, device_ids)))

    def set_device(self, device) -> None:
        self.current = torch.device(device)
        self.set_calls.append(self.current)

    def all_gather_object(self, out, obj) -> None:
        # NCCL stages object bytes on the current CUDA device: record it.
        self.collectives.append(("all_gather_object", self.current, None))
        out[:] = [obj] * len(out)

    def broadcast_object_list(self, box, src=0, device=None) -> None:
        self.collectives.append(("broadcast_object_list", self.current, device))


def _torchrun_env(monkeypatch, rank: int, world: int, local: int) -> None:
    for k, v in (("RANK", rank), ("WORLD_SIZE", world), ("LOCAL_RANK", local)):
        monkeypatch.setenv(k, str(v))


@pytest.mark.parametrize("rank,local", [(0, 0), (1, 1), (3, 3), (6, 2)])  # rank 6 = 2nd node, local rank 2
def test_each_rank_picks_cuda_local_rank_before_the_group_exists(monkeypatch, rank, local):
    FakeCuda(monkeypatch)
    _torchrun_env(monkeypatch, rank, 8, local)
    for name in ("auto", "cuda"):
        assert D.resolve_device(name) == torch.device("cuda", local)
    assert D.resolve_device("cpu") == torch.device("cpu")


def test_init_binds_the_process_group_and_current_device_to_the_local_gpu(monkeypatch):
    cuda = FakeCuda(monkeypatch)
    _torchrun_env(monkeypatch, rank=5, world=8, local=1)
    info = D.setup_distributed("auto")
    assert (info.rank, info.world_size, info.local_rank) == (5, 8, 1)
    assert info.device == torch.device("cuda", 1)
    assert cuda.set_calls == [torch.device("cuda", 1)]
    assert cuda.init_kwargs == {"backend": "nccl", "device_id": torch.device("cuda", 1),
                                "timeout": datetime.timedelta(minutes=D.DEFAULT_TIMEOUT_MIN)}


def test_collectives_run_on_the_rank_device_even_if_something_moved_the_current_device(monkeypatch):
    cuda = FakeCuda(monkeypatch)
    _torchrun_env(monkeypatch, rank=1, world=2, local=1)
    info = D.setup_distributed("cuda")
    cuda.current = torch.device("cuda", 0)  # e.g. a library call that switched devices
    assert D.all_gather_objects({"a": 1}, info) == [{"a": 1}, {"a": 1}]
    cuda.current = torch.device("cuda", 0)
    D.broadcast_object(True, info)
    D.barrier(info)
    gpu1 = torch.device("cuda", 1)
    assert cuda.collectives == [("all_gather_object", gpu1, None), ("broadcast_object_list", gpu1, gpu1),
                                ("barrier", gpu1, [1])]


def test_cpu_ranks_use_gloo_without_a_device_id(monkeypatch):
    cuda = FakeCuda(monkeypatch)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    _torchrun_env(monkeypatch, rank=1, world=2, local=1)
    info = D.setup_distributed("auto")
    assert info.device == torch.device("cpu") and cuda.set_calls == []
    assert cuda.init_kwargs == {"backend": "gloo", "device_id": None,
                                "timeout": datetime.timedelta(minutes=D.DEFAULT_TIMEOUT_MIN)}


def test_single_process_needs_no_group(monkeypatch):
    cuda = FakeCuda(monkeypatch, count=2)
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    info = D.setup_distributed("cuda:1")  # one process may pick any visible GPU
    assert not info.enabled and info.device == torch.device("cuda", 1) and cuda.init_kwargs == {}
    assert D.all_gather_objects(3, info) == [3] and D.broadcast_object(4, info) == 4 and cuda.collectives == []


@pytest.mark.parametrize("rank,local", [(3, 3), (9, 1)])
def test_a_launcher_showing_each_process_only_its_gpu_is_accepted(monkeypatch, rank, local):
    # SLURM / Kubernetes with one GPU per task: LOCAL_RANK > 0, but the process sees a single device, cuda:0.
    cuda = FakeCuda(monkeypatch, count=1)
    _torchrun_env(monkeypatch, rank=rank, world=16, local=local)
    assert D.resolve_device("auto") == D.resolve_device("cuda") == D.resolve_device("cuda:0") == torch.device("cuda", 0)
    info = D.setup_distributed("auto", timeout_min=2.5)
    assert info.device == torch.device("cuda", 0) and cuda.set_calls == [torch.device("cuda", 0)]
    assert cuda.init_kwargs == {"backend": "nccl", "device_id": torch.device("cuda", 0),
                                "timeout": datetime.timedelta(minutes=2.5)}
    with pytest.raises(ValueError, match="cuda:LOCAL_RANK"):
        D.resolve_device("cuda:1")


def test_sync_batchnorm_converts_on_cuda_and_is_refused_on_cpu():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU())
    weight = model[1].weight
    one = D.DistInfo()
    assert D.sync_batchnorm(model, one) is model and type(model[1]) is torch.nn.BatchNorm2d
    with pytest.raises(ValueError, match="run.sync_bn needs CUDA"):
        D.sync_batchnorm(model, D.DistInfo(rank=0, world_size=2))
    gpus = D.DistInfo(rank=1, world_size=2, local_rank=1, device=torch.device("cuda", 1))
    converted = D.sync_batchnorm(model, gpus)
    assert isinstance(converted[1], torch.nn.SyncBatchNorm) and converted[1].weight is weight
    assert set(converted.state_dict()) == set(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4),
                                                                  torch.nn.ReLU()).state_dict())


def test_bad_device_requests_are_refused_with_the_reason(monkeypatch):
    FakeCuda(monkeypatch, count=2)
    _torchrun_env(monkeypatch, rank=1, world=2, local=1)
    with pytest.raises(ValueError, match="cuda:LOCAL_RANK"):
        D.resolve_device("cuda:0")
    with pytest.raises(ValueError, match="cuda:LOCAL_RANK"):
        D.init_distributed(torch.device("cuda", 0))
    _torchrun_env(monkeypatch, rank=2, world=3, local=2)
    with pytest.raises(ValueError, match="only 2 CUDA device"):
        D.resolve_device("auto")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="CUDA is not available"):
        D.resolve_device("cuda")
    monkeypatch.setenv("LOCAL_RANK", "x")
    with pytest.raises(ValueError, match="LOCAL_RANK='x'"):
        D.env_info()
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("RANK", "3")
    with pytest.raises(ValueError, match="RANK=3 is not below WORLD_SIZE=3"):
        D.env_info()


def _gloo_worker(rank: int, world: int, init_file: str, results) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        info = D.DistInfo(rank=rank, world_size=world, local_rank=rank)
        gathered = D.all_gather_objects({"rank": rank, "x": [rank] * (rank + 1)}, info)
        chosen = D.broadcast_object(f"from {rank}", info)
        total = D.all_reduce_(torch.tensor([float(rank), 1.0]), info).tolist()
        low = D.all_reduce_(torch.tensor(float(rank) + 5.0), info, "min").item()
        bn = torch.nn.BatchNorm1d(3)
        bn.running_mean.fill_(float(rank + 1))
        D.broadcast_buffers(bn, info)

        def compute():
            if rank != 0:
                raise AssertionError("metrics computed off rank 0")
            return {"AP": 0.25}

        metrics = evaluate.metrics_once(compute, info)

        def fails():
            raise ValueError("no ground truth")

        try:
            evaluate.metrics_once(fails, info)
            error = None
        except (ValueError, RuntimeError) as e:
            error = (type(e).__name__, str(e))
        results[rank] = (gathered, chosen, total, low, bn.running_mean.tolist(), metrics, error)
    finally:
        dist.destroy_process_group()


def test_collectives_across_two_real_gloo_processes(tmp_path):
    results = mp.Manager().dict()
    mp.spawn(_gloo_worker, args=(2, str(tmp_path / "init"), results), nprocs=2, join=True)
    expected = [{"rank": 0, "x": [0]}, {"rank": 1, "x": [1, 1]}]
    for rank in (0, 1):
        gathered, chosen, total, low, running_mean, metrics, _ = results[rank]
        assert (gathered, chosen, total, low) == (expected, "from 0", [1.0, 2.0], 5.0)
        assert running_mean == [1.0, 1.0, 1.0]  # rank 0's BatchNorm statistics everywhere
        assert metrics == {"AP": 0.25}  # computed once, on rank 0
    # An evaluation error on rank 0 stops every rank instead of leaving the others waiting.
    assert results[0][-1] == ("ValueError", "no ground truth")
    assert results[1][-1] == ("RankFailedError", "evaluation failed on rank 0: ValueError: no ground truth")


def test_workers_per_rank_splits_the_cpus_between_the_node_processes():
    four = D.DistInfo(rank=5, world_size=8, local_rank=1, local_world_size=4)
    assert D.workers_per_rank("auto", four, cpus=64) == 15
    assert D.workers_per_rank(-1, four, cpus=16) == 3
    assert D.workers_per_rank(-1, four, cpus=4) == 0  # one CPU per rank: load in the rank's own process
    assert D.workers_per_rank(-1, D.DistInfo(), cpus=256) == 16
    assert D.workers_per_rank(-1, D.DistInfo()) >= 0  # this machine's affinity
    assert D.workers_per_rank(3, four, cpus=4) == 3  # an explicit count is kept
    for bad in (-2, "many", 1.5, True):
        with pytest.raises(ValueError, match="run.workers"):
            D.workers_per_rank(bad, four, cpus=8)


def test_local_world_size_comes_from_torchrun(monkeypatch):
    _torchrun_env(monkeypatch, rank=6, world=8, local=2)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert D.env_info().local_world_size == 4
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    assert D.env_info().local_world_size == 8  # no variable: assume one node


class _ShardWithBadImage(torch.utils.data.Dataset):
    """Four held-out crops of a COCO-17 model; sample 3 (in rank 1's shard of two) cannot be read."""

    def __init__(self, input_size) -> None:
        self.input_size = input_size

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> dict:
        if index == 3:
            raise ValueError("images/val/000003.jpg: cannot decode")
        w, h = self.input_size
        meta = {"center": np.array([50.0, 60.0]), "scale": np.array([80.0, 106.0]), "score": 1.0, "image_id": index,
                "ann_id": index, "keypoints": np.zeros((17, 3))}
        return {"image": torch.zeros(3, h, w), "meta": meta}


def _failure_worker(rank: int, world: int, init_file: str, out_dir: str, results) -> None:
    # A short timeout: without the error exchange a rank would wait here until it expires, not forever.
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=60))
    try:
        from dspose_graph.models import create_model
        from dspose_graph.train.config import ModelConfig, OptimConfig, RunConfig, TrainConfig
        from dspose_graph.train.trainer import Trainer

        info = D.DistInfo(rank=rank, world_size=world, local_rank=rank)
        torch.manual_seed(0)
        model = create_model("dspose_t")

        def full_disk():
            raise OSError(28, "No space left on device", "runs/x/last.pt")

        calls = {
            "save": lambda: D.on_main(full_disk, info, "saving runs/x/last.pt"),
            "shard": lambda: D.on_every_rank(lambda: 1 // (1 - rank), info, "counting"),
            "predict": lambda: evaluate.predict_dataset(model, _ShardWithBadImage(model.input_size), batch_size=1,
                                                        flip_test=False, info=info),
        }
        out = {}
        for name, call in calls.items():
            try:
                call()
                out[name] = None
            except Exception as e:
                out[name] = (type(e).__name__, str(e))
        out["ok"] = D.on_main(lambda: 41 + rank, info, "answering")
        config = TrainConfig(model=ModelConfig(name="dspose_t"), optim=OptimConfig(epochs=1, batch_size=2, milestones=[]),
                             run=RunConfig(out_dir=out_dir, workers=0, compile=True, progress=False, tensorboard=False))
        net = Trainer(model, torch.utils.data.TensorDataset(torch.zeros(8)), config, info=info).net
        out["net"] = (type(net).__name__, type(getattr(net, "_orig_mod", None)).__name__)
        results[rank] = out
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_a_failure_on_one_rank_stops_every_rank_and_compile_wraps_ddp(tmp_path):
    results = mp.Manager().dict()
    mp.spawn(_failure_worker, args=(2, str(tmp_path / "init"), str(tmp_path / "run"), results), nprocs=2, join=True)
    zero, one = results[0], results[1]
    # Rank 0 cannot save (a full disk): it raises its own error, rank 1 learns of it instead of waiting.
    assert zero["save"] == ("OSError", "[Errno 28] No space left on device: 'runs/x/last.pt'")
    assert one["save"] == ("RankFailedError", "saving runs/x/last.pt failed on rank 0: OSError: [Errno 28] No space "
                                              "left on device: 'runs/x/last.pt'")
    assert one["shard"] == ("ZeroDivisionError", "integer division or modulo by zero")
    assert zero["shard"] == ("RankFailedError", "counting failed on rank 1: ZeroDivisionError: integer division or "
                                                "modulo by zero")
    # A bad held-out image in rank 1's shard: rank 0, done with its own shard, stops too.
    assert one["predict"] == ("ValueError", "images/val/000003.jpg: cannot decode")
    assert zero["predict"] == ("RankFailedError", "predicting the held-out set failed on rank 1: ValueError: "
                                                  "images/val/000003.jpg: cannot decode")
    assert zero["ok"] == one["ok"] == 41
    # run.compile under DDP compiles the DDP-wrapped model, so DDP's bucket all-reduces overlap the backward.
    assert zero["net"] == one["net"] == ("OptimizedModule", "DistributedDataParallel")
