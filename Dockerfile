# syntax=docker/dockerfile:1
#
# The ipld-scheduler peer image used by docker-compose.yml (see docs/docker-compose.md).
#
# One image serves three roles there: the scheduler peers (`ipld-scheduler ... run`), the one-shot
# `mesh` step that connects the Kubo nodes (docker/mesh.py) and the one-shot `seed` step that
# schedules sample workflows (docker/seed.sh). IPFS itself runs in the official ipfs/kubo image.
#
#   docker build -t ipld-scheduler:local .
#   docker run --rm ipld-scheduler:local --help

FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    IPLD_SCHEDULER_REPO=/data/repo

WORKDIR /opt/ipld-scheduler

# Dependencies and package in one layer; only what the build needs is in the context (.dockerignore).
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY ipld_scheduler ./ipld_scheduler
RUN pip install . \
    && ipld-scheduler --version

COPY docker/mesh.py docker/seed.sh docker/network.sh /usr/local/lib/ipld-scheduler/

# Workflows run as this unprivileged user, in its repo volume (bash is in the base image: the
# executor runs `run:` steps with bash).
RUN useradd --uid 10001 --user-group --home-dir /data --shell /bin/bash scheduler \
    && mkdir -p /data/repo /data/network \
    && chown -R scheduler:scheduler /data
USER scheduler
WORKDIR /data
VOLUME ["/data/repo"]

# API, dashboard and /metrics (`--port`), and the optional dedicated metrics port (`--metrics-port`).
EXPOSE 8000 9100

ENTRYPOINT ["ipld-scheduler"]
CMD ["--help"]
