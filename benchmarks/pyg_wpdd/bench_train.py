"""Training throughput of WPDDFormer against the CGCNN-style baseline on Perov-5 batches.

Run from the repository root with ``python benchmarks/pyg_wpdd/bench_train.py``. Builds the
graphs of 256 Perov-5 crystals (k = 16 edges, WPDD with k = 50), then times full training
steps (forward, L1 loss, backward, AdamW step) at batch size 64 for each model in turn and
prints crystals per second and the ratio to the baseline. Wall time and process CPU time are
both reported, because the wall time of a shared machine depends on its load.
"""
import argparse
import time
from pathlib import Path

import torch
from torch_geometric.loader import DataLoader

from pyg_wpdd._train_config import build_model, build_transform, load_config
from pyg_wpdd._train_data import load_crystals

PROJECT_DIR = Path(__file__).resolve().parents[2]
CONFIG = PROJECT_DIR / 'configs' / 'pyg_wpdd' / 'perov5_heat_ref_wpddformer.yaml'

MODELS = {
    'CGCNN (baseline, width 64)': {'name': 'cgcnn'},
    'WPDDFormer width 64 (demo)': {'name': 'wpddformer', 'channels': 64, 'num_gaussians': 64},
    'WPDDFormer width 256 (reference)': {'name': 'wpddformer'},
}


def time_training(model, loader, seconds: float, warmup: int = 2):
    """Runs training steps for about ``seconds`` after ``warmup`` steps and returns
    (graphs per wall second, graphs per CPU second, steps)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    batches = list(loader)

    def step(batch):
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.l1_loss(model(batch), batch.y)
        loss.backward()
        optimizer.step()

    for batch in batches[:warmup]:
        step(batch)

    graphs, steps = 0, 0
    wall_start, cpu_start = time.perf_counter(), time.process_time()
    while time.perf_counter() - wall_start < seconds or steps < 3:
        batch = batches[steps % len(batches)]
        step(batch)
        graphs += batch.num_graphs
        steps += 1
    wall = time.perf_counter() - wall_start
    cpu = time.process_time() - cpu_start
    return graphs / wall, graphs / cpu, steps


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--seconds', type=float, default=30.0,
                        help='timed seconds per model (default: 30)')
    parser.add_argument('--crystals', type=int, default=256,
                        help='Perov-5 crystals to build graphs for (default: 256)')
    args = parser.parse_args()

    config = load_config(CONFIG, {'data': {'max_crystals': args.crystals},
                                  'train': {'progress': False}})
    graphs = load_crystals(config['data'], build_transform(config['graph']), seed=0,
                           progress=False)
    loader = DataLoader(graphs, batch_size=64, shuffle=True,
                        generator=torch.Generator().manual_seed(0), drop_last=True)
    edges = sum(g.num_edges for g in graphs) / len(graphs)
    print(f'{len(graphs)} Perov-5 crystals, {edges:.1f} edges per crystal, batch 64, '
          f'torch {torch.__version__}, {torch.get_num_threads()} threads')

    results = {}
    for name, model_cfg in MODELS.items():
        torch.manual_seed(0)
        model = build_model(model_cfg, config['graph'])
        params = sum(p.numel() for p in model.parameters())
        wall_rate, cpu_rate, steps = time_training(model, loader, args.seconds)
        results[name] = (wall_rate, cpu_rate)
        print(f'{name:<34s} {params:>10,d} params  {wall_rate:8.1f} crystals/s wall  '
              f'{cpu_rate:8.1f} crystals/CPU-s  ({steps} steps)')

    base_wall, base_cpu = next(iter(results.values()))
    print('\nThroughput relative to the CGCNN baseline (higher is faster):')
    for name, (wall_rate, cpu_rate) in list(results.items())[1:]:
        print(f'  {name:<34s} {wall_rate / base_wall:5.2f}x wall   '
              f'{cpu_rate / base_cpu:5.2f}x CPU')


if __name__ == '__main__':
    main()
