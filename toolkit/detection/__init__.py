"""Object detection: the fixed-rank output contract, IoU-matched parity, COCO mAP.

Modules that import only numpy (matching, mAP, eval data) serve the device side; the
post-processing that wraps a PyTorch detector needs torch and serves the build side.
"""
