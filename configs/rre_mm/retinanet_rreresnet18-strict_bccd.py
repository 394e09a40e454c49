# Strict baseline of ./retinanet_rreresnet18_bccd.py: the same C4 group
# convolutions without G-Biases (relaxed=False). Same schedule and data.
_base_ = './retinanet_rreresnet18_bccd.py'

model = dict(backbone=dict(relaxed=False))
