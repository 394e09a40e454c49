"""Time the RRE layers against a plain nn.Conv2d of the same expanded shape and e2cnn.

For each layer type, group (C4, C8) and size this prints three timings:
forward + backward in train mode (the weight is expanded at every call), the
cached eval forward, and the deployed (plain PyTorch) forward. Each is shown
next to the plain conv with the same expanded weight shape (the floor). Where
e2cnn has the same operator (lifting and full group conv), its R2Conv on
regular fields is timed too. It ends with
the build time of RRENet-m with C8 and of one e2cnn R2Conv with 128 C4 fields.

Run from the repository root: ``python benchmarks/rre_mm/bench_layers.py``.
Each timing is the fastest of five medians of
``torch.utils.benchmark.Timer.blocked_autorange``, taken in rounds that
alternate between the compared modules after a warm-up call, on the CPU
threads torch uses by default.
"""
import copy
import time

import torch
from torch import nn
from torch.utils.benchmark import Timer

from rre_mm.layers import (RREDepthwiseConv, RREDepthwiseTransposedConv, RREFactorizedConv,
                           RREGroupConv, RRELiftingConv, deploy)

MIN_RUN_TIME = 0.04
ROUNDS = 5
BATCH = 8
# (fields, map side) pairs.
SIZES = [(16, 32), (32, 16)]


def median_seconds(fn) -> float:
    return Timer(stmt='fn()', globals={'fn': fn}).blocked_autorange(
        min_run_time=MIN_RUN_TIME).median


def compare_seconds(*fns) -> list:
    """Time ``fns`` in alternating rounds and keep each one's fastest median.

    Alternating and taking the minimum keeps load spikes from other processes
    out of the ratios better than one long run per function.
    """
    for fn in fns:
        if fn is not None:
            fn()
    best = [float('inf')] * len(fns)
    for _ in range(ROUNDS):
        for index, fn in enumerate(fns):
            if fn is not None:
                best[index] = min(best[index], median_seconds(fn))
    return [None if fn is None else seconds for fn, seconds in zip(fns, best)]


def train_step(module, x):
    def step():
        module.zero_grad(set_to_none=True)
        module(x).sum().backward()
    return step


def forward(module, x):
    def run():
        with torch.no_grad():
            module(x)
    return run


def build_layer(kind, fields, group_order):
    if kind == 'lifting':
        return RRELiftingConv(3, fields, 3, group_order)
    if kind == 'group':
        return RREGroupConv(fields, fields, 3, group_order)
    if kind == 'depthwise':
        return RREDepthwiseConv(fields, 3, group_order)
    if kind == 'factorized':
        return RREFactorizedConv(fields, fields, 3, group_order)
    return RREDepthwiseTransposedConv(fields, group_order)


def build_e2cnn(kind, fields, group_order):
    """e2cnn R2Conv with regular fields, or None where e2cnn has no such operator."""
    if kind not in ('lifting', 'group'):
        return None
    from e2cnn import gspaces
    from e2cnn import nn as enn
    space = gspaces.Rot2dOnR2(group_order)
    out_type = enn.FieldType(space, [space.regular_repr] * fields)
    if kind == 'lifting':
        in_type = enn.FieldType(space, [space.trivial_repr] * 3)
    else:
        in_type = enn.FieldType(space, [space.regular_repr] * fields)
    conv = enn.R2Conv(in_type, out_type, kernel_size=3, padding=1, bias=False)

    class Wrapped(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = conv

        def forward(self, x):
            return self.conv(enn.GeometricTensor(x, in_type)).tensor

    return Wrapped()


def bench_case(kind, fields, side, group_order):
    layer = build_layer(kind, fields, group_order)
    floor = layer.to_plain()
    x = torch.randn(BATCH, layer.in_channels, side, side)
    row = dict(kind=kind, n=group_order, fields=fields, side=side)

    e2 = build_e2cnn(kind, fields, group_order)
    row['train'], row['train_floor'], row['train_e2cnn'] = compare_seconds(
        train_step(layer.train(), x), train_step(floor.train(), x),
        train_step(e2.train(), x) if e2 else None)

    deployed = deploy(copy.deepcopy(layer))
    row['eval'], row['eval_floor'], row['eval_e2cnn'], row['deployed'] = compare_seconds(
        forward(layer.eval(), x), forward(floor.eval(), x),
        forward(e2.eval(), x) if e2 else None, forward(deployed, x))
    return row


def ratio(numerator, denominator) -> str:
    if numerator is None or denominator is None:
        return '-'
    return f'{numerator / denominator:.2f}'


def print_table(rows):
    header = (f'{"layer":<11}{"n":>2}{"C":>4}{"HxW":>6} | {"train ms":>9}{"floor":>8}'
              f'{"/floor":>7}{"/e2cnn":>7} | {"eval ms":>8}{"floor":>8}{"/floor":>7}'
              f'{"/e2cnn":>7} | {"deploy":>7}{"/floor":>7}')
    print(header)
    print('-' * len(header))
    for r in rows:
        print(f'{r["kind"]:<11}{r["n"]:>2}{r["fields"]:>4}{r["side"]:>6} | '
              f'{r["train"] * 1e3:>9.2f}{r["train_floor"] * 1e3:>8.2f}'
              f'{ratio(r["train"], r["train_floor"]):>7}{ratio(r["train"], r["train_e2cnn"]):>7} | '
              f'{r["eval"] * 1e3:>8.2f}{r["eval_floor"] * 1e3:>8.2f}'
              f'{ratio(r["eval"], r["eval_floor"]):>7}{ratio(r["eval"], r["eval_e2cnn"]):>7} | '
              f'{r["deployed"] * 1e3:>7.2f}{ratio(r["deployed"], r["eval_floor"]):>7}')


def bench_build_times():
    from rre_mm.models import RRENet
    start = time.perf_counter()
    RRENet('m', group_order=8)
    rrenet_seconds = time.perf_counter() - start

    from e2cnn import gspaces
    from e2cnn import nn as enn
    space = gspaces.Rot2dOnR2(4)
    field_type = enn.FieldType(space, [space.regular_repr] * 128)
    start = time.perf_counter()
    enn.R2Conv(field_type, field_type, kernel_size=3, padding=1)
    e2cnn_seconds = time.perf_counter() - start
    print(f'build RRENet-m, C8 (whole backbone): {rrenet_seconds:.2f} s')
    print(f'build one e2cnn R2Conv, 128 C4 regular fields, 3x3: {e2cnn_seconds:.2f} s')


def main():
    torch.manual_seed(0)
    print(f'torch {torch.__version__}, {torch.get_num_threads()} threads, batch {BATCH}; '
          f'times are medians in ms. floor = plain nn.Conv2d (or nn.ConvTranspose2d, or '
          f'1x1 + depthwise for factorized) with the same expanded weight shape.')
    print('NOTE: on a shared machine the ratios are more meaningful than the times.')
    rows = []
    for group_order in (4, 8):
        for fields, side in SIZES:
            for kind in ('lifting', 'group', 'depthwise', 'factorized', 'transposed'):
                rows.append(bench_case(kind, fields, side, group_order))
    print_table(rows)
    bench_build_times()


if __name__ == '__main__':
    main()
