"""Faster R-CNN in the paper's C4 layout on a resnet-tf backbone.

Built so far (each a small unit with its own tests): ``ops.boxes`` (the one
internal box format and IoU), ``anchors``, ``box_coder``, ``matcher``,
``sampler``. Still to come (issue "Detection"): proposals, RoIAlign/RoIPool,
the RPN and conv5_x RoI heads, the model, losses, data and mAP.
"""
