# syntax=docker/dockerfile:1
#
# canaryd image: a wheel built in a throw-away stage, installed into a clean slim image that
# runs as an unprivileged user. Build with BuildKit (the default since Docker 23):
#   docker build -t canaryd:dev .

# ---- builder: the canaryd wheel plus a wheel of every dependency ----------------------------
FROM python:3.11.11-slim-bookworm AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml ./
COPY canaryd ./canaryd
# numpy/scipy/pandas/matplotlib ship manylinux wheels: no compiler is needed here either.
RUN pip wheel --wheel-dir /wheels .

# ---- final: the wheels only, no build tools, no pip cache, non-root ------------------------
FROM python:3.11.11-slim-bookworm

LABEL org.opencontainers.image.title="canaryd" \
      org.opencontainers.image.description="Canary analysis daemon for KServe models" \
      org.opencontainers.image.licenses="Apache-2.0"

# MALLOC_ARENA_MAX=2: glibc gives every thread that allocates (the watch threads, the
# Prometheus pool, the scheduler, the HTTP server) an arena of its own, up to 8 per core, and
# each keeps freed memory it cannot return. Two arenas cut the daemon's resident memory at
# 1,000 rollouts from 196 to 169 MB (benchmarks/bench_daemon.py; README, "The daemon at
# scale") at no measurable CPU cost: the threads hold the GIL while they allocate anyway.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MALLOC_ARENA_MAX=2

# The wheels are bind-mounted from the builder, so they never become a layer of this image.
# --no-index: nothing is fetched from the network at this stage.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels /wheels/canaryd-*.whl \
    && useradd --uid 10001 --user-group --create-home --home-dir /home/canaryd \
       --shell /usr/sbin/nologin canaryd

USER 10001
WORKDIR /home/canaryd

# /metrics, /healthz and /readyz
EXPOSE 8080

ENTRYPOINT ["canaryd"]
CMD ["run", "--policies", "/etc/canaryd/policies"]
