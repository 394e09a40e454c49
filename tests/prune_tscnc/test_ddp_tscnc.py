"""Two-process DistributedDataParallel training step with TSCNCPruner (gloo, CPU)."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from prune_tscnc import TSCNCPruner, penalty


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _make_model():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4),
    )


_MODES = ("pruner", "penalty")


def _train_all_modes(rank: int, world_size: int, port: int, result_path: str) -> None:
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size
    )
    try:
        results = {mode: _train_step(rank, world_size, mode) for mode in _MODES}
        if rank == 0:
            results["start"] = _make_model().state_dict()
            torch.save(results, result_path)
    finally:
        dist.destroy_process_group()
    # Leave without running destructors. With torch 2.13, gloo's process-group destructor joins
    # its worker threads while holding the GIL, and a worker still releasing a collective's
    # tensors waits for the GIL: an intermittent deadlock at exit. Errors above still raise.
    os._exit(0)


def _train_step(rank: int, world_size: int, mode: str):
    """Run two DDP training steps and return every rank's flattened parameters."""
    model = _make_model()
    example = torch.randn(2, 3, 8, 8)
    pruner = None
    if mode == "pruner":
        pruner = TSCNCPruner(model, example, ignored_layers=[model[7]],
                             lambda_sparse=1e-2, lambda_cond=1e-2)
    ddp = nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.SGD(ddp.parameters(), lr=0.1)

    # Each rank gets different data, as with a DistributedSampler.
    generator = torch.Generator().manual_seed(100 + rank)
    inputs = torch.randn(4, 3, 8, 8, generator=generator)
    targets = torch.randint(0, 4, (4,), generator=generator)

    for _ in range(2):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(ddp(inputs), targets)
        if mode == "penalty":
            loss = loss + penalty(ddp, lambda_sparse=1e-2, lambda_cond=1e-2)
        loss.backward()
        if pruner is not None:
            before = model[0].weight.grad.clone()
            pruner.regularize(ddp)
            assert not torch.equal(before, model[0].weight.grad)
        optimizer.step()

    flat = torch.cat([parameter.detach().flatten() for parameter in model.parameters()])
    gathered = [torch.empty_like(flat) for _ in range(world_size)]
    dist.all_gather(gathered, flat)
    return gathered


def test_ddp_weights_identical_after_step(tmp_path):
    result_path = str(tmp_path / "weights.pt")
    mp.spawn(_train_all_modes, args=(2, _free_port(), result_path), nprocs=2, join=True)

    results = torch.load(result_path)
    start = torch.cat([tensor.flatten() for name, tensor in results["start"].items()
                       if "running" not in name and "num_batches" not in name])
    for mode in _MODES:
        rank0, rank1 = results[mode]
        assert torch.equal(rank0, rank1), mode
        assert not torch.equal(rank0, start), mode
