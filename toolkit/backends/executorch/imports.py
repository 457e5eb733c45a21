"""ExecuTorch's modules, imported quietly: importing them imports torchao, whose pytree
registrations make torch log one warning line per enum ("... is an Enum subclass and is now
natively supported ..."), a dozen lines of noise before every export or run."""

from __future__ import annotations

import logging
from typing import Any

from toolkit.environment import TORCH_PYTREE_LOGGER, require_module, torch_enum_notice

EXTRA = "executorch"


def executorch_module(module: str, purpose: str) -> Any:
    """`module` imported (BackendUnavailable naming the extra when it can't be), without
    torch's enum notices while it loads. A filter, not a level: importing torch's dynamo
    resets its loggers' levels midway."""
    logger = logging.getLogger(TORCH_PYTREE_LOGGER)
    logger.addFilter(torch_enum_notice)
    try:
        return require_module(module, purpose, extra=EXTRA)
    finally:
        logger.removeFilter(torch_enum_notice)
