# RetinaNet with the relaxed rotation-equivariant RREResNet-18 (C4, learnable
# G-Biases, group-pooled outputs) in place of ResNet-18, on BCCD, trained
# from scratch with the short CPU schedule of
# ./_base_/retinanet_bccd_cpu.py. With its default 88 fields per stage it has
# about as many parameters as ResNet-18 (10.8 M against 11.2 M), but four
# times the activations, so it trains several times slower on CPU.
_base_ = './_base_/retinanet_bccd_cpu.py'

custom_imports = dict(imports=['rre_mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='RREResNet',
        depth=18,
        group_order=4,
        relaxed=True,
        out_indices=(0, 1, 2, 3),
        # Trained from scratch: batch norms must keep learning.
        norm_eval=False),
    # Group-pooled channels of the four stages (88 fields doubled per stage).
    neck=dict(in_channels=[88, 176, 352, 704]))
