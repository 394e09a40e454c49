r"""Train a crystal property model from a YAML config.

Usage::

    python -m pyg_wpdd.train configs/pyg_wpdd/perov5_heat_ref_wpddformer.yaml \
        [--override train.epochs=5 model.channels=64 ...] [--out-dir DIR]

The run splits the crystals with a seeded permutation into train, validation and test sets.
It fits the model with an L1 loss on standardised targets, AdamW and a one-cycle learning
rate schedule, keeps the weights with the lowest validation MAE, and writes to the output
folder:

- ``checkpoint.pt``: model weights, the full config and the target mean and standard deviation,
  loadable with ``torch.load(..., weights_only=True)``;
- ``metrics.json``: train/validation/test MAE in target units, next to a mean predictor that
  returns the training-set mean on the same split;
- ``parity.png``: predicted against true test targets;
- ``config.yaml``: the config after overrides.
"""
import argparse
import copy
import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import yaml
from torch import Tensor
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader
from tqdm.auto import tqdm

from ._files import give_default_permissions
from ._train_config import (build_model, build_transform, load_config, parse_overrides,
                              resolve_device)
from ._train_data import load_crystals, split_indices

CHECKPOINT_NAME = 'checkpoint.pt'
METRICS_NAME = 'metrics.json'
PARITY_NAME = 'parity.png'
CONFIG_NAME = 'config.yaml'


def seed_everything(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def target_statistics(graphs: Sequence[Data]) -> Tuple[Tensor, Tensor]:
    """Returns the mean and standard deviation ``[num_targets]`` of the targets ``y``."""
    y = torch.cat([g.y for g in graphs], dim=0).double()
    mean = y.mean(dim=0)
    std = y.std(dim=0, unbiased=False) if y.size(0) > 1 else torch.ones_like(mean)
    # A constant target would divide by zero; leave such targets unscaled.
    std = torch.where(std > 1e-12, std, torch.ones_like(std))
    return mean.float(), std.float()


@torch.no_grad()
def predict_loader(model: torch.nn.Module, loader: DataLoader, mean: Tensor, std: Tensor,
                   device: torch.device) -> Tuple[Tensor, Tensor]:
    """Returns (predictions, targets) in target units, both ``[num_graphs, num_targets]``."""
    model.eval()
    preds, targets = [], []
    for batch in loader:
        batch = batch.to(device)
        preds.append((model(batch) * std.to(device) + mean.to(device)).cpu())
        if getattr(batch, 'y', None) is not None:
            targets.append(batch.y.cpu())
    pred = torch.cat(preds) if preds else torch.empty(0, mean.numel())
    target = torch.cat(targets) if targets else torch.empty(0, mean.numel())
    return pred, target


def mean_absolute_error(pred: Tensor, target: Tensor) -> float:
    if pred.numel() == 0:
        return float('nan')
    return float((pred - target).abs().mean())


def atomic_torch_save(obj: Any, path: Path) -> None:
    """Writes ``obj`` with :func:`torch.save` to a temporary file, then renames it, so an
    interrupted run never leaves a truncated checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.', suffix='.tmp')
    os.close(fd)
    try:
        torch.save(obj, tmp)
        give_default_permissions(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write_text(text: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.', suffix='.tmp')
    try:
        with os.fdopen(fd, 'w', encoding='utf-8') as f:
            f.write(text)
        give_default_permissions(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_parity_plot(results: Dict[str, Tuple[Tensor, Tensor]], path: Path, target_name: str,
                     title: str = '') -> None:
    """Plots predicted against true values, one panel per model, with MAE in the legend."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    names = list(results)
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 4.2), squeeze=False)
    for ax, name in zip(axes[0], names):
        pred, true = results[name]
        pred, true = pred[:, 0].numpy(), true[:, 0].numpy()
        low = float(min(pred.min(), true.min()))
        high = float(max(pred.max(), true.max()))
        mae = float(abs(pred - true).mean())

        ax.plot([low, high], [low, high], color='0.6', lw=1, zorder=0)
        ax.scatter(true, pred, s=8, alpha=0.6, label=f'MAE {mae:.4f} (n={len(true)})')
        ax.set_xlabel(f'true {target_name}')
        ax.set_ylabel(f'predicted {target_name}')
        ax.set_title(name)
        ax.set_aspect('equal', adjustable='datalim')
        ax.legend(loc='upper left')
    if title:
        fig.suptitle(title)
    fig.tight_layout()

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.', suffix='.png')
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=120)
        give_default_permissions(tmp)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.remove(tmp)


def fit(model: torch.nn.Module, train_loader: DataLoader, val_loader: DataLoader,
        mean: Tensor, std: Tensor, train_cfg: Dict[str, Any], device: torch.device,
        desc: str = 'train') -> Dict[str, Any]:
    """Trains ``model`` in place and loads the weights with the lowest validation MAE.

    Returns a dict with ``epochs_run``, ``best_epoch``, ``best_val_mae``, ``train_seconds``
    and ``stopped_early`` (the ``max_minutes`` budget ran out before the last epoch).
    """
    epochs = train_cfg['epochs']
    optimizer = torch.optim.AdamW(model.parameters(), lr=train_cfg['lr'],
                                  weight_decay=train_cfg['weight_decay'])
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=train_cfg['lr'], total_steps=max(1, epochs * len(train_loader)),
        pct_start=train_cfg['pct_start'])
    mean_d, std_d = mean.to(device), std.to(device)
    budget = train_cfg['max_minutes']
    start = time.perf_counter()

    best_val, best_epoch, best_state = math.inf, 0, None
    epochs_run, stopped_early = 0, False
    bar = tqdm(range(1, epochs + 1), desc=desc, unit='epoch',
               disable=not train_cfg['progress'])
    for epoch in bar:
        model.train()
        total_loss, total_graphs = 0.0, 0
        for batch in train_loader:
            batch = batch.to(device)
            optimizer.zero_grad(set_to_none=True)
            loss = torch.nn.functional.l1_loss(model(batch), (batch.y - mean_d) / std_d)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total_loss += float(loss.detach()) * batch.num_graphs
            total_graphs += batch.num_graphs
        epochs_run = epoch

        val_pred, val_true = predict_loader(model, val_loader, mean, std, device)
        val_mae = mean_absolute_error(val_pred, val_true)
        # Without a validation set the last epoch is kept.
        if math.isnan(val_mae) or val_mae <= best_val:
            best_val, best_epoch = val_mae, epoch
            best_state = copy.deepcopy(model.state_dict())
        bar.set_postfix(loss=f'{total_loss / max(total_graphs, 1):.4f}', val_mae=f'{val_mae:.4f}')

        if budget is not None and time.perf_counter() - start > 60.0 * budget:
            stopped_early = epoch < epochs
            break
    bar.close()

    if best_state is not None:
        model.load_state_dict(best_state)
    return {
        'epochs_run': epochs_run,
        'best_epoch': best_epoch,
        'best_val_mae': best_val,
        'train_seconds': time.perf_counter() - start,
        'stopped_early': stopped_early,
    }


def make_loaders(graphs: List[Data], splits: Dict[str, Tensor], train_cfg: Dict[str, Any],
                 seed: int) -> Dict[str, DataLoader]:
    generator = torch.Generator().manual_seed(seed)
    loaders = {}
    for name, index in splits.items():
        subset = [graphs[i] for i in index.tolist()]
        if name == 'train':
            loaders[name] = DataLoader(subset, batch_size=train_cfg['batch_size'], shuffle=True,
                                       generator=generator,
                                       drop_last=len(subset) > train_cfg['batch_size'])
        else:
            loaders[name] = DataLoader(subset, batch_size=train_cfg['eval_batch_size'])
    return loaders


def run_training(config: Dict[str, Any], out_dir: Path,
                 graphs: Optional[List[Data]] = None) -> Dict[str, Any]:
    """Runs one training job as described in the module docstring and returns its metrics.

    Args:
        config: A validated config from :func:`pyg_wpdd._train_config.load_config`.
        out_dir: Output folder; created if missing.
        graphs: Crystals with graphs already built by the config's transforms, to share them
            between runs. Built from ``config['data']`` if :obj:`None`.
    """
    out_dir = Path(out_dir)
    train_cfg = config['train']
    seed = config['seed']
    if train_cfg['num_threads'] is not None:
        torch.set_num_threads(train_cfg['num_threads'])
    device = resolve_device(train_cfg['device'])

    if graphs is None:
        graphs = load_crystals(config['data'], build_transform(config['graph']),
                               seed=seed, progress=train_cfg['progress'])
    splits = split_indices(len(graphs), config['data']['split_fractions'], seed)
    loaders = make_loaders(graphs, splits, train_cfg, seed)
    train_graphs = [graphs[i] for i in splits['train'].tolist()]
    mean, std = target_statistics(train_graphs)

    seed_everything(seed)
    model = build_model(config['model'], config['graph'], num_targets=mean.numel()).to(device)
    history = fit(model, loaders['train'], loaders['val'], mean, std, train_cfg, device,
                  desc=config['model']['name'])

    results, metrics = {}, {}
    for name in ('train', 'val', 'test'):
        pred, true = predict_loader(model, loaders[name], mean, std, device)
        results[name] = (pred, true)
        metrics[f'{name}_mae'] = mean_absolute_error(pred, true)
        metrics[f'mean_predictor_{name}_mae'] = mean_absolute_error(
            mean.expand_as(true), true)
    metrics.update({
        'model': config['model']['name'],
        'target': config['data']['target'],
        'num_crystals': len(graphs),
        'split_sizes': {name: int(index.numel()) for name, index in splits.items()},
        'num_parameters': sum(p.numel() for p in model.parameters()),
        'seed': seed,
        'epochs': train_cfg['epochs'],
        **history,
        'device': str(device),
    })

    checkpoint = {
        'format_version': 1,
        'model_state': {k: v.detach().cpu() for k, v in model.state_dict().items()},
        'config': config,
        'target_mean': mean.tolist(),
        'target_std': std.tolist(),
        'metrics': dict(metrics),
    }
    atomic_torch_save(checkpoint, out_dir / CHECKPOINT_NAME)
    atomic_write_text(json.dumps(metrics, indent=2) + '\n', out_dir / METRICS_NAME)
    atomic_write_text(yaml.safe_dump(config, sort_keys=False), out_dir / CONFIG_NAME)

    test_pred, test_true = results['test']
    if test_true.numel() == 0:
        test_pred, test_true = results['val']
    save_parity_plot({config['model']['name']: (test_pred, test_true)},
                     out_dir / PARITY_NAME, config['data']['target'])
    metrics['outputs'] = {
        'checkpoint': str(out_dir / CHECKPOINT_NAME),
        'metrics': str(out_dir / METRICS_NAME),
        'parity_plot': str(out_dir / PARITY_NAME),
        'config': str(out_dir / CONFIG_NAME),
    }
    metrics['test_predictions'] = (test_pred, test_true)
    return metrics


def print_summary(metrics: Dict[str, Any]) -> None:
    target = metrics['target']
    print(f"{metrics['model']}: {metrics['num_parameters']:,} parameters, "
          f"{metrics['epochs_run']} epochs in {metrics['train_seconds']:.1f} s, "
          f"split {metrics['split_sizes']}, seed {metrics['seed']}")
    print(f"  test MAE ({target}): {metrics['test_mae']:.4f}   "
          f"mean predictor: {metrics['mean_predictor_test_mae']:.4f}   "
          f"best val MAE {metrics['best_val_mae']:.4f} at epoch {metrics['best_epoch']}")
    for name, path in metrics['outputs'].items():
        print(f'  wrote {name}: {path}')


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='python -m pyg_wpdd.train',
        description='Train WPDDFormer or the CGCNN baseline on crystals from a YAML config.')
    parser.add_argument('config', help='YAML config file, e.g. '
                        'configs/pyg_wpdd/perov5_heat_ref_wpddformer.yaml')
    parser.add_argument('--override', nargs='+', default=[], metavar='KEY=VALUE',
                        help='set config values by dotted key, e.g. train.epochs=5 '
                             'model.channels=64 (values are parsed as YAML)')
    parser.add_argument('--out-dir', default=None,
                        help="output folder (default: the config's out_dir, else "
                             "outputs/pyg_wpdd/<config name>)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    args = build_parser().parse_args(argv)
    config = load_config(args.config, parse_overrides(args.override))
    out_dir = Path(args.out_dir or config.get('out_dir') or
                   Path('outputs/pyg_wpdd') / Path(args.config).stem)
    metrics = run_training(config, out_dir)
    print_summary(metrics)
    return metrics


def _command_line() -> None:
    """Run :func:`main`, turning bad input into a usage error instead of a traceback."""
    try:
        main()
    except (ValueError, FileNotFoundError) as error:
        build_parser().error(str(error))


if __name__ == '__main__':
    _command_line()
