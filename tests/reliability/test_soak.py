"""The soak, shortened for CI (bench/soak.py is the ten-minute run): real PostgreSQL, a private redis-server,
gunicorn, two Celery workers and beat, 64 reviewers over HTTP, and one of each fault.

The plan puts the Redis outage last and long enough (8 s) that reviewers submit through it, so this one test
also shows the web app serving reviewers while Redis is down (every submit then commits and answers 201 quickly:
the cache and the broker fail fast and are not needed to commit), and the learning loop catching up once Redis is
back, with every queued message lost (no persistence): the dirty flags and the sweep re-send the work.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require_service
from tests.learning.worker_harness import worker_database_url

pytestmark = [pytest.mark.slow, pytest.mark.worker, pytest.mark.postgres]
REPO = Path(__file__).resolve().parents[2]


def _soak() -> Any:
    spec = importlib.util.spec_from_file_location("sift_bench_soak", REPO / "bench" / "soak.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def test_short_soak_loses_nothing_and_learns_every_label_after_the_faults(postgres_only: None,
                                                                          transactional_db: Any) -> None:
    require_service("redis-server", shutil.which("redis-server") is not None,
                    "the soak starts its own redis-server on a private port (apt install redis-server)")
    require_service("gunicorn", importlib.util.find_spec("gunicorn") is not None, "pip install gunicorn")
    soak = _soak()
    config = soak.Config(database_url=worker_database_url(), duration=75, reviewers=64, items=3000, overlap=2,
                         redis_port=6393, web_port=8393, redis_down_seconds=8,
                         plan=[(15, "kill_worker:0"), (22, "restart_web"), (45, "restart_redis")])
    result = soak.run(config)
    print("\n" + "\n".join(f"{k}: {v}" for k, v in result.items()))
    assert soak.problems(result) == []
    assert [action for _, action in result["faults"]] == ["kill_worker:0", "restart_web", "restart_redis"]
    # Reviewers labelled through the outage: every submit answered 2xx, and no slower than the run's own figures
    # (absolute times mean little on a loaded CI box; a broker connection timeout on the request path would show
    # as seconds on every submit of the outage, i.e. in its median).
    assert result["submits_while_redis_down"] >= 5
    assert result["submits_while_redis_down_ok"] == result["submits_while_redis_down"]
    assert result["median_submit_s_while_redis_down"] <= max(1.0, 3 * result["median_submit_s_overall"])
    assert result["max_submit_s_while_redis_down"] <= max(2.0, 2 * result["p99_submit_s_overall"])
    assert result["acknowledged"] == result["annotations"]
