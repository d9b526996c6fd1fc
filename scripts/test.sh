#!/usr/bin/env bash
# Runs every test of the workspace. .ci/run calls exactly this after the lint checks.
# It installs what the tests need and is not on a fresh machine: the Python
# `cryptography` package for the independent export verifier (tests/python)
# Debian's pgbackrest for the PostgreSQL side-by-side test, and moto_server in
# .venv for the S3 tests.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! python3 -c 'import cryptography' 2>/dev/null; then
  python3 -m pip install --quiet 'cryptography>=41'
fi
# pgBackRest (Debian package) for the side-by-side PostgreSQL test; PostgreSQL 15
# itself is on the machine. Without root or network the test fails under CI=true
# (and says SKIPPED loudly elsewhere).
if ! command -v pgbackrest >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q pgbackrest >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q pgbackrest >/dev/null 2>&1; } \
    || echo "scripts/test.sh: could not install pgbackrest; its side-by-side test fails under CI=true" >&2
fi
# moto_server (PyPI) for the S3 end-to-end tests, in the project's own virtual
# environment. Pinned: moto 5.2 answers GetBucketVersioning with a root element
# the AWS SDKs for Rust refuse (boto3 does not check it).
if ! command -v promtool >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus >/dev/null 2>&1; } \
    || echo "scripts/test.sh: could not install prometheus (promtool); the alert rule tests fail under CI=true" >&2
fi
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1; } \
    || echo "scripts/test.sh: could not install chromium; the browser page test fails under CI=true" >&2
fi
if [ ! -x .venv/bin/moto_server ] || ! .venv/bin/python -c 'import moto, sys; sys.exit(moto.__version__ != "5.0.28")' 2>/dev/null; then
  python3 -m venv .venv
  .venv/bin/pip install --quiet 'moto[s3]==5.0.28' flask flask-cors
fi
# schemathesis (PyPI) for the OpenAPI conformance test of the read API.
if ! .venv/bin/python -c 'import websocket' 2>/dev/null; then
  .venv/bin/pip install --quiet 'websocket-client==1.8.0'
fi
if [ ! -x .venv/bin/schemathesis ] || ! .venv/bin/python -c 'import schemathesis, sys; sys.exit(schemathesis.__version__ != "4.32.5")' 2>/dev/null; then
  .venv/bin/pip install --quiet 'schemathesis==4.32.5'
fi
# PostgreSQL 15 (its server binaries; the tests start clusters as the
# `postgres` user when run as root).
PG_BIN="${TIDEMARK_PG_BIN:-/usr/lib/postgresql/15/bin}"
if [ ! -x "$PG_BIN/postgres" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql-15 >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql-15 >/dev/null 2>&1; } \
    || echo "scripts/test.sh: could not install postgresql-15; the PostgreSQL tests fail under CI=true" >&2
fi
# Say what was found, so a failing service test is never a surprise.
found() { if [ -n "$2" ]; then echo "  $1: $2"; else echo "  $1: MISSING"; fi; }
echo "scripts/test.sh: services for the end-to-end tests:"
found "PostgreSQL 15" "$([ -x "$PG_BIN/postgres" ] && "$PG_BIN/postgres" --version)"
found "moto_server" "$([ -x .venv/bin/moto_server ] && echo "moto $(.venv/bin/python -c 'import moto; print(moto.__version__)') in .venv")"
found "pgbackrest" "$(command -v pgbackrest >/dev/null 2>&1 && pgbackrest version)"
found "chromium" "$(command -v chromium >/dev/null 2>&1 && chromium --version 2>/dev/null | head -1)"
found "websocket-client" "$(.venv/bin/python -c 'import websocket; print(websocket.__version__)' 2>/dev/null)"
found "promtool" "$(command -v promtool >/dev/null 2>&1 && promtool --version 2>&1 | head -1)"
found "schemathesis" "$([ -x .venv/bin/schemathesis ] && .venv/bin/schemathesis --version)"
found "python cryptography" "$(python3 -c 'import cryptography; print(cryptography.__version__)' 2>/dev/null)"
cargo test --workspace --all-targets
