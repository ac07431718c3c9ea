# Bastion: `docker build -t bastion .`, or `docker compose up` (compose.yaml: with
# PostgreSQL and Redis). The data directory (/data: key files, and the SQLite database
# when BASTION_DATABASE_URL is unset) is a volume: back it up, it holds the keys.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    BASTION_DATA_DIR=/data \
    BASTION_HOST=0.0.0.0 \
    BASTION_PORT=8400

RUN useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin bastion \
    && mkdir /data && chown bastion:bastion /data && chmod 700 /data

WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install . && rm -rf /app/src

USER bastion
VOLUME ["/data"]
EXPOSE 8400
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8400/readyz', timeout=4).status != 200)"]

# `bastion init` is safe to run every start: it creates what is missing (keys, schema)
# and migrates the database to head. Arguments go to `bastion serve` (e.g. --workers 4).
ENTRYPOINT ["sh", "-c", "bastion init && exec bastion serve \"$@\"", "bastion"]
CMD []
