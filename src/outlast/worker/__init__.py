"""The compute plane: workers, leases and takeover, launching runs.

Starting, cancelling and deploying runs is the control plane's (:mod:`outlast.control`);
``Dispatcher``, ``Started`` and ``Cancelled`` are re-exported here for older imports.
"""

from outlast.control import Cancelled, Dispatcher, Started
from outlast.worker.worker import Worker

__all__ = ["Cancelled", "Dispatcher", "Started", "Worker"]
