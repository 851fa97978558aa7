"""A stateless mixture: sample ``index`` is drawn from its own seeded RNG, so a resumed run sees the same data."""

import numpy as np
import torch


class MixedPairs(torch.utils.data.Dataset):
    def __init__(self, parts: dict, ratios: dict, seed: int = 0, length: int = 10 ** 9):
        self.parts = parts
        names = list(parts)
        weights = np.array([ratios[n] for n in names], float)
        self.names, self.probabilities = names, weights / weights.sum()
        self.seed, self.length = seed, length

    def __len__(self):
        return self.length

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng([self.seed, index])
        name = self.names[rng.choice(len(self.names), p=self.probabilities)]
        sample = self.parts[name].sample(rng)
        sample["source"] = self.names.index(name)
        for key in ("labels0", "labels1"):  # every sample has labels (-1: none) so that batches collate
            sample.setdefault(key, np.full(sample["warp01"].shape[:2], -1, np.int64))
        return sample
