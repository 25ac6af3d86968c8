"""A Celery worker for the crash and health tests whose ranking writes pause after every batch.

The pause widens the window a SIGKILL lands in (tests/learning/test_crash_safety.py) and keeps a retrain busy for
seconds (tests/reliability/test_health.py). It is patched in here, in the test's own worker process, so the
production write loop (learning/services/retrain.py) carries no test-only sleep. A prefork pool's children are
forked from this process and inherit the patch.

usage: python -m tests.learning.paused_worker SECONDS <the arguments of `celery`>
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any


def main() -> None:
    pause = float(sys.argv[1])
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from labeling.models import RankingEntryManager

    write_columns = RankingEntryManager.write_columns

    def paused(self: RankingEntryManager, **kwargs: Any) -> int:
        written = write_columns(self, **kwargs)
        time.sleep(pause)
        return written

    RankingEntryManager.write_columns = paused  # type: ignore[method-assign]
    from celery.__main__ import main as celery_main

    sys.argv = ["celery", *sys.argv[2:]]
    celery_main()


if __name__ == "__main__":
    main()
