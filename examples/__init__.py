"""Runnable Outlast examples: ``examples.onboarding`` (background enrichment) and ``examples.blog``
(a streamed blog writer). See ``examples/README.md``."""
