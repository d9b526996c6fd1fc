#!/usr/bin/env bash
# Runs every test of the workspace. .ci/run calls exactly this after the lint checks.
# Installs nothing yet: the core ledger needs only the Rust toolchain. Later
# issues add the real PostgreSQL and S3 services here, started by the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --all-targets
