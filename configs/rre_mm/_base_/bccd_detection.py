# BCCD blood-cell detection (Pascal VOC layout, 640x480 images, classes RBC,
# WBC and Platelets) for MMDetection 3.x.
#
# Every name here carries a `bccd_` prefix so that this file can sit next to a
# full MMDetection config in `_base_` without duplicate keys. A detector config
# then plugs the datasets into its dataloaders, e.g.
#   train_dataloader = dict(dataset=_base_.bccd_train_dataset)
# Each dataset dict carries `_delete_=True`, so it replaces the COCO dataset of
# the MMDetection base instead of merging into it.
#
# `bccd_data_root` is relative to the repository root, the MMDetection
# convention: run `mim train mmdet CONFIG` or mmdet's tools/train.py from there.
bccd_data_root = 'data/detection/bccd/'
bccd_metainfo = dict(
    classes=('RBC', 'WBC', 'Platelets'),
    palette=[(220, 20, 60), (0, 110, 230), (250, 170, 30)])

# Short CPU schedules train at 320x240. rtmdet_bccd_cpu.py and
# retinanet_bccd_cpu.py give the --cfg-options line for 640x480.
bccd_small_scale = (320, 240)

bccd_train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=bccd_small_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
# As in MMDetection, test pipelines load boxes after Resize, so that they are
# evaluated in the original image scale. Rot90 also turns the raw boxes that
# LoadAnnotations reads.
bccd_test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=bccd_small_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                   'scale_factor'))
]
bccd_rot90_test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Rot90', k=1),
    # keep_ratio fits the long edge to 320 for upright and turned images.
    dict(type='Resize', scale=bccd_small_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                   'scale_factor', 'rot90_k'))
]
bccd_train_dataset = dict(
    _delete_=True,
    type='VOCDataset',
    data_root=bccd_data_root,
    metainfo=bccd_metainfo,
    ann_file='ImageSets/Main/train.txt',
    data_prefix=dict(sub_data_root=''),
    # Two RBC boxes in the train and val annotations have zero width or
    # height; bbox_min_size=1 marks them ignored during training.
    filter_cfg=dict(filter_empty_gt=True, min_size=32, bbox_min_size=1),
    pipeline=bccd_train_pipeline)
bccd_val_dataset = dict(
    _delete_=True,
    type='VOCDataset',
    data_root=bccd_data_root,
    metainfo=bccd_metainfo,
    ann_file='ImageSets/Main/val.txt',
    data_prefix=dict(sub_data_root=''),
    test_mode=True,
    pipeline=bccd_test_pipeline)
bccd_test_dataset = dict(
    _delete_=True,
    type='VOCDataset',
    data_root=bccd_data_root,
    metainfo=bccd_metainfo,
    ann_file='ImageSets/Main/test.txt',
    data_prefix=dict(sub_data_root=''),
    test_mode=True,
    pipeline=bccd_test_pipeline)

# VOC-style mAP at IoU 0.5, area under the full precision-recall curve.
bccd_evaluator = dict(
    _delete_=True, type='VOCMetric', metric='mAP', iou_thrs=0.5,
    eval_mode='area')
