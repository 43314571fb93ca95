#!/usr/bin/env bash
# Make sure Debian's Chromium is present and print its path (/usr/bin/chromium) as the only
# line on stdout. The console's browser tests drive it headless through Playwright, which is
# pointed at this binary: Playwright's own browser download needs a network the tests lack.
#
# Idempotent and fast when Chromium is already installed. Otherwise installs Debian's
# `chromium` package: as root directly, else through passwordless sudo. Everything apt prints
# goes to stderr so callers can read the path from stdout.
set -euo pipefail

# Only tests of this script override this, to exercise the "not installed" path.
CHROMIUM="${TIMEFUSE_CHROMIUM:-/usr/bin/chromium}"

can_sudo() {
    command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null
}

explain_missing_privileges() {
    cat >&2 <<'MSG'
ensure-chromium: Chromium is not installed, and installing it needs root (or passwordless
sudo). Install it once, then re-run:

    sudo apt-get update && sudo apt-get install -y chromium

Or name a Chromium you already have: export TIMEFUSE_CHROMIUM=/path/to/chromium
MSG
}

install_chromium() {
    local -a as_root=()
    if [[ $EUID -ne 0 ]]; then
        if ! can_sudo; then
            explain_missing_privileges
            exit 1
        fi
        as_root=(sudo -n)
    fi
    # sudo resets the environment, so the apt variable goes through `env`.
    # The lock timeout lets a parallel PostgreSQL install queue instead of failing.
    local -a apt=(
        "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive
        apt-get -y -q -o DPkg::Lock::Timeout=300
    )
    echo "ensure-chromium: installing Debian's chromium package..." >&2
    "${apt[@]}" update >&2
    # Fonts come with it (fonts-liberation is a dependency): pages render readable text.
    "${apt[@]}" install --no-install-recommends chromium fonts-liberation >&2
}

main() {
    if [[ -x "$CHROMIUM" ]]; then
        printf '%s\n' "$CHROMIUM"
        return 0
    fi
    install_chromium
    if [[ ! -x "$CHROMIUM" ]]; then
        echo "ensure-chromium: installed chromium but $CHROMIUM is still missing" >&2
        return 1
    fi
    printf '%s\n' "$CHROMIUM"
}

main "$@"
