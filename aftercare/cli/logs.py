"""Where log lines go and how many: never contact data or message text, only ids and counts."""

from __future__ import annotations

import logging
import sys


def configure_logging(verbose: bool, *, daemon: bool) -> None:
    """Counts at INFO for the daemon, per-message lines (ids only) with -v."""
    level = logging.DEBUG if verbose else logging.INFO if daemon else logging.WARNING
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aftercare").setLevel(level)
    # APScheduler logs two INFO lines per tick: thousands a day that say nothing.
    logging.getLogger("apscheduler").setLevel(logging.INFO if verbose else logging.WARNING)
