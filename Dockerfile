# The lwsobs service image (docker-compose.yml builds it; docs/stack.md).
# Runs as a non-root user and writes nothing outside /tmp, so the container can run read-only.
FROM python:3.11-slim AS build
# A compiler only here: the wheel carries the modules mypyc compiles (setup.py, lwsobs/build.py).
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY lwsobs ./lwsobs
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

COPY --from=build /wheels /wheels
RUN pip install /wheels/*.whl \
    && rm -rf /wheels \
    && python -c "import sys, lwsobs.build as b; sys.exit(b.build_kind() != 'compiled')" \
    && useradd --system --uid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin lwsobs

WORKDIR /tmp
USER 10001

# Defaults for `lwsobs serve` (the command line below says the same); OTLP export is switched on
# by OTEL_EXPORTER_OTLP_ENDPOINT, set by docker-compose.yml to the jaeger service.
ENV HOME=/tmp \
    LWSOBS_HOST=0.0.0.0 \
    LWSOBS_PORT=8080 \
    LWSOBS_UDP=0.0.0.0:7682

EXPOSE 8080/tcp 7682/udp

HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status == 200 else 1)"]

ENTRYPOINT ["lwsobs"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8080", "--udp", "0.0.0.0:7682"]
