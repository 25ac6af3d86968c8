# One image for web and worker; docker-compose.yml chooses the command.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false \
    PIP_NO_CACHE_DIR=1

RUN apt-get update && apt-get install -y --no-install-recommends nodejs npm \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY config ./config
COPY labeling ./labeling
COPY learning ./learning
COPY frontend ./frontend
COPY manage.py ./
# The CPU build of torch; the default PyPI wheel is a multi-GB CUDA build.
RUN pip install --extra-index-url https://download.pytorch.org/whl/cpu . \
    && npm --prefix frontend ci --no-audit --no-fund \
    && mkdir -p frontend/static/vendor \
    && cp frontend/node_modules/htmx.org/dist/htmx.min.js frontend/node_modules/chart.js/dist/chart.umd.min.js frontend/static/vendor/ \
    && rm -rf frontend/node_modules \
    && SIFT_SECRET_KEY=build-only-not-a-secret-build-only-0123456789-abcdefghij python manage.py collectstatic --noinput

RUN useradd --create-home sift && mkdir -p /app/var && chown sift /app/var
USER sift
EXPOSE 8000
