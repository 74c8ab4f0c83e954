#!/usr/bin/env bash
# Set up everything the tests and the demo need, idempotently and quietly.
# - As root: the Debian packages (apt-get update first, only when something is missing).
# - Always: .venv with hedgerow installed editable, plus its test tools.
set -euo pipefail
cd "$(dirname "$0")/.."

DEBS=(mosquitto mosquitto-clients dnsutils dnsperf dnsmasq-base unbound postgresql iproute2 openssl)

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
stamp=.venv/.hedgerow-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "bootstrap: installing hedgerow and its test tools into .venv"
    log=.venv/pip-install.log
    if ! { .venv/bin/python -m pip install -q --upgrade pip &&
           .venv/bin/python -m pip install -q -e '.[test]'; } >"$log" 2>&1; then
        cat "$log" >&2
        echo "bootstrap: pip install failed (log above, kept in $log)" >&2
        exit 1
    fi
    echo "$want" > "$stamp"
fi
