#!/usr/bin/env bash
# Hedgerow DNS filter on an existing Raspberry Pi OS (bookworm) or other Debian-like install:
# what cloud-init/user-data does on a fresh SD card, for a Pi that is already running.
#
#   sudo firmware-config/pi/setup.sh [--dry-run] [--source SPEC]
#                                    [--address CIDR --gateway ADDR [--dns ADDR] [--connection NAME]]
#
# Idempotent: each step first looks at what is there and says "ok" when nothing is left to do,
# so running it again (after an upgrade, or to check) is safe. Never overwrites a config or
# ruleset the network manager has edited. docs/install-network-manager.md walks through it.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CHECKOUT=$(cd "$HERE/../.." && pwd)
OS_RELEASE=${HEDGEROW_OS_RELEASE:-/etc/os-release}  # tests point this at a fake file

PREFIX=/opt/hedgerow
VENV=$PREFIX/venv
ETC=/etc/hedgerow
CONFIG=$ETC/hedgerow-dns.toml
UNIT=hedgerow-dns.service
AUTO_UPGRADES=/etc/apt/apt.conf.d/20auto-upgrades
DEBS=(python3-venv git nftables unattended-upgrades)

DRY_RUN=0
SOURCE=""
ADDRESS=""
GATEWAY=""
DNS=""
CONNECTION="Wired connection 1"

usage() {
    cat <<'EOF'
usage: setup.sh [--dry-run] [--source SPEC] [--address CIDR --gateway ADDR [--dns ADDR]
                [--connection NAME]]

  --dry-run          print what would be done, change nothing (no root needed)
  --source SPEC      what pip installs: a wheel file, a git URL
                     (git+https://HOST/hedgerow.git@v0.1.0) or a checkout directory
                     (default: the checkout this script is in)
  --address CIDR     give the Pi a static IPv4 address with NetworkManager, e.g. 10.10.0.53/24
  --gateway ADDR     the router, needed with --address
  --dns ADDR         the resolver the Pi itself uses (default: the gateway)
  --connection NAME  the NetworkManager connection to change (default: "Wired connection 1")
EOF
}

die() {
    echo "setup.sh: $*" >&2
    exit 1
}

# Every change goes through run: in a dry run it is printed, shell-quoted, instead.
run() {
    if [ "$DRY_RUN" -eq 1 ]; then
        printf 'would run:'
        printf ' %q' "$@"
        printf '\n'
    else
        "$@"
    fi
}

step() {
    printf '[%s] %s\n' "$1" "$2"
}

# write_file PATH MODE CONTENT: write only when the content differs, so a rerun changes nothing.
write_file() {
    local path=$1 mode=$2 content=$3
    if [ -f "$path" ] && [ "$(cat "$path")" = "$content" ]; then
        echo "ok: $path is up to date"
        return
    fi
    if [ "$DRY_RUN" -eq 1 ]; then
        echo "would write $path (mode $mode):"
        printf '%s\n' "$content" | sed 's/^/    /'
        return
    fi
    local tmp
    tmp=$(mktemp "$path.XXXXXX")
    printf '%s\n' "$content" > "$tmp"
    chmod "$mode" "$tmp"
    mv "$tmp" "$path"
}

parse_args() {
    while [ $# -gt 0 ]; do
        case $1 in
            --dry-run) DRY_RUN=1 ;;
            --source) SOURCE=${2:?--source needs a value}; shift ;;
            --address) ADDRESS=${2:?--address needs a value}; shift ;;
            --gateway) GATEWAY=${2:?--gateway needs a value}; shift ;;
            --dns) DNS=${2:?--dns needs a value}; shift ;;
            --connection) CONNECTION=${2:?--connection needs a value}; shift ;;
            -h|--help) usage; exit 0 ;;
            *) usage >&2; echo "setup.sh: unknown argument: $1" >&2; exit 2 ;;
        esac
        shift
    done
    if [ -n "$ADDRESS" ] && [ -z "$GATEWAY" ]; then
        die "--address needs --gateway"
    fi
    if [ -z "$SOURCE" ]; then
        [ -f "$CHECKOUT/pyproject.toml" ] || die "not in a checkout: give --source (a wheel or git URL)"
        SOURCE=$CHECKOUT
    fi
}

# Debian-like means apt and dpkg, which everything below uses: Debian, Raspberry Pi OS,
# Ubuntu and their kin say so in ID or ID_LIKE.
check_debian_like() {
    [ -r "$OS_RELEASE" ] || die "refusing: no $OS_RELEASE, cannot tell this is Debian-like"
    local id id_like
    # os-release is shell assignments by specification; read in a subshell so it sets nothing here.
    # shellcheck source=/dev/null
    id=$(. "$OS_RELEASE" && echo "${ID:-}")
    # shellcheck source=/dev/null
    id_like=$(. "$OS_RELEASE" && echo "${ID_LIKE:-}")
    case " $id $id_like " in
        *" debian "*|*" raspbian "*|*" ubuntu "*) ;;
        *) die "refusing: this is '${id:-unknown}', not Debian-like (Raspberry Pi OS, Debian, Ubuntu)" ;;
    esac
    if ! command -v apt-get >/dev/null || ! command -v dpkg-query >/dev/null; then
        die "refusing: apt-get and dpkg-query are needed"
    fi
    if [ "$DRY_RUN" -eq 0 ] && [ "$(id -u)" -ne 0 ]; then
        die "run as root (sudo), or with --dry-run to see what it would do"
    fi
}

install_packages() {
    step packages "${DEBS[*]}"
    local missing=() pkg
    for pkg in "${DEBS[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
            || missing+=("$pkg")
    done
    if [ ${#missing[@]} -eq 0 ]; then
        echo "ok: all installed"
        return
    fi
    run apt-get update
    run env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
}

make_user() {
    step user "the hedgerow system user (no login, no home)"
    if id hedgerow >/dev/null 2>&1; then
        echo "ok: user hedgerow exists"
        return
    fi
    run useradd --system --user-group --home-dir /var/lib/hedgerow --no-create-home \
        --shell /usr/sbin/nologin hedgerow
}

make_dirs() {
    step dirs "$ETC, $ETC/lists, $ETC/nftables, $PREFIX, /var/lib/hedgerow, /var/cache/hedgerow/lists"
    # install -d is idempotent and also repairs an owner or mode someone changed.
    run install -d -m 0755 -o root -g root "$ETC" "$ETC/lists" "$ETC/nftables" "$PREFIX"
    run install -d -m 0750 -o hedgerow -g hedgerow /var/lib/hedgerow /var/cache/hedgerow \
        /var/cache/hedgerow/lists
}

install_package() {
    step venv "hedgerow from $SOURCE into $VENV"
    if [ -x "$VENV/bin/python" ]; then
        echo "ok: $VENV exists"
    else
        run python3 -m venv "$VENV"
    fi
    # pip does nothing when this version is already installed; from a checkout it rebuilds.
    run "$VENV/bin/pip" install --quiet --upgrade "$SOURCE"
    run ln -sfn "$VENV/bin/hedgerow-dns" /usr/local/bin/hedgerow-dns
}

write_config() {
    step config "$CONFIG"
    if [ -e "$CONFIG" ]; then
        echo "ok: $CONFIG exists (left as it is)"
    else
        run "$VENV/bin/hedgerow-dns" init --out "$CONFIG"
        run chown root:hedgerow "$CONFIG"
        run chmod 0640 "$CONFIG"
    fi
    run "$VENV/bin/hedgerow-dns" check --config "$CONFIG"
}

copy_nftables() {
    step nftables "$ETC/nftables (copied, not loaded: edit its variables first)"
    # The generated resolver set follows the release; the ruleset is the network manager's
    # once copied, so it is never overwritten.
    run install -m 0644 "$HERE/nftables/encrypted-dns-resolvers.nft" "$ETC/nftables/"
    if [ -e "$ETC/nftables/hedgerow.nft" ]; then
        echo "ok: $ETC/nftables/hedgerow.nft exists (left as it is)"
    else
        run install -m 0644 "$HERE/nftables/hedgerow.nft" "$ETC/nftables/"
    fi
}

security_upgrades() {
    step upgrades "unattended security upgrades ($AUTO_UPGRADES)"
    # Debian's default 50unattended-upgrades takes security updates only.
    write_file "$AUTO_UPGRADES" 0644 'APT::Periodic::Update-Package-Lists "1";
APT::Periodic::Unattended-Upgrade "1";'
    run systemctl enable --now unattended-upgrades.service
}

static_address() {
    if [ -z "$ADDRESS" ]; then
        step address "skipped (no --address): the Pi keeps its current address"
        return
    fi
    step address "$ADDRESS via $GATEWAY on NetworkManager connection '$CONNECTION'"
    # Takes effect at the next reboot or `nmcli connection up`, so an SSH session survives.
    run nmcli connection modify "$CONNECTION" ipv4.method manual ipv4.addresses "$ADDRESS" \
        ipv4.gateway "$GATEWAY" ipv4.dns "${DNS:-$GATEWAY}"
}

enable_service() {
    step service "$UNIT"
    local shipped="$CHECKOUT/systemd/$UNIT"
    if [ -f "$shipped" ]; then
        if cmp -s "$shipped" "/etc/systemd/system/$UNIT"; then
            echo "ok: /etc/systemd/system/$UNIT is up to date"
        else
            run install -m 0644 "$shipped" "/etc/systemd/system/$UNIT"
        fi
    elif [ ! -e "/etc/systemd/system/$UNIT" ] && [ ! -e "/lib/systemd/system/$UNIT" ]; then
        if [ "$DRY_RUN" -eq 1 ]; then
            echo "note: no $shipped here; a real run stops at this step"
        else
            die "no $UNIT: it ships in systemd/ of a release checkout (use one as --source)"
        fi
    fi
    run systemctl daemon-reload
    run systemctl enable --now "$UNIT"
}

main() {
    parse_args "$@"
    check_debian_like
    [ "$DRY_RUN" -eq 1 ] && echo "dry run: nothing will be changed"
    install_packages
    make_user
    make_dirs
    install_package
    write_config
    copy_nftables
    security_upgrades
    static_address
    enable_service
    echo "done. Next: edit $ETC/nftables/hedgerow.nft and load it (docs/install-network-manager.md)"
}

main "$@"
