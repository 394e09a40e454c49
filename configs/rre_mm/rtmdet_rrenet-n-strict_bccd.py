# Strict baseline of ./rtmdet_rrenet-n_bccd.py: the same C4 group
# convolutions in backbone and neck without G-Biases (relaxed=False), so both
# are exactly equivariant to 90-degree rotations on sizes 32 m + 1. Same
# schedule and data.
_base_ = './rtmdet_rrenet-n_bccd.py'

model = dict(backbone=dict(relaxed=False), neck=dict(relaxed=False))
