#!/usr/bin/env bash
# Postgres for the journal-postgres tests. The tests start and stop their
# own clusters (initdb in a temp dir, pg_ctl on a unix socket in it, no TCP
# port); this script only makes sure they can:
#
#   scripts/postgres.sh install   the server binaries (Debian's `postgresql`
#                                 package if no /usr/lib/postgresql/*/bin),
#                                 and, as root, the `postgres` system user the
#                                 servers run as (initdb refuses root)
#   scripts/postgres.sh test      install, then the crate's tests, the
#                                 multi-process kill test included, then
#                                 all of them again as the least-privilege
#                                 role (TM_PG_LEAST_PRIVILEGE=1: the
#                                 journals connect as tm_app, whose rights
#                                 are the SQL of the guide's "several processes")
#
# Never assumes a server is running, and starts none that outlives a test.
set -euo pipefail
cd "$(dirname "$0")/.."

have_binaries() {
    compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || command -v initdb >/dev/null
}

install() {
    if ! have_binaries; then
        echo "postgres: installing the server (apt-get install postgresql)"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq postgresql >/dev/null
        # The package starts a cluster of its own: the tests do not use it.
        if command -v pg_lsclusters >/dev/null; then
            pg_lsclusters --no-header 2>/dev/null | while read -r version name _; do
                pg_ctlcluster "$version" "$name" stop 2>/dev/null || true
            done
        fi
    fi
    if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
        echo "postgres: creating the postgres system user"
        useradd --system --no-create-home --shell /usr/sbin/nologin postgres
    fi
    have_binaries || { echo "postgres: no initdb after install" >&2; exit 1; }
    ls -d /usr/lib/postgresql/*/bin 2>/dev/null || command -v initdb
}

case "${1:-test}" in
    install) install ;;
    test)
        install
        cargo test -p transaction-manager-postgres
        TM_PG_LEAST_PRIVILEGE=1 cargo test -p transaction-manager-postgres
        ;;
    *) echo "usage: $0 install|test" >&2; exit 2 ;;
esac
