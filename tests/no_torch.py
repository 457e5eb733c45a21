"""Run the toolkit CLI with torch, torchvision, Lightning and onnxscript unimportable, as on an
edge device: `python tests/no_torch.py verify BUNDLE ...`."""

import importlib.abc
import os
import sys

BLOCKED = {"torch", "torchvision", "lightning", "pytorch_lightning", "onnxscript",
           *filter(None, os.environ.get("TOOLKIT_TEST_BLOCK", "").split(","))}


class _Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is blocked: this process plays an edge device")
        return None


if __name__ == "__main__":
    sys.meta_path.insert(0, _Blocker())
    sys.argv = ["toolkit", *sys.argv[1:]]
    from toolkit.cli.app import main

    main()
