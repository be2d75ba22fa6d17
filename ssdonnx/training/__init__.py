"""Training and evaluation: VOC-layout data (``data``), generated shapes (``shapes``),
the SSD paper's augmentation (``augment``), the training loop (``train``) and VOC mAP
(``evaluate``)."""
