# RTMDet with the relaxed rotation-equivariant RRENet-n backbone and RREPAFPN
# neck (C4 group convolutions with learnable G-Biases) on BCCD, trained from
# scratch with the short CPU schedule of ./_base_/rtmdet_bccd_cpu.py. This is
# the configuration here closest to RREDet-n of Wu et al., "Relaxed
# Rotational Equivariance via G-Biases in Vision" (AAAI 2025,
# https://arxiv.org/abs/2408.12454), with RTMDet's head in place of YOLOv8's.
_base_ = './_base_/rtmdet_bccd_cpu.py'

custom_imports = dict(imports=['rre_mm'], allow_failed_imports=False)

# BN momentum 0.1, as in the CSPNeXt baseline (PyTorch's default), replaces
# the YOLOv8-style 0.03 default of RRENet and RREPAFPN. With 0.03, running
# statistics lagged the weights so far in a 100-iteration run that eval-mode
# scores collapsed (val mAP 0.000 measured on this schedule).
rre_norm_cfg = dict(type='BN', momentum=0.1, eps=0.001)

model = dict(
    backbone=dict(
        _delete_=True,
        type='RRENet',
        arch='n',
        group_order=4,
        relaxed=True,
        out_indices=(2, 3, 4),
        norm_cfg=rre_norm_cfg,
        # Flat [B, C * 4, H, W] group features; RREPAFPN pools them.
        pool_outputs=False),
    neck=dict(
        _delete_=True,
        type='RREPAFPN',
        # Fields (not flat channels) of RRENet-n's three outputs.
        in_channels=[64, 128, 256],
        out_channels=96,
        group_order=4,
        relaxed=True,
        norm_cfg=rre_norm_cfg),
    bbox_head=dict(in_channels=96, feat_channels=96))
