#!/usr/bin/env bash
# Runs every test of the workspace. .ci/run calls exactly this after the lint checks.
# It installs what the tests need and is not on a fresh machine: the Python
# `cryptography` package for the independent export verifier (tests/python).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! python3 -c 'import cryptography' 2>/dev/null; then
  python3 -m pip install --quiet 'cryptography>=41'
fi
cargo test --workspace --all-targets
