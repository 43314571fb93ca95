#!/usr/bin/env bash
# Make sure Debian's PostgreSQL server binaries are present and print their bin dir
# (e.g. /usr/lib/postgresql/15/bin) as the only line on stdout.
#
# Idempotent and fast when PostgreSQL is already installed. Otherwise installs
# Debian's `postgresql` package: as root directly, else through passwordless sudo.
# Everything apt prints goes to stderr so callers can read the bin dir from stdout.
#
# The tests start their own throwaway cluster from these binaries; the `main`
# cluster that Debian's package may create (and may start) is never used.
set -euo pipefail

# Only tests of this script override this, to exercise the "not installed" path.
PG_LIB_ROOT="${TIMEFUSE_PG_LIB_ROOT:-/usr/lib/postgresql}"

# Prints the newest version's bin dir that holds a complete server.
find_bindir() {
    local dir
    while IFS= read -r dir; do
        if [[ -x "$dir/postgres" && -x "$dir/initdb" && -x "$dir/pg_ctl" ]]; then
            printf '%s\n' "$dir"
            return 0
        fi
    done < <(compgen -G "$PG_LIB_ROOT/*/bin" | sort -V -r)
    return 1
}

# Non-interactive tests would only hang on (or fail at) a password prompt.
can_sudo() {
    command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null
}

explain_missing_privileges() {
    cat >&2 <<'EOF'
ensure-postgres: the PostgreSQL server is not installed, and installing it needs
root (or passwordless sudo). Install it once, then re-run:

    sudo apt-get update && sudo apt-get install -y postgresql

Or point the tests at a server you already have:

    export TIMEFUSE_TEST_DATABASE_URL=postgresql://user:pass@127.0.0.1:5432/postgres
EOF
}

install_postgres() {
    local -a as_root=()
    if [[ $EUID -ne 0 ]]; then
        if ! can_sudo; then
            explain_missing_privileges
            exit 1
        fi
        as_root=(sudo -n)
    fi
    # sudo resets the environment, so the apt variable goes through `env`.
    # The lock timeout lets parallel test workers queue instead of failing.
    local -a apt=(
        "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive
        apt-get -y -q -o DPkg::Lock::Timeout=300
    )
    echo "ensure-postgres: installing Debian's postgresql package..." >&2
    "${apt[@]}" update >&2
    "${apt[@]}" install --no-install-recommends postgresql >&2
}

main() {
    if find_bindir; then
        return 0
    fi
    install_postgres
    if ! find_bindir; then
        echo "ensure-postgres: installed postgresql but found no server under $PG_LIB_ROOT/*/bin" >&2
        return 1
    fi
}

main "$@"
