"""The README's set-up claims, checked against the code they describe."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from labeling.api.views_export import SnapshotCreateSerializer

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
MAKEFILE = (ROOT / "Makefile").read_text(encoding="utf-8")


def section(title: str) -> str:
    start = README.index(f"## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start:end if end != -1 else None]


def test_the_readme_opens_with_exactly_the_two_set_up_commands() -> None:
    assert README.startswith("# Sift\n\n```\nmake demo\nmake test\n```\n")


def test_the_demo_port_is_documented_as_the_makefile_reads_it() -> None:
    assert re.search(r"^PORT\s*\?= 8000$", MAKEFILE, re.MULTILINE)
    assert "PORT=$(PORT) $(BIN)/python -m config.run_demo" in MAKEFILE
    assert "Another port: `make demo PORT=8010`." in README
    assert "| `PORT` | `make demo`'s port, default 8000: `make demo PORT=8010` |" in section("Configuration")


def test_manage_py_needs_what_the_readme_says(tmp_path: Path) -> None:
    workflows = section("Main workflows")
    assert ("Outside `make demo`, every `manage.py`\ncommand needs `SIFT_DEBUG=1` (local development) or "
            "`SIFT_SECRET_KEY` (50+ characters, as in production); with\nneither it stops with "
            "`SIFT_SECRET_KEY is not set`.") in workflows
    commands = workflows.split("```\n")[1]
    assert commands.startswith("export SIFT_DEBUG=1 ")
    assert "python manage.py" in commands

    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SIFT_", "PYTEST", "DATABASE_URL", "REDIS_URL")) and k != "DJANGO_ALLOW_ASYNC_UNSAFE"}
    env.update({"DJANGO_SETTINGS_MODULE": "config.settings", "SIFT_DATA_DIR": str(tmp_path)})
    bare = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert bare.returncode == 1
    assert "ImproperlyConfigured: SIFT_SECRET_KEY is not set." in bare.stderr
    debug = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env={**env, "SIFT_DEBUG": "1"},
                           capture_output=True, text=True, timeout=120)
    assert (debug.returncode, debug.stdout.strip()) == (0, "System check identified no issues (0 silenced).")


def test_the_snapshot_request_is_documented_with_its_required_name() -> None:
    fields = SnapshotCreateSerializer().fields
    assert [name for name, field in fields.items() if field.required] == ["name"]
    assert (getattr(fields["name"], "max_length", None), fields["format"].default) == (100, "jsonl")
    assert ("`POST` takes a `name`, required: unique in the project, up to 100\nletters, digits, `-` or `_`; "
            "a taken name is a 409. With it go `format`, `jsonl` by default") in README
    assert ("POST /api/projects/{slug}/exports/          {name, format?, ...export parameters} -> 202 + "
            "status_url (a snapshot)") in README


def test_every_variable_in_the_configuration_table_is_read_by_the_code() -> None:
    names = re.findall(r"^\| `([A-Z_]+)`(?:, `([A-Z_]+)`)? \|", section("Configuration"), re.MULTILINE)
    documented = sorted({name for pair in names for name in pair if name})
    assert "PORT" in documented and "SIFT_DATA_DIR" in documented
    sources = "".join(path.read_text(encoding="utf-8") for path in [
        ROOT / "Makefile", *sorted((ROOT / "config").glob("*.py")),
        ROOT / "labeling" / "management" / "commands" / "load_demo.py"])
    assert [name for name in documented if f'"{name}"' not in sources and f"{name} " not in sources] == []
