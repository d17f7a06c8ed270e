# syntax=docker/dockerfile:1
# One image for the API (`saas serve`, the default), the worker (`saas worker`) and migrations
# (`saas migrate`). Build: `docker build -t saas-backend .`

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# uv itself, pinned: copied into the build stage only.
FROM ghcr.io/astral-sh/uv:0.13.9 AS uv

# ---- build: resolve the locked dependencies into /app/.venv -------------------------------
FROM ${PYTHON_IMAGE} AS build
COPY --from=uv /uv /usr/local/bin/uv
# Bytecode compiled at build time (the runtime image is not writable by the app user);
# copy instead of hard links because the cache is a separate mount; never download a Python:
# the venv must use the interpreter of the base image that the runtime stage shares.
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3 \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /src
# Dependencies first, in their own layer, so that a code change does not reinstall them.
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=bind,source=uv.lock,target=uv.lock \
    --mount=type=bind,source=pyproject.toml,target=pyproject.toml \
    uv sync --frozen --no-dev --no-install-project
COPY pyproject.toml uv.lock README.md ./
COPY src ./src
# The project itself as a regular (non-editable) install: the runtime needs no source tree.
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable

# ---- runtime: the interpreter, the venv, the migrations; no uv, no compilers, no caches ---
FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin app
WORKDIR /app
COPY --from=build /app/.venv /app/.venv
COPY alembic.ini ./
COPY migrations ./migrations
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    APP_HOST=0.0.0.0 \
    APP_PORT=8000 \
    APP_LOG_FORMAT=json
USER 10001:10001
EXPOSE 8000
# The slim image has no curl: a Python one-liner, which fails on a refused connection, a
# timeout or a non-2xx answer. The worker and migrate containers turn it off (compose).
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('APP_PORT', '8000'), timeout=4)"]
# uvicorn and the ARQ worker both finish in-flight work on SIGTERM.
STOPSIGNAL SIGTERM
ENTRYPOINT ["saas"]
CMD ["serve"]
