"""Optional model libraries (transformers, ultralytics, timm), imported on first use.

Each takes seconds to import, so modules that may need one ask here when they do: importing
``surgery`` (or ``surgery.io.models``) never pays for a library the model at hand does not use.

Example:
    >>> optional_module("timm").__name__
    'timm'
    >>> optional_module("no_such_library") is None
    True
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType


def optional_module(name: str) -> ModuleType | None:
    """The module ``name`` (imported now if it was not yet), or None when it is not installed.

    Example:
        >>> optional_module("ultralytics.nn.tasks").__name__
        'ultralytics.nn.tasks'
    """
    top = name.split(".")[0]
    if importlib.util.find_spec(top) is None:
        return None
    return importlib.import_module(name)
