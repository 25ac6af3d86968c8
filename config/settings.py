"""Sift settings: the one env-driven settings module.

Every deployment difference comes from the environment (see README, "Configuration"):

- ``SIFT_SECRET_KEY``   required in production; never in source.
- ``SIFT_DEBUG``        off unless asked for.
- ``SIFT_DEMO``         the ``make demo`` mode: plain-HTTP cookies, a generated key kept in ``var/``.
- ``DATABASE_URL``      postgres://... ; unset means SQLite under ``var/``.
- ``REDIS_URL``         Celery broker and cache; unset means a file-system broker (no server).
- ``SIFT_ALLOWED_HOSTS`` comma-separated.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

import dj_database_url
from csp.constants import NONE, SELF
from django.core.checks.security.base import (
    SECRET_KEY_INSECURE_PREFIX,
    SECRET_KEY_MIN_LENGTH,
    SECRET_KEY_MIN_UNIQUE_CHARACTERS,
)
from django.core.exceptions import ImproperlyConfigured

from config.env import env_bool, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(env_str("SIFT_DATA_DIR", str(BASE_DIR / "var")))

DEBUG = env_bool("SIFT_DEBUG", False)
DEMO = env_bool("SIFT_DEMO", False)
# pytest sets PYTEST_VERSION before it imports anything; tests get an ephemeral key.
TESTING = "PYTEST_VERSION" in os.environ


def _secret_key() -> str:
    configured = env_str("SIFT_SECRET_KEY")
    if configured:
        # Django's own deploy check (security.W009) defines "strong enough", with these constants: 50+ characters,
        # 5+ distinct ones, no "django-insecure-" prefix. It only warns, and only under --deploy; a key it would
        # warn about (32 identical characters passed a length-only test) is refused here, before anything runs.
        if (len(configured) < SECRET_KEY_MIN_LENGTH or len(set(configured)) < SECRET_KEY_MIN_UNIQUE_CHARACTERS
                or configured.startswith(SECRET_KEY_INSECURE_PREFIX)):
            raise ImproperlyConfigured(
                f"SIFT_SECRET_KEY is too weak: use at least {SECRET_KEY_MIN_LENGTH} characters with at least "
                f"{SECRET_KEY_MIN_UNIQUE_CHARACTERS} different ones, not starting with "
                f"{SECRET_KEY_INSECURE_PREFIX!r} (Django's check security.W009). For example: "
                "python -c 'import secrets; print(secrets.token_urlsafe(50))'"
            )
        return configured
    if DEMO:
        # The demo keeps one generated key on disk so sessions survive a restart.
        key_file = DATA_DIR / "demo_secret_key"
        if not key_file.exists():
            DATA_DIR.mkdir(parents=True, exist_ok=True)
            key_file.write_text(secrets.token_urlsafe(50))
            key_file.chmod(0o600)
        return key_file.read_text().strip()
    if DEBUG or TESTING:
        return secrets.token_urlsafe(50)
    raise ImproperlyConfigured(
        "SIFT_SECRET_KEY is not set. Production refuses to start without a secret key; "
        "set SIFT_DEBUG=1 for local development."
    )


SECRET_KEY = _secret_key()

ALLOWED_HOSTS = env_list(
    "SIFT_ALLOWED_HOSTS",
    ["127.0.0.1", "localhost", "testserver"] if (DEBUG or DEMO or TESTING) else [],
)
CSRF_TRUSTED_ORIGINS = env_list("SIFT_CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "axes",
    "labeling",
    "learning",
    "frontend",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # django-csp's, with the header text built once (config/csp_middleware.py).
    "config.csp_middleware.CSPMiddleware",
    # Last, so that a locked-out login never reaches the view.
    "axes.middleware.AxesMiddleware",
]

AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "csp.context_processors.nonce",
            ],
        },
    },
]


def _databases() -> dict[str, Any]:
    url = env_str("DATABASE_URL")
    if url:
        db = dj_database_url.parse(url, conn_max_age=env_int("SIFT_DB_CONN_MAX_AGE", 60))
        db.setdefault("OPTIONS", {})
        return {"default": db}
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    return {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(DATA_DIR / "sift.sqlite3"),
            "OPTIONS": {
                # IMMEDIATE takes SQLite's single write lock at BEGIN, so a queue
                # checkout's read-then-write cannot interleave with another one:
                # this is SQLite's equivalent of SELECT ... FOR UPDATE SKIP LOCKED.
                "transaction_mode": "IMMEDIATE",
                "timeout": 30,
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
        }
    }


DATABASES = _databases()
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env_str("REDIS_URL")
# The longest a task may run (hard limit, killed past it), and the broker's redelivery delay, which must exceed it.
SIFT_TASK_TIME_LIMIT_SECONDS = env_int("SIFT_TASK_TIME_LIMIT_SECONDS", 4 * 3600)
SIFT_TASK_VISIBILITY_SECONDS = env_int("SIFT_TASK_VISIBILITY_SECONDS", 6 * 3600)
if SIFT_TASK_VISIBILITY_SECONDS <= SIFT_TASK_TIME_LIMIT_SECONDS:
    raise ImproperlyConfigured("SIFT_TASK_VISIBILITY_SECONDS must exceed SIFT_TASK_TIME_LIMIT_SECONDS: otherwise "
                               "the broker redelivers a task that is still running")

if REDIS_URL:
    # JSON, not Django's default pickle: nothing read back from Redis is ever unpickled. The cache holds ints
    # (the queue's rank floor) and lists of floats (DRF's throttle history), both plain JSON.
    # The reviewer path must survive Redis being down (issue 9): config/cache.py turns a cache failure into a miss
    # (logged), and the short socket timeouts keep a dead or hung Redis from stalling a request.
    CACHES = {"default": {"BACKEND": "config.cache.ResilientRedisCache", "LOCATION": REDIS_URL,
                          "OPTIONS": {"serializer": "django.core.signing.JSONSerializer",
                                      "socket_connect_timeout": 0.5, "socket_timeout": 0.5}}}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 10}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
    # Refuses nothing: its password_changed hook revokes the user's API tokens (labeling/services/credentials.py).
    {"NAME": "labeling.services.credentials.RevokeTokensOnPasswordChange"},
]
if TESTING:
    # Hashing cost is security for users and pure waste in a test run.
    PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

LANGUAGE_CODE = "en-gb"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
_IMAGE_STORAGE_BACKEND = env_str("SIFT_IMAGE_STORAGE_BACKEND", "django.core.files.storage.FileSystemStorage")
_IMAGE_ROOT = env_str("SIFT_IMAGE_ROOT", str(DATA_DIR / "images"))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
    # Derived image files (labeling/services/images/): a local folder by default; several machines share an
    # S3-compatible bucket through django-storages (README, "Images": SIFT_IMAGE_STORAGE_BACKEND and its options).
    "images": {
        "BACKEND": _IMAGE_STORAGE_BACKEND,
        "OPTIONS": {"location": _IMAGE_ROOT} if _IMAGE_STORAGE_BACKEND.endswith(".FileSystemStorage") else {
            # django-storages' S3Storage (credentials from boto3's usual AWS_* environment variables).
            "bucket_name": env_str("SIFT_IMAGE_S3_BUCKET"),
            "endpoint_url": env_str("SIFT_IMAGE_S3_ENDPOINT") or None,
            "default_acl": "private", "querystring_auth": True, "file_overwrite": True,
        },
    },
}
# The demo and local development serve static files straight from the apps: no collectstatic needed.
WHITENOISE_USE_FINDERS = DEBUG or DEMO
MEDIA_ROOT = DATA_DIR / "media"
EXPORT_ROOT = DATA_DIR / "exports"
# Uploads waiting for the import worker (labeling/services/import_jobs.py); each is deleted once imported.
IMPORT_ROOT = DATA_DIR / "imports"

LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/login/"

# --- Security -------------------------------------------------------------
# Cookies are Secure unless this is plain-HTTP local development or the demo.
_PLAIN_HTTP = DEBUG or DEMO or TESTING
SESSION_COOKIE_SECURE = not _PLAIN_HTTP
CSRF_COOKIE_SECURE = not _PLAIN_HTTP
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SECURE_SSL_REDIRECT = env_bool("SIFT_SSL_REDIRECT", not _PLAIN_HTTP)
SECURE_HSTS_SECONDS = 0 if _PLAIN_HTTP else env_int("SIFT_HSTS_SECONDS", 31_536_000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = not _PLAIN_HTTP
SECURE_HSTS_PRELOAD = not _PLAIN_HTTP
# Behind a reverse proxy (SIFT_BEHIND_PROXY), the one switch every part of Sift reads the client from. Off, the
# client is REMOTE_ADDR and X-Forwarded-For is ignored (anyone can write it: rotating it would dodge the login
# throttle). On, the client is the address the last SIFT_PROXY_COUNT proxies (default 1) appended to
# X-Forwarded-For: keyed on REMOTE_ADDR, django-axes would see every user as the proxy, and five wrong passwords
# from anyone would lock a real user out. DRF's throttles (NUM_PROXIES) and django-axes (AXES_CLIENT_IP_CALLABLE,
# labeling/api/authentication.py client_ip, which applies DRF's rule) both come from these two values.
BEHIND_PROXY = env_bool("SIFT_BEHIND_PROXY", False)
PROXY_COUNT = env_int("SIFT_PROXY_COUNT", 1) if BEHIND_PROXY else 0
if PROXY_COUNT < 0 or (BEHIND_PROXY and PROXY_COUNT == 0):
    raise ImproperlyConfigured("SIFT_PROXY_COUNT must be 1 or more (the number of proxies in front of Sift)")
if BEHIND_PROXY:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# Scripts only from our own origin; no inline script, no eval. Item text is
# rendered as text, and even if a template slipped, injected script would not run.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF, "data:"],
        "connect-src": [SELF],
        "font-src": [SELF],
        "object-src": [NONE],
        "base-uri": [NONE],
        "frame-ancestors": [NONE],
        "form-action": [SELF],
    }
}

# Request bodies: the item import streams uploads from disk, so the in-memory cap stays small.
DATA_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
SIFT_MAX_UPLOAD_BYTES = env_int("SIFT_MAX_UPLOAD_BYTES", 512 * 1024 * 1024)
SIFT_MAX_DECOMPRESSED_BYTES = env_int("SIFT_MAX_DECOMPRESSED_BYTES", 4 * 1024 * 1024 * 1024)
# Image items (labeling/services/images/): one image file's bytes, its pixels (Pillow's decompression-bomb limit),
# a zip upload's members and their total inflated size.
SIFT_MAX_IMAGE_BYTES = env_int("SIFT_MAX_IMAGE_BYTES", 20 * 1024 * 1024)
SIFT_MAX_IMAGE_PIXELS = env_int("SIFT_MAX_IMAGE_PIXELS", 40_000_000)
SIFT_MAX_ZIP_MEMBERS = env_int("SIFT_MAX_ZIP_MEMBERS", 100_000)
SIFT_MAX_ZIP_INFLATED_BYTES = env_int("SIFT_MAX_ZIP_INFLATED_BYTES", 8 * 1024 * 1024 * 1024)
SIFT_MAX_TEXT_CHARS = env_int("SIFT_MAX_TEXT_CHARS", 1_000_000)

# Who may create projects through the API (labeling/services/projects.py, project_creation_allowed): "admins"
# (the default: superusers and users granted the labeling.add_project permission in Django's admin) or "all"
# (any signed-in user, who becomes the new project's admin). The create_project command is for operators and
# is not limited by this.
SIFT_PROJECT_CREATORS = env_str("SIFT_PROJECT_CREATORS", "admins")
if SIFT_PROJECT_CREATORS not in ("admins", "all"):
    raise ImproperlyConfigured(f"SIFT_PROJECT_CREATORS must be 'admins' or 'all', got {SIFT_PROJECT_CREATORS!r}")

# Login throttling (django-axes): lock an account+IP out after repeated failures.
AXES_FAILURE_LIMIT = env_int("SIFT_LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = 0.25  # hours
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_ENABLED = env_bool("SIFT_AXES_ENABLED", True)
# A locked-out API token request gets the API's JSON error shape, not an HTML page.
AXES_LOCKOUT_CALLABLE = "labeling.api.errors.axes_lockout_response"
# The client address by the proxy rule above (the same function DRF's throttles use), not axes's own ipware guess.
AXES_CLIENT_IP_CALLABLE = "labeling.api.authentication.client_ip"

# --- DRF ------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # DRF's TokenAuthentication rules and messages, with the look-up in plain SQL (labeling/api/authentication.py).
        "labeling.api.authentication.SqlTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "EXCEPTION_HANDLER": "labeling.api.errors.exception_handler",
    "DEFAULT_THROTTLE_RATES": {"login": env_str("SIFT_LOGIN_RATE", "20/min")},
    # 0: X-Forwarded-For is never trusted; N: the Nth address from its right (see BEHIND_PROXY above).
    "NUM_PROXIES": PROXY_COUNT,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Sift API",
    "DESCRIPTION": "Human-in-the-loop active-learning labelling for trust-and-safety teams.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # Three models have a field called status: each enum gets a stable, readable name in the schema.
    "ENUM_NAME_OVERRIDES": {
        "SnapshotStatusEnum": "labeling.models.exports.ExportSnapshot.Status",
        "TaxonomyVersionStatusEnum": "labeling.models.taxonomy.TaxonomyVersion.Status",
        "ModelVersionStatusEnum": "learning.models.ModelVersion.Status",
        # One name for the selection reasons wherever they appear (queue/next, item history), another for why an
        # item went to a lead: both fields are called "reason".
        "SelectionReasonEnum": "labeling.models.queue.SelectionReason",
        "AdjudicationReasonEnum": "labeling.models.annotations.Adjudication.Reason",
        # How an item joined its near-duplicate cluster (queue/next), and a wellness blur level (wellness/).
        "ClusterKindEnum": "labeling.models.clusters.ClusterKind",
        "KindEnum": ["rename", "merge", "split", "deprecate"],  # a taxonomy migration's kind, named as before
        "BlurLevelEnum": "labeling.models.wellness.BlurLevel",
    },
    # Every endpoint's 400/401/403/404 in the API's one error shape (labeling/api/errors.py).
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "labeling.api.errors.document_error_responses",
    ],
}

# --- Celery -----------------------------------------------------------------
if REDIS_URL:
    CELERY_BROKER_URL = REDIS_URL
    CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, Any] = {
        # An unacknowledged (acks_late) message is handed to another worker after this long. It must exceed the
        # longest task, or a task still running would be run a second time: the hard time limits below cap every
        # task at 4 h (embedding 1M items with MiniLM on one CPU core: ~2 h), so 6 h leaves a margin. Recovery
        # from a killed worker does not wait for it: the sweep re-flags a job whose claim went stale
        # (learning/jobs.py), so the visibility timeout only guards against duplicate work.
        "visibility_timeout": SIFT_TASK_VISIBILITY_SECONDS,
        # A web process publishing on a dead Redis gives up at once (refused), on a hung one after 2 s (kombu's
        # BRPOP polls for 1 s, so workers stay inside it): a submit waits on this send (its on_commit callback),
        # and the sweep re-sends later anyway.
        "socket_connect_timeout": 1.0,
        "socket_timeout": 2.0,
    }
else:
    # A broker that needs no server: the worker and web process share a folder.
    _broker_dir = DATA_DIR / "broker"
    for _sub in ("in", "processed", "control"):
        (_broker_dir / _sub).mkdir(parents=True, exist_ok=True)
    # The host part means nothing to this transport; naming one spares every process kombu's "No hostname was
    # supplied" warning (make demo's terminal showed it).
    CELERY_BROKER_URL = "filesystem://localhost/"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "in"),
        "data_folder_out": str(_broker_dir / "in"),
        "processed_folder": str(_broker_dir / "processed"),
        # Broadcast/control messages; kombu's default is ./control in the working directory.
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
    }
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_IGNORE_RESULT = True
# At-least-once delivery is opted into per task (acks_late and reject_on_worker_lost on the decorator, each with
# the reason it is safe: learning/tasks.py, labeling/tasks.py). The default stays "acknowledge on receipt", so a
# new task cannot be redelivered (and run twice) before someone has shown it is idempotent.
CELERY_TASK_ACKS_LATE = False
CELERY_TASK_REJECT_ON_WORKER_LOST = False
# Hard limits, so "the longest task" is a number the visibility timeout can exceed (see the transport options).
CELERY_TASK_TIME_LIMIT = SIFT_TASK_TIME_LIMIT_SECONDS
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# A web process fails fast on a dead broker (connection attempts during a submit's on_commit); workers and beat
# keep retrying forever on their own loop, and connect at start-up even if the broker comes up after them.
CELERY_BROKER_CONNECTION_TIMEOUT = 1.0
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A lost broker connection does not cancel running tasks: each holds its claim in PostgreSQL, so a redelivery of
# its message finds the live claim and does nothing, and the work it finishes is not wasted.
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = False
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ROUTES = {
    "sift.learning.embed_*": {"queue": "embedding"},
    "sift.learning.retrain_*": {"queue": "training"},
    "sift.labeling.export_*": {"queue": "export"},
}
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# The learning loop's safety net (learning/jobs.py): re-enqueue dirty jobs whose enqueue failed or was lost.
SIFT_LEARNING_SWEEP_SECONDS = env_int("SIFT_LEARNING_SWEEP_SECONDS", 60)
# Beat's record of when each entry last ran (a shelve file it writes itself): under the data directory, never
# the working directory, which is the repository root for `celery beat` run by hand and /app (not writable by
# the sift user) in the image.
CELERY_BEAT_SCHEDULE_FILENAME = str(DATA_DIR / "celerybeat-schedule")
CELERY_BEAT_SCHEDULE = {
    "sift-learning-sweep": {"task": "sift.learning.sweep", "schedule": float(SIFT_LEARNING_SWEEP_SECONDS)},
    # Hard-deletes items past their project's retention_days (labeling/services/privacy.py).
    "sift-privacy-retention": {"task": "sift.labeling.retention_sweep",
                               "schedule": float(env_int("SIFT_RETENTION_SWEEP_SECONDS", 3600))},
    # Closes leases an hour past expiry, keeping the active-lease indexes small (labeling/services/queues.py).
    "sift-queue-lease-release": {"task": "sift.labeling.lease_release_expired",
                                 "schedule": float(env_int("SIFT_LEASE_RELEASE_SECONDS", 600))},
}

# --- Learning loop (learning/scheduling.py, learning/jobs.py, learning/services) ---
# A running claim without a heartbeat for this long is presumed dead (a killed worker) and may be taken over.
# Short because a background thread of the run refreshes the claim every SIFT_LEARNING_HEARTBEAT_SECONDS, however
# long its phases (learning/jobs.py): only a stopped process misses three beats in a row.
SIFT_LEARNING_STALE_SECONDS = env_int("SIFT_LEARNING_STALE_SECONDS", 30)
SIFT_LEARNING_HEARTBEAT_SECONDS = env_int("SIFT_LEARNING_HEARTBEAT_SECONDS", 5)
if SIFT_LEARNING_HEARTBEAT_SECONDS < 1 or 3 * SIFT_LEARNING_HEARTBEAT_SECONDS > SIFT_LEARNING_STALE_SECONDS:
    raise ImproperlyConfigured("SIFT_LEARNING_HEARTBEAT_SECONDS must be at least 1 and at most a third of "
                               "SIFT_LEARNING_STALE_SECONDS: otherwise a live run's claim could be taken over")
# A worker's main process records that it is alive, and how many tasks it runs, this often (learning/worker.py);
# the health endpoint counts a worker busy with a long task as healthy while these keep coming.
SIFT_WORKER_HEARTBEAT_SECONDS = env_int("SIFT_WORKER_HEARTBEAT_SECONDS", 15)
# A queued message not consumed for this long is presumed lost; the sweep may enqueue again.
SIFT_LEARNING_QUEUED_STALE_SECONDS = env_int("SIFT_LEARNING_QUEUED_STALE_SECONDS", 900)
# Ranked positions written per retrain; past them the queue serves its random fallback (learning/services/retrain.py).
SIFT_RANKING_MAX_DEPTH = env_int("SIFT_RANKING_MAX_DEPTH", 200_000)
SIFT_RANKING_WRITE_BATCH = env_int("SIFT_RANKING_WRITE_BATCH", 10_000)
# Positions of a cold-start ranking (k-means picks cost grows with depth; the random fallback serves past it).
SIFT_COLD_START_DEPTH = env_int("SIFT_COLD_START_DEPTH", 200)
SIFT_EMBED_BATCH = env_int("SIFT_EMBED_BATCH", 256)
# Pending items per sift.learning.embed_items task: larger backlogs are split so every worker takes a share.
SIFT_EMBED_CHUNK = env_int("SIFT_EMBED_CHUNK", 1024)
# Projects whose pool vectors a worker keeps in memory between retrains (learning/services/pool.py); 0 disables.
SIFT_POOL_CACHE_PROJECTS = env_int("SIFT_POOL_CACHE_PROJECTS", 2)

# --- Health endpoint (config/health.py) --------------------------------------
# The worker check passes while a beat-scheduled sweep ran within this many seconds (default three sweep periods),
# or while a worker reports a task in hand within SIFT_HEALTH_ALIVE_MAX_AGE (default four of its beats).
SIFT_HEALTH_HEARTBEAT_MAX_AGE = env_int("SIFT_HEALTH_HEARTBEAT_MAX_AGE", 3 * SIFT_LEARNING_SWEEP_SECONDS)
SIFT_HEALTH_ALIVE_MAX_AGE = env_int("SIFT_HEALTH_ALIVE_MAX_AGE", 4 * SIFT_WORKER_HEARTBEAT_SECONDS)
# The queue check fails once a label has waited this many seconds for a model to learn it.
SIFT_HEALTH_MAX_STALENESS = env_int("SIFT_HEALTH_MAX_STALENESS", 900)
# Near-duplicate clusters (learning/core/clusters.py): the estimated Jaccard similarity (MinHash) and the embedding
# cosine at which an item joins a representative's cluster; and the growth within an hour that raises a flood alert
# on the dashboard (labeling/services/clusters.py).
SIFT_CLUSTER_JACCARD = float(env_str("SIFT_CLUSTER_JACCARD", "0.6") or 0.6)
SIFT_CLUSTER_COSINE = float(env_str("SIFT_CLUSTER_COSINE", "0.92") or 0.92)
SIFT_FLOOD_THRESHOLD = env_int("SIFT_FLOOD_THRESHOLD", 100)

# --- Sift product defaults ---------------------------------------------------
SIFT_LEASE_SECONDS = env_int("SIFT_LEASE_SECONDS", 600)
SIFT_UNDO_SECONDS = env_int("SIFT_UNDO_SECONDS", 30)
SIFT_EMBEDDER = env_str("SIFT_EMBEDDER", "minilm")
# Gold answers a reviewer needs before their gold accuracy is judged (labeling/selectors/quality.py).
SIFT_GOLD_MIN_ANSWERS = env_int("SIFT_GOLD_MIN_ANSWERS", 5)
# Labels at or above this severity send their items to a lead (labeling/services/adjudication.py; below 1 reads as 1).
SIFT_ADJUDICATION_SEVERITY = env_int("SIFT_ADJUDICATION_SEVERITY", 4)
# Label-error detection at retrain (learning/services/label_errors.py): only with this many single-label training
# labels, with this many cross-validation folds, and at most this many new suspicions per retrain.
SIFT_LABEL_ERRORS_MIN_LABELS = env_int("SIFT_LABEL_ERRORS_MIN_LABELS", 30)
SIFT_LABEL_ERRORS_FOLDS = env_int("SIFT_LABEL_ERRORS_FOLDS", 3)
SIFT_LABEL_ERRORS_MAX_NEW = env_int("SIFT_LABEL_ERRORS_MAX_NEW", 50)
# ... and again only once this many labels have arrived since the last check (it costs ~3x the retrain's fit).
SIFT_LABEL_ERRORS_EVERY = env_int("SIFT_LABEL_ERRORS_EVERY", 20)
# Queue boost of an item re-opened for a re-check (served before the ranking, like a taxonomy re-queue).
SIFT_LABEL_ERRORS_RECHECK_PRIORITY = env_int("SIFT_LABEL_ERRORS_RECHECK_PRIORITY", 1)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("SIFT_LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "INFO"}},
}
