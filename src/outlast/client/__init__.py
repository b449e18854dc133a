"""The Python client of the Outlast HTTP API.

::

    with outlast.Client("http://127.0.0.1:8000", api_key="...") as client:
        run = client.start("blog", {"topic": "durable AI"})
        for event in client.events(run.run_id):   # resumes across dropped connections
            print(event.seq, event.type)
        print(client.result(run.run_id))
"""

from outlast.client._async import AsyncClient
from outlast.client._sync import Client
from outlast.client.errors import ClientError
from outlast.client.models import Run, RunPage

__all__ = ["AsyncClient", "Client", "ClientError", "Run", "RunPage"]
