"""The sampler carries each sample's epoch to persistent DataLoader workers, so their augmentation is exact."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset

from dspose_graph.train.sampling import ResumableSampler, SeededDataset


class _Draws(Dataset):
    """Each sample is a draw from the torch RNG (as a random augmentation is): it shows which seed was used."""

    def __len__(self) -> int:
        return 6

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.rand(1)


def test_persistent_worker_sees_each_epoch_and_restarts_mid_epoch():
    data = SeededDataset(_Draws(), seed=5)
    sampler = ResumableSampler(6, seed=5, with_epoch=True)
    loader = DataLoader(data, batch_size=2, sampler=sampler, num_workers=1, persistent_workers=True)

    def reference(epoch: int, start: int = 0) -> list[float]:
        plain = SeededDataset(_Draws(), seed=5)
        plain.set_epoch(epoch)
        order = ResumableSampler(6, seed=5)
        order.set_epoch(epoch, start)
        return [plain[i].item() for i in order]

    seen = {}
    for epoch, start in ((0, 0), (1, 0), (2, 2)):
        sampler.set_epoch(epoch, start)
        seen[epoch] = [v.item() for batch in loader for v in batch]
        assert seen[epoch] == reference(epoch, start), epoch
    assert seen[0] != seen[1][: len(seen[0])]
    assert list(ResumableSampler(6, seed=5, with_epoch=True))[:2] == [(0, i) for i in list(ResumableSampler(6, seed=5))[:2]]
