"""The ``outlast`` command line."""
