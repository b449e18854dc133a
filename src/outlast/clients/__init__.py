"""Client libraries for other languages, shipped inside the Python package.

``js/`` is the browser client (the ``@outlast/client`` npm package: ``outlast.js``, its React
entry ``react.js`` and their ``.d.ts`` types). It is the one source of truth: the API serves
``js/outlast.js`` at ``/client.js`` (:mod:`outlast.api.assets`), and npm publishes the same folder.
"""
