# The Prefect process worker with driftloop's flows. At start it applies prefect.yaml (the work
# pool, the ingest/train/retrain deployments and the retrain triggers), then polls for runs;
# each run is forked from its warm flow runner (driftloop.stack.worker; --cold: started as
# `prefect worker start` starts them).
# Build from the repository root: docker build -f infra/docker/worker.Dockerfile .
FROM python:3.11-slim-bookworm AS base

COPY --from=ghcr.io/astral-sh/uv:0.13.8 /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PROJECT_ENVIRONMENT=/opt/driftloop \
    URLLIB3_NO_OVERRIDE=1 \
    PATH=/opt/driftloop/bin:$PATH \
    PYTHONUNBUFFERED=1

WORKDIR /app
# Dependencies first (exactly the lock, no dev tools), so code changes reuse this layer.
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project
COPY src ./src
COPY services ./services
COPY flows ./flows
COPY prefect.yaml ./
RUN uv sync --frozen --no-dev \
    && useradd --create-home --uid 10001 driftloop \
    && mkdir -p /var/lib/driftloop \
    && chown driftloop /var/lib/driftloop

USER 10001
ENV DRIFTLOOP_HOME=/var/lib/driftloop \
    DRIFTLOOP_CODE_DIR=/app
CMD ["sh", "-c", "driftloop deploy && exec python -m driftloop.stack.worker --pool \"${DRIFTLOOP_PREFECT__WORK_POOL:-driftloop-process}\""]
