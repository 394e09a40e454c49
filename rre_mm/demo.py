"""Train an RRENet detector on BCCD on CPU and evaluate it upright and rotated.

Run from the repository root::

    python -m rre_mm.demo --out-dir outputs/rre_mm [--minutes 10] [--baseline]

All steps use MMDetection's own machinery. The demo trains
``configs/rre_mm/rtmdet_rrenet-n_bccd.py`` with MMEngine's ``Runner`` for a
fixed number of iterations, stopping early if ``--minutes`` runs out, and
saves the checkpoint. It then evaluates VOC mAP@0.5 on the BCCD val split
with every image turned by 90 degrees (``Rot90`` in the test pipeline). For
the upright val mAP it reloads the checkpoint with MMDetection's shipped
``tools/test.py`` in a subprocess. Last, it draws the predictions on one val
image. ``--baseline`` trains plain RTMDet-tiny the same
way; ``--strict`` adds the RRENet without G-Biases.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO_ROOT / 'configs' / 'rre_mm'
DEFAULT_DATA_ROOT = REPO_ROOT / 'data' / 'detection' / 'bccd'

# Name shown in the summary, and config file, of each model the demo can train.
MODELS = {
    'rrenet': 'rtmdet_rrenet-n_bccd.py',
    'rrenet-strict': 'rtmdet_rrenet-n-strict_bccd.py',
    'cspnext': 'rtmdet_cspnext-tiny_bccd.py',
    'retinanet-rreresnet18': 'retinanet_rreresnet18_bccd.py',
    'retinanet-rreresnet18-strict': 'retinanet_rreresnet18-strict_bccd.py',
    'retinanet-r18': 'retinanet_r18_bccd.py',
}
MAP_KEY = 'pascal_voc/mAP'


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog='python -m rre_mm.demo', description=__doc__.splitlines()[0])
    parser.add_argument(
        '--out-dir', type=Path, default=Path('outputs/rre_mm'),
        help='folder for checkpoints, logs, the drawn image and results.json')
    parser.add_argument(
        '--minutes', type=float, default=10.0,
        help='wall-clock cap on the training of each model, in minutes; '
        'training stops early when it is spent (default: 10)')
    parser.add_argument(
        '--iters', type=int, default=250,
        help='training iterations per model, the length of the learning-rate '
        'schedule (default: 250, about 5 epochs at batch 4; 250 iterations '
        'took 6.6 minutes on one core of an idle 2-core x86-64 machine)')
    parser.add_argument(
        '--batch-size', type=int, default=4,
        help='training images per iteration (default: 4)')
    parser.add_argument(
        '--models', nargs='+', choices=sorted(MODELS), default=['rrenet'],
        help='models to train, one after another (default: rrenet)')
    parser.add_argument(
        '--baseline', action='store_true',
        help='also train plain RTMDet-tiny (CSPNeXt) the same way')
    parser.add_argument(
        '--strict', action='store_true',
        help='also train RRENet without G-Biases (relaxed=False)')
    parser.add_argument(
        '--data-root', type=Path, default=DEFAULT_DATA_ROOT,
        help='BCCD folder in Pascal VOC layout (default: data/detection/bccd '
        'of this repository)')
    parser.add_argument(
        '--val-images', type=int, default=None,
        help='evaluate on the first N val images only (default: all 87)')
    parser.add_argument('--seed', type=int, default=0, help='random seed')
    args = parser.parse_args(argv)

    if args.minutes <= 0:
        parser.error(f'--minutes must be > 0, got {args.minutes}')
    if args.iters < 1:
        parser.error(f'--iters must be >= 1, got {args.iters}')
    if args.val_images is not None and args.val_images < 1:
        parser.error(f'--val-images must be >= 1, got {args.val_images}')
    if args.batch_size < 1:
        parser.error(f'--batch-size must be >= 1, got {args.batch_size}')
    if not (args.data_root / 'ImageSets' / 'Main' / 'val.txt').is_file():
        parser.error(f'BCCD not found: {args.data_root} has no '
                     'ImageSets/Main/val.txt; pass --data-root')
    return args


def build_demo_config(config_file: Path, work_dir: Path, data_root: Path,
                      iters: int, batch_size: int, minutes: float,
                      seed: int, val_images: Optional[int] = None):
    """Load a BCCD config and turn it into an iteration-based demo run.

    Data roots become absolute, so the run works from any directory. Training
    runs ``iters`` iterations (warm-up, then cosine decay) under a
    :class:`~rre_mm.engine.TimeBudgetHook`. MMEngine's IterBasedTrainLoop
    validates upright once, after the last iteration, unless the time budget
    stops training first.
    """
    from mmengine.config import Config

    cfg = Config.fromfile(str(config_file))
    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        loader = cfg[name]
        loader.dataset.data_root = str(data_root) + '/'
        # One worker: decoding is cheap next to a CPU training step.
        loader.num_workers = 1
    cfg.train_dataloader.batch_size = batch_size
    # tools/test.py evaluates the val split too, so that its mAP is upright
    # val next to the rotated val of this process.
    cfg.test_dataloader.dataset.ann_file = cfg.val_dataloader.dataset.ann_file
    if val_images is not None:
        cfg.val_dataloader.dataset.indices = val_images
        cfg.test_dataloader.dataset.indices = val_images

    base_lr = cfg.optim_wrapper.optimizer.lr
    warmup = min(30, max(iters // 5, 1))
    cfg.train_cfg = dict(
        type='IterBasedTrainLoop', max_iters=iters, val_interval=iters + 1)
    cfg.param_scheduler = [
        dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0,
             end=warmup),
        dict(type='CosineAnnealingLR', eta_min=base_lr * 0.05,
             by_epoch=False, begin=warmup, end=iters, T_max=iters - warmup),
    ]
    cfg.default_hooks.checkpoint = dict(
        type='CheckpointHook', by_epoch=False, interval=iters + 1,
        save_last=False)
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=10)
    cfg.log_processor = dict(type='LogProcessor', window_size=10,
                             by_epoch=False)
    cfg.custom_hooks = [dict(type='TimeBudgetHook', max_minutes=minutes)]
    # Plain MMDetection configs (the CSPNeXt baseline) need rre_mm too: it
    # registers TimeBudgetHook and lets tools/test.py load the checkpoint.
    cfg.custom_imports = dict(imports=['rre_mm'], allow_failed_imports=False)
    cfg.randomness = dict(seed=seed)
    cfg.work_dir = str(work_dir)
    return cfg


def evaluate(runner, cfg, rotated: bool) -> Dict[str, float]:
    """Run VOC evaluation on the val split, optionally turned by 90 degrees."""
    from mmengine.runner import ValLoop

    loader_cfg = cfg.val_dataloader.copy()
    if rotated:
        loader_cfg.dataset = loader_cfg.dataset.copy()
        loader_cfg.dataset.pipeline = cfg.bccd_rot90_test_pipeline
    loop = ValLoop(runner, loader_cfg, cfg.val_evaluator)
    return loop.run()


def save_checkpoint(runner, path: Path) -> None:
    """Save the runner's checkpoint atomically (temporary file, then rename)."""
    tmp_name = path.name + '.tmp'
    runner.save_checkpoint(str(path.parent), tmp_name, save_optimizer=True,
                           save_param_scheduler=True)
    os.replace(path.parent / tmp_name, path)


def run_test_script(config_file: Path, checkpoint: Path,
                    work_dir: Path) -> float:
    """Evaluate a checkpoint with the ``tools/test.py`` shipped in mmdet.

    Returns:
        float: The ``pascal_voc/mAP`` that the script logs.
    """
    import mmdet

    test_script = Path(mmdet.__file__).parent / '.mim' / 'tools' / 'test.py'
    command = [
        sys.executable, str(test_script), str(config_file), str(checkpoint),
        '--work-dir', str(work_dir)
    ]
    print('Running: ' + ' '.join(command), flush=True)
    completed = subprocess.run(
        command, cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    log = completed.stdout + completed.stderr
    (work_dir / 'test_script.log').write_text(log)
    if completed.returncode != 0:
        raise RuntimeError(
            f'tools/test.py failed with exit code {completed.returncode}; '
            f'see {work_dir / "test_script.log"}. Last lines:\n'
            + '\n'.join(log.splitlines()[-15:]))
    found = re.findall(re.escape(MAP_KEY) + r': ([0-9.]+)', log)
    if not found:
        raise RuntimeError(
            f'tools/test.py printed no {MAP_KEY}; see '
            f'{work_dir / "test_script.log"}.')
    return float(found[-1])


def draw_predictions(runner, out_file: Path, score_thr: float = 0.3) -> None:
    """Draw ground truth and predictions of the first val image to a PNG."""
    import mmcv
    from mmengine.dataset import pseudo_collate

    dataset = runner.val_dataloader.dataset
    sample = dataset[0]
    runner.model.eval()
    result = runner.model.test_step(pseudo_collate([sample]))[0]
    image = mmcv.imread(result.img_path, channel_order='rgb')

    visualizer = runner.visualizer
    visualizer.dataset_meta = dataset.metainfo
    visualizer.add_datasample(
        out_file.stem, image, result, draw_gt=True, draw_pred=True,
        pred_score_thr=score_thr, out_file=str(out_file))


def run_model(name: str, args: argparse.Namespace) -> Dict[str, object]:
    """Train, evaluate, save and re-test one model; return its results."""
    from mmengine.runner import Runner

    work_dir = (args.out_dir / name).resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    cfg = build_demo_config(
        CONFIG_DIR / MODELS[name], work_dir, args.data_root.resolve(),
        args.iters, args.batch_size, args.minutes, args.seed,
        args.val_images)
    config_file = work_dir / f'{name}_demo_config.py'
    cfg.dump(str(config_file))

    runner = Runner.from_cfg(cfg)
    start = time.monotonic()
    runner.train()
    train_minutes = (time.monotonic() - start) / 60.0
    trained_iters = runner.iter
    in_process = runner.message_hub.log_scalars.get('val/' + MAP_KEY)
    upright_in_process = None if in_process is None else \
        float(in_process.current())

    checkpoint = work_dir / f'{name}_final.pth'
    save_checkpoint(runner, checkpoint)
    rotated = evaluate(runner, cfg, rotated=True)[MAP_KEY]
    upright = run_test_script(config_file, checkpoint, work_dir)

    image_file = work_dir / f'{name}_val_predictions.png'
    draw_predictions(runner, image_file)

    return dict(
        config=str(CONFIG_DIR / MODELS[name]),
        trained_iters=trained_iters,
        train_minutes=round(train_minutes, 2),
        params=sum(p.numel() for p in runner.model.parameters()),
        val_map50_upright=upright,
        val_map50_rot90=rotated,
        # Same metric from the training process; tools/test.py must match it.
        val_map50_upright_in_process=upright_in_process,
        checkpoint=str(checkpoint),
        predictions_image=str(image_file),
        demo_config=str(config_file))


def main(argv: Optional[List[str]] = None) -> Dict[str, Dict[str, object]]:
    args = parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)

    # Registers RRENet, Rot90, TimeBudgetHook and the checkpoint fix.
    import rre_mm  # noqa: F401
    from mmdet.utils import register_all_modules
    register_all_modules(init_default_scope=True)

    names = list(dict.fromkeys(args.models))
    if args.strict and 'rrenet-strict' not in names:
        names.append('rrenet-strict')
    if args.baseline and 'cspnext' not in names:
        names.append('cspnext')

    results = {name: run_model(name, args) for name in names}

    results_file = args.out_dir.resolve() / 'results.json'
    tmp_file = results_file.with_suffix('.json.tmp')
    tmp_file.write_text(json.dumps(results, indent=2))
    os.replace(tmp_file, results_file)

    print('\nBCCD val VOC mAP@0.5 after the short CPU schedule '
          f'(batch {args.batch_size}, 320x240):')
    print('(upright: tools/test.py on the saved checkpoint; rot90: Rot90(k=1) '
          'on every val image)')
    print(f'{"model":<30}{"iters":>7}{"minutes":>9}{"params":>11}'
          f'{"upright":>9}{"rot90":>8}')
    for name, res in results.items():
        print(f'{name:<30}{res["trained_iters"]:>7}{res["train_minutes"]:>9}'
              f'{res["params"]:>11}{res["val_map50_upright"]:>9.3f}'
              f'{res["val_map50_rot90"]:>8.3f}')
    for name, res in results.items():
        if res['trained_iters'] < args.iters:
            print(f'NOTE: {name} trained {res["trained_iters"]} of {args.iters} iterations '
                  f'before the {args.minutes:g}-minute budget ran out, so its mAPs are far '
                  'below those of a full run. Rerun on a less busy machine, or raise '
                  '--minutes.')
    print('\nWrote:')
    for name, res in results.items():
        print(f'  {res["checkpoint"]}')
        print(f'  {res["predictions_image"]}')
        print(f'  {res["demo_config"]}')
    print(f'  {results_file}')
    return results


if __name__ == '__main__':
    main()
