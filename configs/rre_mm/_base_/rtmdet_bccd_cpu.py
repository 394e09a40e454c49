# RTMDet on BCCD with a short CPU schedule: 320x240 input, batch 4, no
# pretrained weights, no Mosaic/MixUp and no EMA (both need hundreds of epochs
# to pay off). Detector configs in the folder above set only the backbone and
# the neck.
#
# Full schedule (GPU, 640x480, batch 16, 100 epochs), on any config here:
#   --cfg-options train_dataloader.batch_size=16 \
#     train_dataloader.dataset.pipeline.2.scale="(640,480)" \
#     val_dataloader.dataset.pipeline.1.scale="(640,480)" \
#     test_dataloader.dataset.pipeline.1.scale="(640,480)" \
#     train_cfg.max_epochs=100 train_cfg.val_interval=10 \
#     param_scheduler.1.end=100 param_scheduler.1.T_max=99 \
#     default_hooks.checkpoint.interval=10
# In *_rot90-test.py configs Rot90 comes first, so their test Resize is
# pipeline.2 instead of pipeline.1.
# NOTE: the full schedule was not run here; 100 epochs is a starting point,
# not a tuned value.
_base_ = [
    'mmdet::rtmdet/rtmdet_tiny_8xb32-300e_coco.py',
    './bccd_detection.py',
]

model = dict(
    # The COCO pipelines pad to 640x640; here the data preprocessor pads each
    # batch to a multiple of the largest stride instead.
    data_preprocessor=dict(pad_size_divisor=32),
    # No ImageNet weights: nothing may be downloaded at run time.
    backbone=dict(init_cfg=None),
    bbox_head=dict(num_classes=3),
    test_cfg=dict(nms_pre=1000, score_thr=0.01, max_per_img=100))

train_dataloader = dict(
    batch_size=4,
    num_workers=2,
    persistent_workers=True,
    pin_memory=False,
    dataset=_base_.bccd_train_dataset)
val_dataloader = dict(
    batch_size=4,
    num_workers=2,
    persistent_workers=True,
    pin_memory=False,
    dataset=_base_.bccd_val_dataset)
test_dataloader = dict(
    batch_size=4,
    num_workers=2,
    persistent_workers=True,
    pin_memory=False,
    dataset=_base_.bccd_test_dataset)
val_evaluator = _base_.bccd_evaluator
test_evaluator = _base_.bccd_evaluator

# 6 epochs of 51 iterations. RTMDet's learning rate (0.004 for batch 256) is
# kept for batch 4; AdamW tolerates it and a short run needs the speed.
max_epochs = 6
base_lr = 0.004
train_cfg = dict(
    max_epochs=max_epochs, val_interval=max_epochs, dynamic_intervals=None)
optim_wrapper = dict(optimizer=dict(lr=base_lr))
param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=1.0e-3,
        by_epoch=False,
        begin=0,
        end=50),
    dict(
        type='CosineAnnealingLR',
        eta_min=base_lr * 0.05,
        begin=1,
        end=max_epochs,
        T_max=max_epochs - 1,
        by_epoch=True,
        convert_to_iter_based=True),
]
custom_hooks = []
default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))
log_processor = dict(window_size=10)
