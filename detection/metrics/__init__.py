"""Detection metrics: VOC mAP@0.5 (ours, numpy) and COCO AP (pycocotools)."""
