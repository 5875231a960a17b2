"""Recovery fine-tune for the pruned digits CNN: ``--finetune edgec.benchmarks.zoo.digits_finetune:finetune``.

edgec calls ``finetune(module)`` after pruning with the pruned model (a ``torch.fx.GraphModule`` taking
the same inputs as the original, in eval mode) and exports what it returns. This one trains a few epochs
on the digits training split (never the held-out split) with a fixed seed and one thread, so the result
is the same on every run; it takes a few seconds on 2 cores.
"""

from __future__ import annotations

from typing import Any

from edgec.benchmarks.zoo.digits import SEED, load_data

EPOCHS = 8
LEARNING_RATE = 1e-3
BATCH = 64


def finetune(module: Any, epochs: int = EPOCHS) -> Any:
    """Train ``module`` in place on the digits training split and return it in eval mode."""
    import torch

    data = load_data()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convolutions: deterministic sums and no oversubscription
    torch.manual_seed(SEED)
    x, y = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    opt = torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=LEARNING_RATE)
    gen = torch.Generator().manual_seed(SEED)
    module.train()
    try:
        for _ in range(epochs):
            order = torch.randperm(len(x), generator=gen)
            for start in range(0, len(x), BATCH):
                idx = order[start:start + BATCH]
                opt.zero_grad()
                loss = torch.nn.functional.cross_entropy(module(x[idx]), y[idx])
                loss.backward()
                opt.step()
    finally:
        torch.set_num_threads(threads)
    return module.eval()
