# Sift: two commands for users (`make demo`, `make test`) and a few for developers.
# Every target does its own set-up: it creates .venv and installs what it needs first.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PORT   ?= 8000
# Extra pip index for the CPU build of torch on machines without a local wheel, e.g.
#   make demo PIP_EXTRA="--extra-index-url https://download.pytorch.org/whl/cpu"
PIP_EXTRA ?=

export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test lint unit bench assets install browser clean

$(VENV)/.installed: pyproject.toml client/pyproject.toml client/sift_client/*.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(PIP_EXTRA) -e '.[dev]'
	$(BIN)/pip install -q ./client
	touch $@

install: $(VENV)/.installed

# Front-end libraries come from npm at build time; nothing third-party is committed.
frontend/static/vendor/.built: frontend/package.json frontend/package-lock.json
	npm --prefix frontend ci --no-audit --no-fund --silent
	mkdir -p frontend/static/vendor
	cp frontend/node_modules/htmx.org/dist/htmx.min.js frontend/static/vendor/htmx.min.js
	cp frontend/node_modules/chart.js/dist/chart.umd.min.js frontend/static/vendor/chart.umd.min.js
	touch $@

assets: frontend/static/vendor/.built

# Browser tests drive Debian's Chromium (Playwright cannot download a browser here).
browser:
	@test -x /usr/bin/chromium || { echo "Installing Debian's chromium for the browser tests"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) || \
	  echo "could not install chromium: browser tests will fail under CI"; }
	@# Glyphs for Arabic, Hebrew, Devanagari, CJK and emoji: without them Chromium draws empty boxes (the RTL
	@# browser test checks the rendering, docs/screenshots shows it).
	@test -f /usr/share/fonts/truetype/noto/NotoSansArabic-Regular.ttf -a -d /usr/share/fonts/opentype/noto \
	  -a -f /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf || { echo "Installing Debian's Noto fonts"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fonts-noto-core fonts-noto-cjk \
	   fonts-noto-color-emoji) || echo "could not install the Noto fonts: non-Latin text will render as boxes"; }

# Quiet on purpose: what the terminal shows is the URL, the users, where the password is and how to stop (the
# web app's, the worker's and beat's own logs go to $SIFT_DATA_DIR/logs/, var/logs/ by default). load_demo's
# system checks already ran in migrate.
demo: install assets
	@SIFT_DEMO=1 SIFT_LOG_LEVEL=$${SIFT_LOG_LEVEL:-WARNING} $(BIN)/python manage.py migrate --noinput -v 0
	@SIFT_DEMO=1 SIFT_LOG_LEVEL=$${SIFT_LOG_LEVEL:-WARNING} $(BIN)/python manage.py load_demo -v 0 --skip-checks
	@SIFT_DEMO=1 PORT=$(PORT) $(BIN)/python -m config.run_demo

lint: install
	$(BIN)/ruff check .
	SIFT_DEBUG=1 $(BIN)/mypy .
	$(BIN)/lint-imports

unit: install
	$(BIN)/python -m pytest tests/learning/core -q

# The whole suite. Where DATABASE_URL / REDIS_URL are unset it starts a private PostgreSQL and Redis for the run
# (scripts/with_services.py) and stops them after, so no server needs to be running; where set, it uses them.
test: install assets browser lint
	$(BIN)/python scripts/with_services.py -- $(BIN)/python -m pytest -q --durations=25

# Benchmarks need PostgreSQL (the local one by default); BENCH_ARGS=--quick for a smoke run.
bench: install assets
	DATABASE_URL=$${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/sift_bench} \
	REDIS_URL=$${REDIS_URL:-redis://127.0.0.1:6379/14} $(BIN)/python bench/run_all.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) frontend/node_modules frontend/static/vendor staticfiles var
