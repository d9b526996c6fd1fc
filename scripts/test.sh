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
if [ ! -x .venv/bin/moto_server ] || ! .venv/bin/python -c 'import moto, sys; sys.exit(moto.__version__ != "5.0.28")' 2>/dev/null; then
  python3 -m venv .venv
  .venv/bin/pip install --quiet 'moto[s3]==5.0.28' flask flask-cors
fi
cargo test --workspace --all-targets
