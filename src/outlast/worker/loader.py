"""Loading a user's app: a module path (``myapp.flows``), a file (``flows.py``) or a folder (a package,
or one holding ``app.py``/``workflows.py``/``flows.py``/``main.py``) defining workflows."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from outlast.core.workflow import Registry, Workflow
from outlast.errors import ConfigError


def load_app(target: str) -> Registry:
    """The workflows ``target`` defines: a ``Registry`` named ``app``, else every module-level workflow."""
    module = _import(target)
    app = getattr(module, "app", None)
    if isinstance(app, Registry):
        return app
    found = Registry(obj for obj in vars(module).values() if isinstance(obj, Workflow))
    if not len(found):
        raise ConfigError(f"{target}: defines no @workflow (nor an outlast.Registry named 'app')")
    return found


APP_FILES = ("app.py", "workflows.py", "flows.py", "main.py")


def _import(target: str) -> ModuleType:
    path = Path(target)
    if path.is_dir():  # a package, or a folder holding one of APP_FILES
        if (path / "__init__.py").is_file():
            # Inside a package (examples/blog with examples/__init__.py): import it by its dotted name.
            root, parts = path.resolve(), [path.resolve().name]
            while (root.parent / "__init__.py").is_file():
                root = root.parent
                parts.insert(0, root.name)
            sys.path.insert(0, str(root.parent))
            try:
                return importlib.import_module(".".join(parts))
            except Exception as exc:
                raise ConfigError(f"{target}: importing it failed: {type(exc).__name__}: {exc}") from exc
        for name in APP_FILES:
            if (path / name).is_file():
                return _import(str(path / name))
        raise ConfigError(f"{target}: a folder with neither __init__.py nor {', '.join(APP_FILES)}")
    if target.endswith(".py") or path.is_file():
        if not path.is_file():
            raise ConfigError(f"{target}: no such file")
        name = f"outlast_app_{path.stem}"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ConfigError(f"{target}: cannot be imported as a Python module")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        sys.path.insert(0, str(path.resolve().parent))
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            raise ConfigError(f"{target}: importing it failed: {type(exc).__name__}: {exc}") from exc
        return module
    sys.path.insert(0, str(Path.cwd()))
    try:
        return importlib.import_module(target)
    except ModuleNotFoundError as exc:
        raise ConfigError(f"cannot import {target!r}: {exc}; pass a module path or a .py file") from exc
    except Exception as exc:
        raise ConfigError(f"{target}: importing it failed: {type(exc).__name__}: {exc}") from exc
