# Baseline: plain RTMDet-tiny (CSPNeXt backbone and PAFPN) on BCCD, trained
# from scratch with the same short CPU schedule as the RRENet detectors.
_base_ = './_base_/rtmdet_bccd_cpu.py'
