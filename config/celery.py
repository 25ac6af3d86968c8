"""The Celery application. Tasks live in ``learning/tasks.py`` (and later ``labeling/tasks.py``)."""

from __future__ import annotations

import os
import sys
from typing import Any

from celery import Celery
from celery.signals import celeryd_init, worker_process_init, worker_ready, worker_shutdown

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("sift")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def _pin_threads(**_kwargs: Any) -> None:
    """Keep one worker from taking every core: the web process and other workers share the machine.

    BLAS/OpenMP read their variables when numpy/torch load, which happens after this runs (the tasks module is
    imported at worker start-up); torch is pinned too if something imported it already. One thread by default:
    on a loaded two-core box OpenBLAS threads spin-wait on each other and k-means ran 4x slower with two than
    with one (measured while writing learning/services/retrain.py). Tokenizers' own
    thread pool is turned off: it deadlocks in forked pool children and fights torch for the same cores.
    """
    threads = os.environ.get("SIFT_WORKER_THREADS", "1")
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(int(threads))
    # Below the web process in the CPU queue: a retrain may take all the time it likes, a next-item request may
    # not wait behind it (bench/retrain_loop.py measures next-item p99 during a reprioritisation).
    nice = int(os.environ.get("SIFT_WORKER_NICE", "10"))
    if nice > 0 and not getattr(_pin_threads, "niced", False):
        os.nice(nice)
        _pin_threads.niced = True  # type: ignore[attr-defined]
    # BLAS libraries loaded before this point ignore the variables above; limit them directly.
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=int(threads))


# celeryd_init: the worker's main process (the solo pool runs tasks there); worker_process_init: prefork children.
celeryd_init.connect(_pin_threads, weak=False)
worker_process_init.connect(_pin_threads, weak=False)


def _liveness_start(sender: Any = None, **_kwargs: Any) -> None:
    """The worker's main process says "alive, running N tasks" every few seconds (learning/worker.py), so the health
    endpoint can tell a worker busy with a long task from a dead one."""
    from learning.worker import liveness_start

    liveness_start(worker=str(getattr(sender, "hostname", None) or "unknown"))


def _liveness_stop(**_kwargs: Any) -> None:
    from learning.worker import liveness_stop

    liveness_stop()


# worker_ready fires once in the main process (the one that tracks every running task, whatever the pool).
worker_ready.connect(_liveness_start, weak=False)
worker_shutdown.connect(_liveness_stop, weak=False)
