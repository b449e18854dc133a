"""The web console's static files (``static/``): HTML, CSS and ES modules, served by the API at ``/``.

No build step: the browser loads the modules as they are, and they use only the public HTTP API
through the browser client (``/client.js``), as a user's own UI would.
"""
