"""``python -m outlast.cli``: the command line (what ``outlast dev`` starts its workers with)."""

from outlast.cli.main import main

main()
