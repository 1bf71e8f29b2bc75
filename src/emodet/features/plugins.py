"""Load a user's feature plugin: a module name or a ``.py`` file that calls ``register_feature``."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path

from ..core.errors import UsageError

_LOADED: dict[str, object] = {}


def load_plugin(spec: str):
    """Import ``spec`` (``pkg.module`` or ``path/to/file.py``) once; returns the module.

    Plugin code runs only when the user names it (``--plugin``, ``features.plugins`` in a config).
    """
    if spec in _LOADED:
        return _LOADED[spec]
    path = Path(spec)
    if spec.endswith(".py") or path.exists():
        if not path.is_file():
            raise UsageError(f"--plugin {spec}: no such file (give a .py file or an importable module name)")
        name = "emodet_plugin_" + hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
        module_spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        try:
            module_spec.loader.exec_module(module)
        except UsageError:
            raise
        except Exception as exc:
            sys.modules.pop(name, None)
            raise UsageError(f"--plugin {spec}: importing it failed: {type(exc).__name__}: {exc}") from exc
    else:
        try:
            module = importlib.import_module(spec)
        except ModuleNotFoundError as exc:
            raise UsageError(f"--plugin {spec}: no such module or file ({exc})") from None
        except UsageError:
            raise
        except Exception as exc:
            raise UsageError(f"--plugin {spec}: importing it failed: {type(exc).__name__}: {exc}") from exc
    _LOADED[spec] = module
    return module


def load_plugins(specs) -> None:
    """Load each plugin of ``specs`` (an iterable of strings)."""
    for spec in specs or ():
        load_plugin(spec)
