# timefuse: one image for every role (`timefuse api`, `ingest`, `dispatch`, `migrate`, `serve`).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/timefuse
# Only what the wheel needs: a build context holding a virtualenv or databases stays out.
COPY pyproject.toml README.md ./
COPY timefuse ./timefuse
RUN pip install . && rm -rf /opt/timefuse/build

# Never root: the process needs no privilege, and a compromise should not get one.
RUN useradd --system --uid 10001 --home-dir /var/lib/timefuse --create-home timefuse
USER timefuse
WORKDIR /var/lib/timefuse
# Where the compose stack mounts the signing keyring's volume: a new volume takes this
# directory's owner and mode, so the API (not root) can write the keyring there.
RUN mkdir -m 0700 /var/lib/timefuse/keys

# In a container the API must listen beyond loopback; JSON logs for the log collector.
ENV TIMEFUSE_HOST=0.0.0.0 \
    TIMEFUSE_PORT=8080 \
    TIMEFUSE_LOG_FORMAT=json
EXPOSE 8080

# Liveness of whichever role runs: the API's port, or TIMEFUSE_METRICS_PORT for roles
# without the API (ingest, dispatch). The slim image has no curl, Python is enough.
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; port = os.environ.get('TIMEFUSE_METRICS_PORT') or os.environ.get('TIMEFUSE_PORT', '8080'); urllib.request.urlopen(f'http://127.0.0.1:{port}/health/live', timeout=4)"]

ENTRYPOINT ["timefuse"]
CMD ["serve"]
