#!/usr/bin/env bash
# Set up everything the tests and the demo need, idempotently and quietly.
# - As root: the Debian packages (apt-get update first, only when something is missing).
# - Always: .venv with hedgerow installed editable, plus its test tools, every package at the
#   version and sha256 hash pinned in requirements/lock.txt (`make lock` refreshes it).
set -euo pipefail
cd "$(dirname "$0")/.."

DEBS=(mosquitto mosquitto-clients dnsutils dnsperf dnsmasq-base unbound postgresql iproute2 openssl libpcap0.8 chromium nftables systemd-container)
# npm fetches axe-core (below); Node's own installers bring it, so Debian's only when it is absent.
command -v npm >/dev/null 2>&1 || DEBS+=(npm)

missing=()
for pkg in "${DEBS[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ]; then
        echo "bootstrap: installing Debian packages: ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        # policy-rc.d keeps package scripts from starting system daemons (unbound, mosquitto)
        # that would hold ports the tests want; tests start their own instances.
        made_policy=0
        if [ ! -e /usr/sbin/policy-rc.d ]; then
            printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d
            made_policy=1
        fi
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
        if [ "$made_policy" -eq 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
    else
        echo "bootstrap: missing Debian packages (run as root, or install them): ${missing[*]}" >&2
    fi
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
lock=requirements/lock.txt
stamp=.venv/.hedgerow-installed
want=$(cat pyproject.toml "$lock" | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "bootstrap: installing hedgerow and its test tools into .venv from $lock"
    rm -f "$stamp"  # a failed or interrupted install is redone next time
    if ! .venv/bin/python -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
        echo "bootstrap: warning: $lock is resolved for Python 3.11, .venv has $(.venv/bin/python -V)" >&2
    fi
    log=.venv/pip-install.log
    # pip and setuptools first, at the lock's pins (each entry: the name==version line and its
    # --hash continuation lines), so the new pip installs the rest and setuptools builds hedgerow.
    tools=.venv/venv-tools.txt
    awk '/^(pip|setuptools)==/ {p = 1} p {print} p && !/\\$/ {p = 0}' "$lock" >"$tools"
    if [ "$(grep -c '^[a-z].*==' "$tools")" -ne 2 ]; then
        echo "bootstrap: $lock has no pip and setuptools pins (run make lock)" >&2
        exit 1
    fi
    pip=(.venv/bin/python -m pip install -q --require-hashes)
    # hedgerow itself last: editable, no deps, built by the venv's pinned setuptools (no build
    # isolation), so nothing unpinned is fetched. pip check then catches a lock that no longer
    # satisfies pyproject.toml.
    if ! { "${pip[@]}" --no-deps -r "$tools" &&
           "${pip[@]}" -r "$lock" &&
           .venv/bin/python -m pip install -q --no-deps --no-build-isolation -e . &&
           .venv/bin/python -m pip check; } >"$log" 2>&1; then
        cat "$log" >&2
        echo "bootstrap: pip install failed (log above, kept in $log)" >&2
        if grep -q '^hedgerow ' "$log"; then
            echo "bootstrap: pyproject.toml and $lock disagree: run make lock" >&2
        fi
        exit 1
    fi
    echo "$want" > "$stamp"
fi

# axe-core for the accessibility tests (tests/test_web_axe.py): the npm release pinned in
# requirements/axe-core.txt, refused unless its sha512 matches the pin, unpacked to
# .venv/axe-core/axe.min.js. Never committed; redone only when the pin changes.
axe_pin=requirements/axe-core.txt
axe_version=$(sed -n 's/^version=//p' "$axe_pin")
axe_integrity=$(sed -n 's/^integrity=//p' "$axe_pin")
axe_dir=.venv/axe-core
if [ "$(cat "$axe_dir/.pin" 2>/dev/null)" != "$axe_version $axe_integrity" ] || [ ! -s "$axe_dir/axe.min.js" ]; then
    if ! command -v npm >/dev/null 2>&1; then
        echo "bootstrap: npm is missing (run as root, or apt-get install npm): axe-core not fetched" >&2
        exit 1
    fi
    echo "bootstrap: fetching axe-core $axe_version from the npm registry"
    axe_tmp=$(mktemp -d)
    trap 'rm -rf "$axe_tmp"' EXIT
    if ! (cd "$axe_tmp" && npm pack --silent --ignore-scripts "axe-core@$axe_version" >/dev/null); then
        echo "bootstrap: npm pack axe-core@$axe_version failed" >&2
        exit 1
    fi
    axe_tgz="$axe_tmp/axe-core-$axe_version.tgz"
    axe_got="sha512-$(.venv/bin/python -c 'import base64, hashlib, sys; print(base64.b64encode(hashlib.sha512(open(sys.argv[1], "rb").read()).digest()).decode())' "$axe_tgz")"
    if [ "$axe_got" != "$axe_integrity" ]; then
        echo "bootstrap: axe-core $axe_version is $axe_got, but $axe_pin pins $axe_integrity: refused" >&2
        exit 1
    fi
    rm -rf "$axe_dir" && mkdir -p "$axe_dir"
    tar -xzf "$axe_tgz" -C "$axe_dir" --strip-components=1 package/axe.min.js package/LICENSE package/package.json
    echo "$axe_version $axe_integrity" > "$axe_dir/.pin"
fi
