#!/usr/bin/env bash
# Make PostgreSQL and Redis reachable for the test suite.
# Starts them when installed but stopped; under CI=true installs them (and wrk, the load
# generator of the benchmarks' smoke run, tests/test_benchmarks.py, SoftHSM2 for the
# customer-managed-key tests, and Chromium for the
# console's browser tests, tests/console) when missing and
# fails if they still cannot be reached. Outside CI it only reports: the tests that need
# an absent service skip with a message saying how to enable it.
set -uo pipefail

PG_HOST=127.0.0.1
PG_PORT=5432
REDIS_PORT=6379
in_ci() { [ "${CI:-}" = "true" ]; }

pg_up() { pg_isready -q -h "$PG_HOST" -p "$PG_PORT" 2>/dev/null; }
redis_up() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG; }

wait_for() {  # wait_for NAME CHECK: poll with a deadline, no fixed sleeps
  local name=$1 check=$2 deadline=$((SECONDS + 30))
  while ! $check; do
    if [ $SECONDS -ge $deadline ]; then echo "services: $name did not come up" >&2; return 1; fi
    sleep 0.5
  done
}

install_missing() {
  local pkgs=()
  command -v pg_ctlcluster >/dev/null 2>&1 || pkgs+=(postgresql)
  command -v redis-server >/dev/null 2>&1 || pkgs+=(redis-server)
  command -v wrk >/dev/null 2>&1 || pkgs+=(wrk)
  # SoftHSM2: the PKCS#11 token of the customer-managed-key tests (tests/secrets/keypeers.py).
  command -v softhsm2-util >/dev/null 2>&1 || pkgs+=(softhsm2)
  # Debian's Chromium, for the console's browser tests (tests/console; Playwright drives it).
  [ -x /usr/bin/chromium ] || pkgs+=(chromium)
  # bubblewrap, the sandboxes' default backend (tests/sandboxes; bastion.sandboxes.bwrap).
  command -v bwrap >/dev/null 2>&1 || pkgs+=(bubblewrap)
  if [ ${#pkgs[@]} -gt 0 ] && in_ci; then
    echo "services: installing ${pkgs[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null
  fi
}

start_postgres() {
  pg_up && { echo "services: PostgreSQL is up"; return 0; }
  if command -v pg_ctlcluster >/dev/null 2>&1; then
    local version
    version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)
    if [ -n "$version" ]; then
      echo "services: starting PostgreSQL $version"
      pg_ctlcluster --skip-systemctl-redirect "$version" main start >/dev/null 2>&1 || true
      # A fresh install has no trust rule for TCP; the suite connects as postgres without a password.
      if ! wait_for PostgreSQL pg_up; then return 1; fi
    fi
  fi
  pg_up || return 1
  psql -h "$PG_HOST" -U postgres -d test -c 'select 1' >/dev/null 2>&1 \
    || su postgres -c "psql -qc \"alter user postgres password null\"; createdb test" >/dev/null 2>&1 || true
  pg_up
}

# The suite runs, on each of its two workers, several Bastion apps at once (the session's
# app, the console's server, per-test apps) and `bastion serve` processes, each with its
# own connection pool: together they pass PostgreSQL's default of 100 connections
# ("sorry, too many clients already"). Raise it where we may restart the cluster.
PG_CONNECTIONS=400
ensure_pg_connections() {
  local have version
  have=$(psql -h "$PG_HOST" -U postgres -d test -Atc 'show max_connections' 2>/dev/null) || return 0
  [ "${have:-0}" -ge "$PG_CONNECTIONS" ] && return 0
  version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)
  if [ -z "$version" ] || ! command -v pg_ctlcluster >/dev/null 2>&1; then
    echo "services: PostgreSQL allows $have connections; the suite may need $PG_CONNECTIONS" \
      "(ALTER SYSTEM SET max_connections = $PG_CONNECTIONS, then restart it)"
    return 0
  fi
  echo "services: raising PostgreSQL max_connections from $have to $PG_CONNECTIONS (restart)"
  psql -h "$PG_HOST" -U postgres -d test -qc "alter system set max_connections = $PG_CONNECTIONS" \
    >/dev/null 2>&1 || return 0
  pg_ctlcluster --skip-systemctl-redirect "$version" main restart >/dev/null 2>&1 || true
  wait_for PostgreSQL pg_up
}

start_redis() {
  redis_up && { echo "services: Redis is up"; return 0; }
  if command -v redis-server >/dev/null 2>&1; then
    echo "services: starting Redis"
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$REDIS_PORT" --save "" \
      --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log >/dev/null 2>&1 || true
    wait_for Redis redis_up || return 1
  fi
  redis_up
}

install_missing
status=0
start_postgres || { echo "services: PostgreSQL unavailable"; status=1; }
[ $status -eq 0 ] && { ensure_pg_connections || status=1; }
start_redis || { echo "services: Redis unavailable"; status=1; }
if [ $status -ne 0 ] && in_ci; then
  echo "services: CI=true requires PostgreSQL and Redis" >&2
  exit 1
fi
exit 0
