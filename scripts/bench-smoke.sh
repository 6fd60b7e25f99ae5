#!/usr/bin/env bash
# CI smoke run of the benchmarks: the same code paths with tiny counts, so
# the bench binaries never rot. Fails on a wrong result or an allocation
# where there must be none; never on timing. A few seconds once built.
set -euo pipefail
cd "$(dirname "$0")/.."

# The suite: tokio, smol, ManualClock; the core has `alloc` here.
cargo bench --quiet -p transaction-manager-bench --bench suite -- --smoke
# The core alone without `alloc`: zero allocations on every path.
cargo bench --quiet -p transaction-manager-bench --no-default-features --bench no_alloc -- --smoke
# Against cano's saga: commit and failure, cano's compensations latest first.
cargo bench --quiet -p transaction-manager-bench --bench cano -- --smoke
# The SQLite journal: durable appends with 1 and 64 appenders; every entry
# read back.
cargo bench --quiet -p transaction-manager-sqlite --bench append -- --smoke
# Retention: the file keeps what each policy keeps, nothing unfinished is lost.
cargo bench --quiet -p transaction-manager-sqlite --bench retention -- --smoke
# The Postgres journal (a cluster of its own, as its tests): appends,
# transactions with 1/16/64 concurrent and 4 processes, a survivor's
# recovery; every result checked.
bash scripts/postgres.sh install >/dev/null
cargo bench --quiet -p transaction-manager-postgres --bench throughput -- --smoke
# Postgres retention: each policy keeps what it must, the pruning task runs.
cargo bench --quiet -p transaction-manager-postgres --bench retention -- --smoke
