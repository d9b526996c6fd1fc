#!/bin/sh
# An idempotent archive_command for PostgreSQL that records every archived
# file in tidemark. PostgreSQL retries a failed archive_command forever, so
# every step may run again for the same file:
#
#   archive_command = '/path/to/pg-archive.sh %p %f'
#
# Environment (set where PostgreSQL is started, e.g. a systemd drop-in):
#   TIDEMARK_ARCHIVE_DIR  the archive directory (local or mounted)
#   TIDEMARK_CLUSTER      cluster name: the component is pg:$TIDEMARK_CLUSTER
#   TIDEMARK_LEDGER       the ledger server's URL, e.g. http://127.0.0.1:7447
#   TIDEMARK_SPOOL        a directory the postgres user can write: events wait
#                         here while the server is down, so archiving never stalls
#   TIDEMARK_SIGNER       the agent key file, readable by the postgres user
#   TIDEMARK_BIN          the tidemark binary (default: tidemark on PATH)
set -eu
src="$1"
name="$2"
dest="$TIDEMARK_ARCHIVE_DIR/$name"
if [ -f "$dest" ]; then
    # Already archived by an earlier attempt: fine if identical, an error if not
    # (never overwrite an archived file with other content).
    if ! cmp -s "$src" "$dest"; then
        echo "pg-archive: $dest exists with different content; refusing to overwrite" >&2
        exit 1
    fi
else
    cp "$src" "$dest.tmp"
    sync "$dest.tmp" 2>/dev/null || true
    mv "$dest.tmp" "$dest"
fi
exec "${TIDEMARK_BIN:-tidemark}" pg archive-hook --cluster "$TIDEMARK_CLUSTER" --location "$dest" "$src"
