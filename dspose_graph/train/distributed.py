"""Distributed data parallel through ``torchrun``: this rank's device, process-group setup, collectives.

``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; when they are
absent everything here degrades to a single process. The backend is NCCL on CUDA and Gloo on CPU.
Multi-node runs are the same code: ``torchrun --nnodes N --node_rank i --rdzv_endpoint HOST:PORT ...``.

One place decides the device: :func:`resolve_device` reads ``LOCAL_RANK`` from the environment, so a rank is on
``cuda:LOCAL_RANK`` from the first call, before the process group exists. :func:`init_distributed` makes that
device the current CUDA device and binds the process group to it (``device_id``); :class:`DistInfo` carries it,
and the object collectives below run on it. NCCL's object collectives stage their bytes on the *current* CUDA
device, so a rank left on ``cuda:0`` would make every rank talk through GPU 0 (a hang or an NCCL error at the
first gather).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, TypeVar

import torch
import torch.distributed as dist

from dspose_graph.train.cpus import available_cpus

log = logging.getLogger(__name__)
T = TypeVar("T")
# Minutes a collective may wait for the other ranks before the process group gives up (torch's own default).
DEFAULT_TIMEOUT_MIN = 10.0


class RankFailedError(RuntimeError):
    """Another rank failed; this one stops too instead of waiting for it at the next collective."""


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job and the device it computes and communicates on."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1  # processes on this node (torchrun's LOCAL_WORLD_SIZE)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def _env_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} is not an integer (set by torchrun)") from None
    if value < 0:
        raise ValueError(f"environment variable {name}={value} must be >= 0")
    return value


def env_info(env: Mapping[str, str] | None = None) -> DistInfo:
    """Rank, world size and local rank from ``torchrun``'s variables (one process when unset); CPU device."""
    env = os.environ if env is None else env
    world = max(_env_int(env, "WORLD_SIZE", 1), 1)
    if world == 1:
        return DistInfo()
    if "RANK" not in env:
        raise ValueError(f"WORLD_SIZE={world} but RANK is not set: launch multi-process runs with torchrun")
    rank, local = _env_int(env, "RANK", 0), _env_int(env, "LOCAL_RANK", 0)
    if rank >= world:
        raise ValueError(f"RANK={rank} is not below WORLD_SIZE={world}")
    local_world = max(_env_int(env, "LOCAL_WORLD_SIZE", world), 1)
    return DistInfo(rank=rank, world_size=world, local_rank=local, local_world_size=local_world)


def local_cuda_index(info: DistInfo, count: int) -> int:
    """The CUDA index this rank uses: ``LOCAL_RANK``, or 0 when the launcher shows each process only its own GPU
    (SLURM or Kubernetes with one GPU per task: one visible device, whatever ``LOCAL_RANK`` says)."""
    return 0 if count == 1 else info.local_rank


def resolve_device(name: str, info: DistInfo | None = None) -> torch.device:
    """The device of this rank: ``"auto"`` -> ``cuda:LOCAL_RANK`` when CUDA is available, else CPU.

    ``"cuda"`` means ``cuda:LOCAL_RANK`` (``cuda:0`` where each process sees only its own GPU); an explicit
    ``cuda:N`` must equal it in a multi-process run (each rank owns one GPU). ``info`` defaults to
    :func:`env_info`, so the answer is right before the process group exists. Raises ``ValueError`` when CUDA is
    asked for but absent, or ``LOCAL_RANK`` has no visible GPU.
    """
    info = env_info() if info is None else info
    if name == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        name = "cuda"
    device = torch.device(name)
    if device.type != "cuda":
        return device
    if not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available (use run.device=cpu)")
    count = torch.cuda.device_count()
    local = local_cuda_index(info, count)
    if device.index is None:
        device = torch.device("cuda", local)
    elif info.enabled and device.index != local:
        raise ValueError(f"device {name!r} on rank {info.rank} with LOCAL_RANK={info.local_rank}: under torchrun "
                         f"each rank uses cuda:LOCAL_RANK (give run.device=cuda or auto; pick GPUs with "
                         f"CUDA_VISIBLE_DEVICES)")
    if device.index >= count:
        raise ValueError(f"device cuda:{device.index} (LOCAL_RANK={info.local_rank}) requested but only {count} "
                         f"CUDA device(s) are visible: start at most {count} processes per node")
    return device


def init_distributed(device: torch.device, timeout_min: float = DEFAULT_TIMEOUT_MIN) -> DistInfo:
    """Join the ``torchrun`` process group if launched by it (NCCL for CUDA, Gloo otherwise).

    On CUDA the rank's device is made current and given to the process group as ``device_id`` (NCCL binds its
    communicator to it eagerly); it must be ``cuda:LOCAL_RANK`` (see :func:`resolve_device`). A collective that
    waits more than ``timeout_min`` minutes for another rank fails instead of hanging (``run.dist_timeout``).
    """
    info = env_info()
    device = torch.device(device)
    if device.type == "cuda":
        local = local_cuda_index(info, torch.cuda.device_count())
        if device.index is None:
            device = torch.device("cuda", local)
        if info.enabled and device.index != local:
            raise ValueError(f"rank {info.rank} (LOCAL_RANK={info.local_rank}) was given {device}; each rank must "
                             f"run on cuda:LOCAL_RANK (resolve it with resolve_device)")
        torch.cuda.set_device(device)
    info = dataclasses.replace(info, device=device)
    if info.enabled and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, device_id=device if device.type == "cuda" else None,
                                timeout=datetime.timedelta(minutes=timeout_min))
        log.info("process group: backend %s, rank %d of %d on %s, timeout %g min", backend, info.rank,
                 info.world_size, device, timeout_min)
    return info


def setup_distributed(name: str, timeout_min: float = DEFAULT_TIMEOUT_MIN) -> DistInfo:
    """The one call a training entry point makes: decide this rank's device from ``name``, join the group."""
    return init_distributed(resolve_device(name), timeout_min)


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def process_group(name: str, timeout_min: float = DEFAULT_TIMEOUT_MIN) -> Iterator[DistInfo]:
    """Be in ``torchrun``'s process group inside the block (see :func:`setup_distributed`); leave it at the end
    only if this block joined it.

    A group is joined once per process: torchrun's rendezvous store serves one ``init_process_group``, and a
    second one after ``destroy_process_group`` waits forever. So an outer block (an experiment's rows) owns the
    group and the inner ones (each row's training) use it.
    """
    joined_here = not (dist.is_available() and dist.is_initialized())
    try:
        yield setup_distributed(name, timeout_min)
    finally:
        if joined_here:
            cleanup()


def _bind(info: DistInfo) -> None:
    """Make ``info.device`` the current CUDA device, where NCCL's object collectives stage their bytes."""
    if info.device.type == "cuda":
        torch.cuda.set_device(info.device)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        _bind(info)
        dist.barrier(device_ids=[info.device.index] if info.device.type == "cuda" else None)


def all_gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """Every rank's ``obj`` in rank order (a one-element list without DDP), staged on ``info.device``."""
    if not info.enabled:
        return [obj]
    _bind(info)
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, info: DistInfo) -> Any:
    """Rank 0's ``obj`` on every rank, staged on ``info.device``."""
    if not info.enabled:
        return obj
    _bind(info)
    box = [obj]
    dist.broadcast_object_list(box, src=0, device=info.device)
    return box[0]


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def on_main(fn: Callable[[], T], info: DistInfo, what: str) -> T:
    """``fn()`` on rank 0 only, and its result sent to every rank; ``what`` says what it does, for errors.

    An error on rank 0 is sent instead and raised on every rank (rank 0 raises its own), so no rank waits at the
    next collective for a rank that has stopped (a full disk while saving, a refused run-folder lock).
    """
    if not info.enabled:
        return fn()
    outcome: Any = None
    if info.is_main:
        try:
            outcome = (True, fn())
        except Exception as e:  # sent to the other ranks, then raised below
            error = e
            outcome = (False, _describe(e))
    outcome = broadcast_object(outcome, info)
    if not outcome[0]:
        if info.is_main:
            raise error
        raise RankFailedError(f"{what} failed on rank 0: {outcome[1]}")
    return outcome[1]


def on_every_rank(fn: Callable[[], T], info: DistInfo, what: str) -> T:
    """``fn()`` on every rank; when it fails on any, every rank raises (the failing ones their own error).

    For work whose failure on one rank would leave the others waiting at the next collective, e.g. predicting
    a shard of the held-out set that holds a bad image.
    """
    error: Exception | None = None
    result: Any = None
    try:
        result = fn()
    except Exception as e:  # reported to the other ranks first
        error = e
    if not info.enabled:
        if error is not None:
            raise error
        return result
    reports = all_gather_objects(None if error is None else _describe(error), info)
    if error is not None:
        raise error
    failed = [(rank, message) for rank, message in enumerate(reports) if message is not None]
    if failed:
        rank, message = failed[0]
        raise RankFailedError(f"{what} failed on rank {rank}: {message}")
    return result


def all_reduce_(tensor: torch.Tensor, info: DistInfo, op: str = "sum") -> torch.Tensor:
    """Reduce ``tensor`` (on ``info.device``) in place over all ranks with ``op`` (``"sum"``, ``"min"``, ``"max"``).

    The collective is queued on the device's stream; reading the result (``.item()``) is the host's only wait.
    """
    if info.enabled:
        dist.all_reduce(tensor, op={"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX}[op])
    return tensor


def broadcast_buffers(module: torch.nn.Module, info: DistInfo) -> None:
    """Overwrite every buffer of ``module`` (BatchNorm running statistics) with rank 0's.

    DDP broadcasts buffers at the start of each training forward, and that forward then updates them with each
    rank's own batch: after the last step the ranks differ. Rank 0's are the ones its checkpoint saves.
    """
    if not info.enabled:
        return
    for buf in module.buffers():
        dist.broadcast(buf, src=0)


def sync_batchnorm(model: torch.nn.Module, info: DistInfo, device: torch.device | None = None) -> torch.nn.Module:
    """``model`` with every BatchNorm computing its batch statistics over all ranks' batches (``run.sync_bn``).

    The layers are replaced in place (same parameters and buffers, so checkpoints load into a plain model). One
    process keeps plain BatchNorm; ``ValueError`` off CUDA (torch's SyncBatchNorm has no CPU kernels).
    """
    if not info.enabled:
        log.info("run.sync_bn: one process, BatchNorm already sees the whole batch")
        return model
    device = info.device if device is None else torch.device(device)
    if device.type != "cuda":
        raise ValueError(f"run.sync_bn needs CUDA: torch's SyncBatchNorm has no kernels for {device.type} "
                         "(set run.sync_bn=false)")
    converted = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    log.info("run.sync_bn: %d BatchNorm layers synchronised over %d processes",
             sum(isinstance(m, torch.nn.SyncBatchNorm) for m in converted.modules()), info.world_size)
    return converted


def workers_per_rank(requested: int | str, info: DistInfo, cpus: int | None = None) -> int:
    """DataLoader worker processes for one rank: ``requested`` when it is >= 0, else (``-1`` or ``"auto"``) the
    rule: the CPUs this process may use, split between the processes of its node, less one for the rank's own
    process, within [0, 16].

    ``cpus`` defaults to :func:`~dspose_graph.train.cpus.available_cpus`: the process's CPU affinity (what
    ``taskset`` allows), capped by the container's cgroup CPU quota (``--cpus``, a Kubernetes limit), not the
    machine's core count. Raises ``ValueError`` naming ``run.workers`` for anything else.
    """
    if isinstance(requested, str) and requested.strip().lower() == "auto":
        requested = -1
    if isinstance(requested, bool) or not isinstance(requested, int) or requested < -1:
        raise ValueError(f"run.workers={requested!r}: expected a number of worker processes >= 0, or 'auto' "
                         "for one per CPU of this rank's share less one")
    if requested >= 0:
        return requested
    if cpus is None:
        cpus = available_cpus()
    per_rank = cpus // max(info.local_world_size, 1)
    return max(0, min(16, per_rank - 1))
