#!/usr/bin/env bash
# Two real IPP printers for the local stack (see docs/local-stack.md): Debian's ippeveprinter.
#
#   deploy/local/printers.sh up      start the card printer and the PIN-mailer printer (idempotent)
#   deploy/local/printers.sh down    stop them, and the private D-Bus + Avahi they need
#   deploy/local/printers.sh status  one line per printer; exit 0 when both run, 3 otherwise
#   deploy/local/printers.sh env     export lines for clients (printer URIs and spool folders)
#
# Data under ${BUREAU_RUN_DIR:-<repo>/.run}/printers, logs in .run/logs/printer-<name>.log.
#
# ippeveprinter refuses to start without DNS-SD ("Unable to initialize DNS-SD"): it needs an
# avahi-daemon on the system D-Bus. Instead of the machine's bus, a private dbus-daemon (socket
# under .run/printers) carries a private avahi-daemon, and DBUS_SYSTEM_BUS_ADDRESS points both
# avahi and the printers at it. avahi-daemon's pid file and socket (/run/avahi-daemon/) are
# compiled in: avahi runs in its own mount and network namespaces (unshare), with a private
# tmpfs there and no network, so it never meets another avahi and listens on nothing; where
# unshare is not allowed, an avahi already holding that pid file stops `up` with a clear error.
#
# `-n localhost`: ippeveprinter cannot run with `-n 127.0.0.1` (it then fails to bind IPv6);
# with localhost it listens on the loopback addresses 127.0.0.1 and ::1 only.
# `-c <command>`: without a print command ippeveprinter "prints" for 5+ seconds per job; the
# command here copies the document to the job's output (<job>-<name>.prn, what print QA
# inspects) at once. Faults an operator or a test can set in the printer's folder: `jammed`
# (the printer aborts every job while it exists), `misprint` (an image printed once instead of
# the next document).
set -euo pipefail

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd -- "$SCRIPT_DIR/../.." && pwd)
RUN_DIR=${BUREAU_RUN_DIR:-$REPO_ROOT/.run}
case $RUN_DIR in
    /*) ;;
    *) RUN_DIR=$PWD/$RUN_DIR ;;
esac
readonly DIR=$RUN_DIR/printers
readonly LOG_DIR=$RUN_DIR/logs
readonly BUS_SOCKET=$DIR/dbus.sock
readonly BUS_PID=$DIR/dbus.pid
readonly AVAHI_PID=/run/avahi-daemon/pid
readonly AVAHI_OURS=$DIR/avahi.pid
# name:port — the card printer and the separate PIN-mailer printer.
read -r -a PRINTERS <<<"${BUREAU_PRINTERS:-card:8631 pin:8632}"
readonly PRINTERS

log() { printf '[printers] %s\n' "$*" >&2; }
die() {
    printf '[printers] ERROR: %s\n' "$*" >&2
    exit 1
}

alive() {
    local state
    state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
    [[ -n $state && $state != Z && $state != X ]]
}

pid_of() { # pid_of <pidfile> <comm>: the live process of that name in the pid file
    [[ -f $1 ]] || return 1
    local pid
    pid=$(<"$1")
    [[ $pid =~ ^[0-9]+$ ]] && alive "$pid" || return 1
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$2"* ]] || return 1
    printf '%s\n' "$pid"
}

stop_pid() { # stop_pid <pid>
    local i
    kill -TERM "$1" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        alive "$1" || return 0
        sleep 0.1
    done
    kill -KILL "$1" 2>/dev/null || true
}

bus_up() {
    if pid_of "$BUS_PID" dbus-daemon >/dev/null; then return 0; fi
    command -v dbus-daemon >/dev/null || die "dbus-daemon missing: apt-get install dbus"
    mkdir -p -- "$DIR"
    cat >"$DIR/dbus.conf" <<EOF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=$BUS_SOCKET</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="root"/>
    <allow user="$(id -un)"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
EOF
    rm -f -- "$BUS_SOCKET"
    dbus-daemon --config-file="$DIR/dbus.conf" --fork --nopidfile --print-pid 9>&- >"$BUS_PID"
    local i
    for ((i = 0; i < 50; i++)); do
        [[ -S $BUS_SOCKET ]] && return 0
        sleep 0.1
    done
    die "the private D-Bus did not come up"
}

avahi_up() {
    if pid_of "$AVAHI_OURS" avahi-daemon >/dev/null; then return 0; fi
    command -v avahi-daemon >/dev/null || die "avahi-daemon missing: apt-get install avahi-daemon"
    cat >"$DIR/avahi.conf" <<EOF
[server]
use-ipv4=yes
use-ipv6=no
allow-interfaces=lo
[publish]
publish-hinfo=no
publish-workstation=no
publish-addresses=no
EOF
    local launcher=$DIR/avahi-launch
    if unshare --mount --net --propagation private true 2>/dev/null; then
        # Its own mount namespace with a private /run/avahi-daemon: the compiled-in pid file and
        # socket there never meet another avahi on this machine (a system one, another stack's);
        # its own network namespace: its mDNS socket (UDP 5353 on every address) reaches no
        # network. It still serves the printers over the D-Bus socket, a path on disk.
        cat >"$launcher" <<'EOF'
#!/bin/sh
# $1: pid file, $2: avahi config. unshare and sh exec in place, so $$ is avahi's pid.
echo $$ >"$1"
exec unshare --mount --net --propagation private /bin/sh -c \
    'mkdir -p /run/avahi-daemon && mount -t tmpfs avahi /run/avahi-daemon &&
     exec avahi-daemon --no-drop-root --no-chroot -f "$0"' "$2"
EOF
    else
        local other
        if other=$(pid_of "$AVAHI_PID" avahi-daemon); then
            die "an avahi-daemon (pid $other) not started by this script holds $AVAHI_PID"
        fi
        cat >"$launcher" <<'EOF'
#!/bin/sh
echo $$ >"$1"
exec avahi-daemon --no-drop-root --no-chroot -f "$2"
EOF
    fi
    chmod 755 "$launcher"
    rm -f -- "$AVAHI_OURS"
    DBUS_SYSTEM_BUS_ADDRESS=unix:path=$BUS_SOCKET setsid "$launcher" "$AVAHI_OURS" \
        "$DIR/avahi.conf" </dev/null >>"$LOG_DIR/printer-avahi.log" 2>&1 9>&- &
    local i
    for ((i = 0; i < 50; i++)); do
        if pid_of "$AVAHI_OURS" avahi-daemon >/dev/null &&
            grep -q "Server startup complete" "$LOG_DIR/printer-avahi.log" 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    pid_of "$AVAHI_OURS" avahi-daemon >/dev/null ||
        die "avahi-daemon did not start; see $LOG_DIR/printer-avahi.log"
}

printer_up() { # printer_up <name> <port>
    local name=$1 port=$2 home=$DIR/$1 pid
    if pid=$(pid_of "$home/pid" ippeveprinter); then
        log "$name: already running (pid $pid, port $port)"
        return 0
    fi
    command -v ippeveprinter >/dev/null || die "ippeveprinter missing: apt-get install cups-ipp-utils"
    local busy
    busy=$(ss -Hltn "sport = :$port" 2>/dev/null || true)
    [[ -z $busy ]] || die "TCP port $port is already in use: $busy"
    mkdir -p -- "$home/spool"
    cat >"$home/print-command" <<EOF
#!/bin/sh
# ippeveprinter's print command. \$1: the spooled document (kept, -k); stdout: what came out of
# the printer (kept as <job>-<name>.prn). Faults: a 'jammed' file aborts every job; a
# 'misprint' file is printed once instead of the next document.
[ -e "$home/jammed" ] && { echo "printer jammed" >&2; exit 1; }
if mv "$home/misprint" "$home/misprint.used" 2>/dev/null; then
    cat "$home/misprint.used"; rm -f "$home/misprint.used"; exit 0
fi
exec cat "\$1"
EOF
    # The PIN printer keeps nothing: a PIN mailer leaves only on paper. Without -k
    # ippeveprinter still keeps a job's document until it cleans its history (a minute later),
    # so its print command shreds the document as soon as it is printed, and writes no output.
    local keep=-k
    if [[ $name == pin ]]; then
        keep=
        sed -i 's/^exec cat .*/exec rm -f -- "$1"/' "$home/print-command"
    fi
    chmod 755 "$home/print-command"
    DBUS_SYSTEM_BUS_ADDRESS=unix:path=$BUS_SOCKET setsid ippeveprinter -n localhost -p "$port" \
        $keep -c "$home/print-command" -d "$home/spool" -f image/png,application/pdf \
        -l "cardbureau $name printer" -m "$name" "bureau-$name" \
        </dev/null >>"$LOG_DIR/printer-$name.log" 2>&1 9>&- &
    echo $! >"$home/pid"
    local i
    for ((i = 0; i < 50; i++)); do
        if [[ -n $(ss -Hltn "sport = :$port" 2>/dev/null) ]]; then
            log "$name: up (pid $(<"$home/pid"), ipp://localhost:$port/ipp/print)"
            return 0
        fi
        alive "$(<"$home/pid")" || break
        sleep 0.1
    done
    die "printer $name did not start; see $LOG_DIR/printer-$name.log"
}

cmd_up() {
    mkdir -p -- "$DIR" "$LOG_DIR"
    bus_up
    avahi_up
    local entry
    for entry in "${PRINTERS[@]}"; do
        printer_up "${entry%%:*}" "${entry##*:}"
    done
}

cmd_down() {
    local entry pid
    for entry in "${PRINTERS[@]}"; do
        if pid=$(pid_of "$DIR/${entry%%:*}/pid" ippeveprinter); then
            stop_pid "$pid"
            log "${entry%%:*}: stopped (pid $pid)"
        fi
        rm -f -- "$DIR/${entry%%:*}/pid"
    done
    if pid=$(pid_of "$AVAHI_OURS" avahi-daemon); then stop_pid "$pid"; fi
    rm -f -- "$AVAHI_OURS"
    if pid=$(pid_of "$BUS_PID" dbus-daemon); then stop_pid "$pid"; fi
    rm -f -- "$BUS_PID" "$BUS_SOCKET"
}

cmd_status() {
    local entry name port pid rc=0
    for entry in "${PRINTERS[@]}"; do
        name=${entry%%:*} port=${entry##*:}
        if pid=$(pid_of "$DIR/$name/pid" ippeveprinter); then
            printf '%-9s %-8s pid %-7s ipp://localhost:%s/ipp/print  spool %s\n' "printer-$name" \
                running "$pid" "$port" "$DIR/$name/spool"
        else
            printf '%-9s %-8s %-11s ipp://localhost:%s/ipp/print\n' "printer-$name" stopped "" "$port"
            rc=3
        fi
    done
    return "$rc"
}

cmd_env() {
    local entry name port upper
    for entry in "${PRINTERS[@]}"; do
        name=${entry%%:*} port=${entry##*:}
        upper=$(printf '%s' "$name" | tr '[:lower:]' '[:upper:]')
        printf 'export BUREAU_%s_PRINTER_URI=%q\n' "$upper" "ipp://localhost:$port/ipp/print"
        printf 'export BUREAU_%s_PRINTER_SPOOL=%q\n' "$upper" "$DIR/$name/spool"
    done
}

case ${1:-} in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    env) cmd_env ;;
    *)
        sed -n '2,7p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
        exit 2
        ;;
esac
