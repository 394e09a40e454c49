# Baseline: plain RetinaNet with ResNet-18 and FPN on BCCD, trained from
# scratch with the same short CPU schedule as the RREResNet detectors.
_base_ = './_base_/retinanet_bccd_cpu.py'
