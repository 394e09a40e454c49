# Rotated evaluation of ./rtmdet_rrenet-n-strict_bccd.py:
# every val and test image, with its boxes, is turned by 90 degrees
# counter-clockwise (Rot90) before resizing. Use it with MMDetection's
# tools/test.py and a checkpoint trained with the upright config.
_base_ = './rtmdet_rrenet-n-strict_bccd.py'

val_dataloader = dict(dataset=dict(pipeline=_base_.bccd_rot90_test_pipeline))
test_dataloader = dict(dataset=dict(pipeline=_base_.bccd_rot90_test_pipeline))
