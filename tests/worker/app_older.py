"""The compute-plane test app as an older deploy had it: without ``quick`` and ``anywhere``.

A worker loads this file with its directory on ``sys.path``, so ``app`` is the current test app.
"""

from __future__ import annotations

import app as current

from outlast import Registry

app = Registry([current.multi, current.hang, current.gated])
