"""The compute plane: workers, leases and takeover, dispatch, deployment versions."""

from outlast.worker.dispatch import Cancelled, Dispatcher, Started
from outlast.worker.worker import Worker

__all__ = ["Cancelled", "Dispatcher", "Started", "Worker"]
