"""Eager PyTorch: the source model run as it is, the reference every artifact is compared with
and the speed baseline."""
