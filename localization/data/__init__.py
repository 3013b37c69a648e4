"""Localization data: ILSVRC annotations (Kaggle CSV and XML), the synthetic
set, and the tf.data pipelines.

    ilsvrc.py    CSV / XML readers, LocReport (what was skipped and why)
    synthetic.py the embedded shapes set, one class and 1..n boxes per image
    sources.py   open_localization_source("ilsvrc-loc:PATH[:SPLIT]" | "synthetic")
    pipeline.py  training crops with their boxes; whole-image test views
"""
