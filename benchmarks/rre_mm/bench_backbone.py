"""Parameters, FLOPs and inference throughput of RRENet-n against MMDetection's CSPNeXt.

Compares, at 320 x 320 input: RRENet-n (C4, G-Biases) with cached weights in
eval mode, the same network after ``rre_mm.layers.deploy`` (plain convs, batch
norm folded), RRENet-n + RREPAFPN, and CSPNeXt-tiny (``deepen_factor=0.167,
widen_factor=0.375``, the RTMDet-tiny backbone, the closest size). FLOPs come
from ``mmengine.analysis.get_model_complexity_info`` (one multiply-add counts
as one FLOP there). Throughput is images per second for batch 4 under
``torch.no_grad()``, median of ``torch.utils.benchmark.Timer.blocked_autorange``
after a warm-up call.

Run from the repository root: ``python benchmarks/rre_mm/bench_backbone.py``.
"""
import copy

import torch
from mmengine.analysis import get_model_complexity_info
from torch import nn
from torch.utils.benchmark import Timer

import rre_mm  # noqa: F401  (registers the modules)
from rre_mm.layers import deploy
from rre_mm.models import RRENet, RREPAFPN

SIDE = 320
BATCH = 4
MIN_RUN_TIME = 0.5


class BackboneAndNeck(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = RRENet('n', pool_outputs=False)
        self.neck = RREPAFPN(self.backbone.out_fields[2:], 96)

    def forward(self, x):
        return self.neck(self.backbone(x))


def images_per_second(model) -> float:
    x = torch.rand(BATCH, 3, SIDE, SIDE)

    def run():
        with torch.no_grad():
            model(x)

    run()
    median = Timer(stmt='run()', globals={'run': run}).blocked_autorange(
        min_run_time=MIN_RUN_TIME).median
    return BATCH / median


def complexity(model):
    info = get_model_complexity_info(model, input_shape=(3, SIDE, SIDE), show_table=False,
                                     show_arch=False)
    # The FLOP counter ignores element-wise ops, index_select and batch norm (it
    # logs them as unsupported), so the totals are the convolutions only.
    return info['params'], info['flops']


def main():
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules()
    torch.manual_seed(0)

    # mmdet 3.3.0's CSPNeXt.train() returns None, so eval() is not chained on it.
    cspnext = MODELS.build(dict(type='CSPNeXt', deepen_factor=0.167, widen_factor=0.375))
    cspnext.eval()
    rrenet = RRENet('n').eval()
    models = {
        'RRENet-n (C4, eval, cached)': rrenet,
        'RRENet-n deployed': deploy(copy.deepcopy(rrenet)),
        'RRENet-n + RREPAFPN(96)': BackboneAndNeck().eval(),
        'CSPNeXt-tiny': cspnext,
    }
    print(f'torch {torch.__version__}, {torch.get_num_threads()} threads, input '
          f'{SIDE}x{SIDE}, batch {BATCH} for throughput.')
    print('NOTE: on a shared machine the ratios are more meaningful than the times. The '
          'deployed net stores the expanded filters, so it has more parameters.')
    header = f'{"model":<30}{"params (M)":>11}{"GFLOPs":>9}{"img/s":>8}{"vs CSPNeXt":>12}'
    print(header)
    print('-' * len(header))
    rows = []
    for name, model in models.items():
        params = sum(p.numel() for p in model.parameters())
        _, flops = complexity(model)
        print(f'measured {name}', flush=True)
        rows.append((name, params, flops, images_per_second(model)))
    reference = rows[-1][3]
    for name, params, flops, speed in rows:
        print(f'{name:<30}{params / 1e6:>11.2f}{flops / 1e9:>9.2f}{speed:>8.1f}'
              f'{speed / reference:>12.2f}')


if __name__ == '__main__':
    main()
