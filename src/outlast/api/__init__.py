"""The API plane: an HTTP API over Redis that starts, inspects, cancels and streams runs.

``create_app()`` builds the FastAPI app (``uvicorn 'outlast.api:create_app' --factory`` or
``outlast api``). It never runs workflow code.
"""

from outlast.api.app import create_app

__all__ = ["create_app"]
