# The drift monitor (`driftloop monitor serve`): drift checks, /metrics, /status, /healthz and
# the Alertmanager webhook /alerts on port 8001.
# Build from the repository root: docker build -f infra/docker/monitor.Dockerfile .
FROM python:3.11-slim-bookworm

COPY --from=ghcr.io/astral-sh/uv:0.13.8 /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PROJECT_ENVIRONMENT=/opt/driftloop \
    URLLIB3_NO_OVERRIDE=1 \
    PATH=/opt/driftloop/bin:$PATH \
    PYTHONUNBUFFERED=1

WORKDIR /app
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project
COPY src ./src
COPY services ./services
COPY flows ./flows
RUN uv sync --frozen --no-dev \
    && useradd --create-home --uid 10001 driftloop \
    && mkdir -p /var/lib/driftloop \
    && chown driftloop /var/lib/driftloop

USER 10001
ENV DRIFTLOOP_HOME=/var/lib/driftloop \
    DRIFTLOOP_MONITOR__HOST=0.0.0.0
EXPOSE 8001
HEALTHCHECK --interval=10s --timeout=5s --retries=6 \
    CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://localhost:8001/healthz', timeout=4)"]
CMD ["driftloop", "monitor", "serve"]
