"""The control plane: start, cancel, supply input to and await runs; deploy versions.

Everything that *asks* for work lives here (the API, the CLI, a worker registering its
workflows); nothing here executes workflow code, so the API plane imports this package and
never ``outlast.worker``.
"""

from outlast.control.dispatch import Cancelled, Dispatcher, Started
from outlast.control.registry import RegistryCache, read_active, read_workflow, register_workflows

__all__ = [
    "Cancelled",
    "Dispatcher",
    "RegistryCache",
    "Started",
    "read_active",
    "read_workflow",
    "register_workflows",
]
