"""Regenerate `toolkit/demo/digits.npz` from scikit-learn's handwritten digits.

Needs scikit-learn (`pip install toolkit[demo]`); the demo itself does not: the npz ships in
the package. Run `python -m toolkit.demo.make_data` and commit the result.

Contents (all uint8 / int64, compressed, ~100 KB):
  images  uint8 N×8×8   pixel values 0..16 as in sklearn (fits uint8 losslessly)
  labels  uint8 N       digit 0..9
  split   uint8 N       0 train, 1 val, 2 test — a fixed, stratified, seeded split
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

SPLIT_NAMES = ("train", "val", "test")
DEFAULT_FRACTIONS = (0.7, 0.1, 0.2)
DEFAULT_PATH = Path(__file__).with_name("digits.npz")


def stratified_split(labels: np.ndarray, fractions: tuple[float, float, float],
                     seed: int) -> np.ndarray:
    """Split ids (0/1/2) so every class keeps the same train/val/test proportions."""
    rng = np.random.default_rng(seed)
    split = np.empty(len(labels), dtype=np.uint8)
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        n_train = round(len(idx) * fractions[0])
        n_val = round(len(idx) * fractions[1])
        split[idx[:n_train]] = 0
        split[idx[n_train:n_train + n_val]] = 1
        split[idx[n_train + n_val:]] = 2
    return split


def make_digits_npz(path: Path = DEFAULT_PATH, seed: int = 0) -> Path:
    from sklearn.datasets import load_digits  # only this script needs scikit-learn

    digits = load_digits()
    images = digits.images.astype(np.uint8)  # values are integers 0..16
    if not np.array_equal(images, digits.images):
        raise ValueError("sklearn digits are no longer integer-valued; update make_data.py")
    labels = digits.target.astype(np.uint8)
    split = stratified_split(labels, DEFAULT_FRACTIONS, seed)
    np.savez_compressed(path, images=images, labels=labels, split=split)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_PATH)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    path = make_digits_npz(args.out, args.seed)
    with np.load(path) as data:
        counts = {name: int((data["split"] == i).sum()) for i, name in enumerate(SPLIT_NAMES)}
    print(f"wrote {path} ({path.stat().st_size / 1024:.1f} KiB): {counts}")


if __name__ == "__main__":
    main()
