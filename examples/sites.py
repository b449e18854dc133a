"""``python -m examples.sites``: serve both examples' fixture sites in the foreground.

For running the examples the production way (``outlast worker examples.<name>`` plus the API or
a :class:`~outlast.worker.Dispatcher`): start runs with the URLs this prints.
"""

from __future__ import annotations

import argparse
import contextlib
import threading

from examples.blog.site import library_pages
from examples.common.sitehost import SiteHost
from examples.onboarding.site import companies, site_pages


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m examples.sites", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--companies", type=int, default=5, help="fixture companies to serve (default 5)")
    args = parser.parse_args(argv)
    fixture = companies(args.companies)
    with SiteHost({**site_pages(fixture), **library_pages()}, port=args.port) as site:
        print(f"blog library:  {site.url}/library/")
        print("companies:     " + " ".join(site.url + c.root for c in fixture))
        print("Ctrl-C stops it.")
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
