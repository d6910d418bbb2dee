#!/usr/bin/env bash
# Install the coverwatch probe agent on a Raspberry Pi (Raspberry Pi OS Bookworm).
#
#   sudo ./deploy/pi/install.sh --kit /media/usb/cb-001
#
# Run from a checkout (or unpacked release) of coverwatch. --kit is the directory that
# `coverwatch probes add` wrote for this probe (probe.toml, mqtt-password, ca.crt).
# Safe to run again (an upgrade): every step checks before it changes anything.
# Walkthrough: docs/install-probe.md.
set -euo pipefail

PREFIX=/opt/coverwatch
VENV="$PREFIX/venv"
CONFIG_DIR=/etc/coverwatch
STATE_DIR=/var/lib/coverwatch
SERVICE=coverwatch-probe
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SOURCE="$(cd "$SCRIPT_DIR/../.." && pwd)"
KIT=""
WITH_APT=1
START=1
LAZYTIME=1

usage() {
    cat <<USAGE
usage: sudo $0 [--kit DIR] [--source DIR] [--no-apt] [--no-start]

  --kit DIR     the probe's kit from \`coverwatch probes add\` (probe.toml, mqtt-password,
                ca.crt); without it, write $CONFIG_DIR/probe.toml yourself
  --source DIR  the coverwatch source to install (default: $SOURCE)
  --no-apt      do not install Debian packages (offline re-install)
  --no-start    install and enable, but do not start the agent now
  --no-lazytime leave the mount options of the state directory's file system alone
USAGE
}

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

while [ $# -gt 0 ]; do
    case "$1" in
        --kit) KIT="${2:?--kit needs a directory}"; shift 2 ;;
        --source) SOURCE="${2:?--source needs a directory}"; shift 2 ;;
        --no-apt) WITH_APT=0; shift ;;
        --no-start) START=0; shift ;;
        --no-lazytime) LAZYTIME=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown option: $1" ;;
    esac
done

[ "$(id -u)" -eq 0 ] || die "run as root: sudo $0 --kit DIR"
[ -f "$SOURCE/pyproject.toml" ] || die "$SOURCE is not a coverwatch source tree (no pyproject.toml)"
if [ -n "$KIT" ]; then
    for file in probe.toml mqtt-password ca.crt; do
        [ -f "$KIT/$file" ] || die "the kit $KIT has no $file: copy the whole directory from the server"
    done
fi
if [ -r /etc/os-release ]; then
    # shellcheck disable=SC1091
    . /etc/os-release
    [ "${VERSION_CODENAME:-}" = bookworm ] || warn "tested on Raspberry Pi OS Bookworm, this is ${PRETTY_NAME:-unknown}"
fi

if [ "$WITH_APT" -eq 1 ]; then
    say "Debian packages: Python venv, ModemManager"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # modemmanager + libqmi/libmbim: mmcli reads signal from USB LTE modems (Quectel EC25,
    # SIMCom SIM7600); usb-modeswitch turns "CD-ROM mode" dongles into modems.
    apt-get install -y -qq --no-install-recommends \
        python3 python3-venv ca-certificates modemmanager usb-modeswitch
fi

say "user coverwatch (in group dialout for the modem's AT port)"
if ! id coverwatch >/dev/null 2>&1; then
    useradd --system --user-group --home-dir "$STATE_DIR" --no-create-home \
        --shell /usr/sbin/nologin coverwatch
fi
usermod -a -G dialout coverwatch

say "Python environment in $VENV"
install -d -m 0755 "$PREFIX"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --upgrade pip
"$VENV/bin/pip" install --quiet "${SOURCE}[agent]"

say "unprivileged ping (ICMP latency without root)"
cat > /etc/sysctl.d/60-coverwatch-ping.conf <<'SYSCTL'
# coverwatch: let unprivileged processes open ICMP echo sockets (the latency sensor).
net.ipv4.ping_group_range = 0 2147483647
SYSCTL
sysctl -q -p /etc/sysctl.d/60-coverwatch-ping.conf

say "journald in RAM only (spares the SD card; logs are lost on reboot)"
install -d -m 0755 /etc/systemd/journald.conf.d
cat > /etc/systemd/journald.conf.d/60-coverwatch-volatile.conf <<'JOURNALD'
# coverwatch: keep the journal in RAM so that logging never wears out the SD card.
[Journal]
Storage=volatile
RuntimeMaxUse=32M
JOURNALD
systemctl restart systemd-journald

if systemctl list-unit-files ModemManager.service >/dev/null 2>&1; then
    say "ModemManager: enabled"
    systemctl enable --now ModemManager.service >/dev/null 2>&1 || warn "ModemManager did not start"
    # Extended signal values (RSRP, RSRQ, SINR) need polling, which is off after every
    # ModemManager start; the agent's cellular sensor turns it on by itself
    # ([sensors.cellular] signal_refresh_s). Turn it on now, for the doctor's first look.
    mmcli -m any --signal-setup=60 >/dev/null 2>&1 || warn "no modem seen yet (mmcli -L); plug it in and re-run doctor"
fi

say "configuration in $CONFIG_DIR"
install -d -m 0750 -o root -g coverwatch "$CONFIG_DIR"
if [ -n "$KIT" ]; then
    install -m 0640 -o root -g coverwatch "$KIT/probe.toml" "$CONFIG_DIR/probe.toml"
    install -m 0640 -o root -g coverwatch "$KIT/mqtt-password" "$CONFIG_DIR/mqtt-password"
    install -m 0644 -o root -g root "$KIT/ca.crt" "$CONFIG_DIR/ca.crt"
elif [ ! -f "$CONFIG_DIR/probe.toml" ]; then
    warn "no --kit and no $CONFIG_DIR/probe.toml: write it (coverwatch-probe config sample) before starting"
    START=0
fi
install -d -m 0750 -o coverwatch -g coverwatch "$STATE_DIR"

# Every round the agent writes one sector durably (the round log, the power heartbeat).
# Without lazytime each of those writes also updates the file's modification time, which
# rewrites a 4 KB inode block on the SD card every round: 7x the data itself
# (docs/benchmarks.md, "A cheap probe"). lazytime keeps time-only updates in RAM.
if [ "$LAZYTIME" -eq 1 ]; then
    mount_point="$(findmnt -n -o TARGET -T "$STATE_DIR")"
    mount_options="$(findmnt -n -o OPTIONS -T "$STATE_DIR")"
    fs_type="$(findmnt -n -o FSTYPE -T "$STATE_DIR")"
    case ",$mount_options," in
        *,lazytime,*) say "SD card: $mount_point is already mounted with lazytime" ;;
        *)
            case "$fs_type" in
                ext4|ext3|f2fs|btrfs|xfs)
                    say "SD card: lazytime on $mount_point ($fs_type), now and in /etc/fstab"
                    mount -o remount,lazytime "$mount_point" \
                        || warn "could not remount $mount_point with lazytime; it applies after a reboot"
                    status=0
                    awk -v mountpoint="$mount_point" -v option=lazytime \
                        -f "$SCRIPT_DIR/mount-option.awk" /etc/fstab > /etc/fstab.coverwatch-new || status=$?
                    if [ "$status" -eq 0 ]; then
                        if ! cmp -s /etc/fstab /etc/fstab.coverwatch-new; then
                            # A rename, so that a power cut leaves the old or the new fstab.
                            cp -p /etc/fstab /etc/fstab.coverwatch-backup
                            chmod --reference=/etc/fstab /etc/fstab.coverwatch-new
                            chown --reference=/etc/fstab /etc/fstab.coverwatch-new
                            sync /etc/fstab.coverwatch-new
                            mv -f /etc/fstab.coverwatch-new /etc/fstab
                            sync /etc
                        fi
                        rm -f /etc/fstab.coverwatch-new
                    else
                        rm -f /etc/fstab.coverwatch-new
                        warn "/etc/fstab has no line for $mount_point: add lazytime to its options yourself"
                    fi
                    ;;
                *) warn "$STATE_DIR is on $fs_type ($mount_point): lazytime not set, SD-card writes are higher" ;;
            esac
            ;;
    esac
fi

say "systemd unit $SERVICE"
install -m 0644 "$SCRIPT_DIR/coverwatch-probe.service" "/etc/systemd/system/$SERVICE.service"
systemctl daemon-reload
systemctl enable "$SERVICE.service" >/dev/null
if [ "$START" -eq 1 ]; then
    systemctl restart "$SERVICE.service"
fi

say "checking the installation (coverwatch-probe doctor)"
if [ -f "$CONFIG_DIR/probe.toml" ]; then
    if runuser -u coverwatch -- "$VENV/bin/coverwatch-probe" doctor --config "$CONFIG_DIR/probe.toml"; then
        say "installed: the probe is running (journalctl -u $SERVICE -f)"
    else
        warn "doctor found problems: fix the FAIL lines above, then run it again:"
        warn "  sudo -u coverwatch $VENV/bin/coverwatch-probe doctor"
        exit 1
    fi
fi
