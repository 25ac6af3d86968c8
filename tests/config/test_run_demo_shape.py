"""How make demo's web app serves, by database (config/run_demo.py, WEB_SQLITE / WEB_THREADS_POSTGRES)."""

from __future__ import annotations

import os

import pytest

from config import run_demo


def _web_argv() -> list[str]:
    return run_demo._commands(8000)["web"][0]


def _option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_on_sqlite_the_web_app_keeps_a_few_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    argv = _web_argv()
    assert (_option(argv, "--workers"), _option(argv, "--threads")) == ("2", "4")


@pytest.mark.parametrize("url", ["postgres://postgres@127.0.0.1:5432/sift", "postgresql://u@h/db"])
def test_on_postgresql_the_web_app_serves_a_worker_per_core_with_more_threads(
        monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    argv = _web_argv()
    assert (_option(argv, "--workers"), _option(argv, "--threads")) == ("4", "8")
