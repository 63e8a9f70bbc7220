"""The learning-rate schedule in a checkpoint is plain data (no ``collections.Counter``), so that checkpoints
load with ``weights_only=True`` on every supported torch, and a resumed schedule continues where it stopped."""

from __future__ import annotations

import collections

import torch

from dspose_graph.train.trainer import load_scheduler_state, scheduler_state


def _schedule(lr: float = 1.0):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    return opt, torch.optim.lr_scheduler.MultiStepLR(opt, [2, 4], gamma=0.1)


def test_scheduler_state_loads_weights_only_and_resumes_the_schedule(tmp_path):
    opt, sched = _schedule()
    for _ in range(3):
        opt.step()
        sched.step()
    state = scheduler_state(sched)
    assert not any(isinstance(v, collections.Counter) for v in state.values())
    torch.save({"scheduler": state, "optimizer": opt.state_dict()}, tmp_path / "s.pt")
    saved = torch.load(tmp_path / "s.pt", weights_only=True)

    opt2, sched2 = _schedule(lr=5.0)
    opt2.load_state_dict(saved["optimizer"])
    load_scheduler_state(sched2, saved["scheduler"])
    assert isinstance(sched2.milestones, collections.Counter)
    for _ in range(3):  # epochs 3 (no milestone: a plain dict would raise KeyError), 4 (milestone), 5
        for o, s in ((opt, sched), (opt2, sched2)):
            o.step()
            s.step()
        assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    assert abs(opt.param_groups[0]["lr"] - 0.01) < 1e-12
