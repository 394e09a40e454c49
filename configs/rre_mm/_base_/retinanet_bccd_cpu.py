# RetinaNet (ResNet-18 + FPN) on BCCD with a short CPU schedule: 320x240
# input, batch 4, trained from scratch (no ImageNet weights, so no frozen
# stages and batch norms that keep learning). Detector configs in the folder
# above set only the backbone and the neck's in_channels.
#
# Full schedule (GPU, 640x480, batch 16, 100 epochs), on any config here:
#   --cfg-options train_dataloader.batch_size=16 \
#     train_dataloader.dataset.pipeline.2.scale="(640,480)" \
#     val_dataloader.dataset.pipeline.1.scale="(640,480)" \
#     test_dataloader.dataset.pipeline.1.scale="(640,480)" \
#     train_cfg.max_epochs=100 train_cfg.val_interval=10 \
#     param_scheduler.1.end=100 param_scheduler.1.T_max=99 \
#     optim_wrapper.optimizer.lr=0.02 default_hooks.checkpoint.interval=10
# In *_rot90-test.py configs Rot90 comes first, so their test Resize is
# pipeline.2 instead of pipeline.1.
# NOTE: the full schedule was not run here; 100 epochs is a starting point,
# not a tuned value.
_base_ = [
    'mmdet::retinanet/retinanet_r18_fpn_1x_coco.py',
    './bccd_detection.py',
]

model = dict(
    backbone=dict(init_cfg=None, frozen_stages=-1, norm_eval=False),
    bbox_head=dict(num_classes=3),
    test_cfg=dict(nms_pre=1000, score_thr=0.01, max_per_img=100))

train_dataloader = dict(
    batch_size=4,
    num_workers=2,
    persistent_workers=True,
    dataset=_base_.bccd_train_dataset)
val_dataloader = dict(
    batch_size=4,
    num_workers=2,
    persistent_workers=True,
    dataset=_base_.bccd_val_dataset)
test_dataloader = dict(
    batch_size=4,
    num_workers=2,
    persistent_workers=True,
    dataset=_base_.bccd_test_dataset)
val_evaluator = _base_.bccd_evaluator
test_evaluator = _base_.bccd_evaluator

# 6 epochs of 51 iterations: linear warm-up, then cosine decay.
max_epochs = 6
base_lr = 0.01
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
optim_wrapper = dict(
    optimizer=dict(lr=base_lr), clip_grad=dict(max_norm=35, norm_type=2))
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
default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))
log_processor = dict(window_size=10)
