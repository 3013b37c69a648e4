"""Faster R-CNN in the paper's C4 layout on a resnet-tf backbone.

Planned (issue "Detection"): anchors, box coder, matcher, sampler, proposals,
RoIAlign/RoIPool, the conv5_x RoI head reusing ``resnet_tf.blocks``, VOC/COCO
data and mAP. Nothing is implemented here yet.
"""
