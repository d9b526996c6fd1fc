#!/usr/bin/env bash
# The main job on the embedded default: a ledger in ./tidemark-data, an
# agent key, a few backup facts appended, the whole ledger verified, and the
# signed checkpoint an auditor would pin. Safe to run again: it reuses the
# ledger and keys it finds. While `tidemark serve` holds the ledger (the
# README's main job), everything goes through the server's URL instead.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p tidemark-cli
tm() { ./target/release/tidemark "$@"; }
export TIDEMARK_LEDGER="${TIDEMARK_LEDGER:-./tidemark-data}"

DIR="$TIDEMARK_LEDGER"
if [ ! -d "$DIR/db" ]; then
  tm init --origin "tidemark.local/quickstart"
fi
if [ -f "$DIR/server.json" ]; then
  # A running server holds the directory: talk to it (writes are signed, reads take a token).
  url=$(sed -n 's/.*"url":"\([^"]*\)".*/\1/p' "$DIR/server.json")
  echo "--- tidemark serve holds $DIR: going through $url"
  export TIDEMARK_LEDGER="$url"
  TIDEMARK_TOKEN=$(tm token issue --key "$DIR/keys/admin.key")
  export TIDEMARK_TOKEN
fi
if [ ! -f "$DIR/keys/agent.key" ]; then
  tm key new --name pg-agent --out "$DIR/keys/agent.key"
  tm key enroll --pub "$DIR/keys/agent.key.pub" --roles agent --signer "$DIR/keys/admin.key"
fi

now() { date -u +%Y-%m-%dT%H:%M:%S.000000Z; }
seg=$(printf '00000001000000000000%04X' $((RANDOM % 65536)))
blake=$(printf '%s' "$seg" | sha256sum | cut -c1-64)
sha=$(printf 'x%s' "$seg" | sha256sum | cut -c1-64)
cat <<NDJSON | tm append --signer "$DIR/keys/agent.key"
{"kind":"pg.wal_archived","body":{"component":"pg:main","timeline":1,"segment":"$seg","size_bytes":16777216,"blake3":"$blake","sha256":"$sha","location":"/archive/$seg"}}
{"kind":"pg.position","body":{"component":"pg:main","lsn":"0/3000028","timeline":1,"observed_at":"$(now)"}}
NDJSON

tm log --limit 20
tm verify
echo "--- latest signed checkpoint (pin it to detect any later rewrite):"
tm checkpoint
echo "--- ledger verifier key:"
tm key show --ledger-key
