#!/usr/bin/env bash
# Two real IPP printers for the local stack (see docs/local-stack.md): Debian's ippeveprinter.
#
#   deploy/local/printers.sh up      start the card printer and the PIN-mailer printer (idempotent)
#   deploy/local/printers.sh down    stop them, and the private D-Bus + Avahi they need
#   deploy/local/printers.sh status  one line per printer; exit 0 when both run, 3 otherwise
#   deploy/local/printers.sh env     export lines for clients (printer URIs, spool folders, CA)
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
# inspects) at once; print QA deletes both once it has decided the card (services/qa). Faults
# an operator or a test can set in the printer's folder: `jammed` (the printer aborts every job
# while it exists), `misprint` (an image printed once instead of the next document).
#
# TLS: the printers named in BUREAU_TLS_PRINTERS (default: pin card) serve IPPS (`-K <keys>`: the
# certificate and key ippeveprinter loads for the name `localhost`). At `up` a stack CA is made
# once (.run/printers/tls/ca.crt, what clients verify against: BUREAU_<NAME>_PRINTER_CA) and
# signs each TLS printer's server certificate (localhost and 127.0.0.1, 90 days); the CA's key
# is deleted as soon as it has signed, so nothing on this machine can issue another printer
# certificate it trusts. Certificates are made again (with a new CA) when one is missing, no
# longer verifies or expires within a day. ippeveprinter still answers plain IPP on the same
# port: the guarantee is the client's, which speaks only ipps:// to the PIN printer (keymgmt)
# and to the card printer (graphical: a card face carries the cardholder's name and CVV2).
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
readonly TLS_DIR=$DIR/tls
readonly CA_CERT=$TLS_DIR/ca.crt
# name:port — the card printer and the separate PIN-mailer printer.
read -r -a PRINTERS <<<"${BUREAU_PRINTERS:-card:8631 pin:8632}"
readonly PRINTERS
read -r -a TLS_PRINTERS <<<"${BUREAU_TLS_PRINTERS-pin card}"
readonly TLS_PRINTERS

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

is_tls() { # is_tls <name>: the printer serves IPPS
    local tls
    for tls in "${TLS_PRINTERS[@]}"; do [[ $tls == "$1" ]] && return 0; done
    return 1
}

uri_of() { # uri_of <name> <port>
    local scheme=ipp
    is_tls "$1" && scheme=ipps
    printf '%s://localhost:%s/ipp/print\n' "$scheme" "$2"
}

ossl() { env -u OPENSSL_CONF openssl "$@" 2>/dev/null; } # the stack's provider config is not needed

certs_good() { # the CA and every TLS printer's certificate exist, verify and last another day
    [[ -f $CA_CERT ]] || return 1
    local name crt
    for name in "${TLS_PRINTERS[@]}"; do
        crt=$DIR/$name/keys/localhost.crt
        [[ -f $crt && -f $DIR/$name/keys/localhost.key ]] || return 1
        ossl verify -CAfile "$CA_CERT" "$crt" >/dev/null || return 1
        ossl x509 -in "$crt" -noout -checkend 86400 >/dev/null || return 1
    done
}

make_certs() { # make_certs <work dir>: a new CA in <work>, a signed certificate per TLS printer
    local work=$1 name keys serial
    ossl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
        -keyout "$work/ca.key" -out "$work/ca.crt" -subj "/CN=cardbureau local stack CA" \
        -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" || return 1
    printf '%s\n' "subjectAltName=DNS:localhost,IP:127.0.0.1" "basicConstraints=critical,CA:FALSE" \
        "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth" >"$work/server.ext"
    for name in "${TLS_PRINTERS[@]}"; do
        keys=$DIR/$name/keys
        mkdir -p -- "$keys" || return 1
        ossl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
            -keyout "$keys/localhost.key" -out "$work/$name.csr" || return 1
        serial=0x$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
        ossl x509 -req -in "$work/$name.csr" -CA "$work/ca.crt" -CAkey "$work/ca.key" \
            -set_serial "$serial" -days 90 -extfile "$work/server.ext" \
            -out "$keys/localhost.crt" || return 1
    done
    mv -f -- "$work/ca.crt" "$CA_CERT" && chmod 644 "$CA_CERT"
}

tls_up() {
    ((${#TLS_PRINTERS[@]})) || return 0
    if certs_good; then return 0; fi
    command -v openssl >/dev/null || die "openssl missing: apt-get install openssl"
    log "making the stack CA and the TLS printers' certificates ($TLS_DIR)"
    mkdir -p -- "$TLS_DIR"
    local work rc=0
    work=$(umask 077 && mktemp -d "$TLS_DIR/make.XXXXXX")
    (umask 077 && make_certs "$work") || rc=$?
    rm -rf -- "$work" # the CA key with it: it signs nothing more
    ((rc == 0)) || die "could not make the printers' TLS certificates (openssl failed)"
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
    local tls=()
    is_tls "$name" && tls=(-K "$home/keys")
    DBUS_SYSTEM_BUS_ADDRESS=unix:path=$BUS_SOCKET setsid ippeveprinter -n localhost -p "$port" \
        "${tls[@]}" $keep -c "$home/print-command" -d "$home/spool" -f image/jpeg,image/png,application/pdf \
        -l "cardbureau $name printer" -m "$name" "bureau-$name" \
        </dev/null >>"$LOG_DIR/printer-$name.log" 2>&1 9>&- &
    echo $! >"$home/pid"
    local i
    for ((i = 0; i < 50; i++)); do
        if [[ -n $(ss -Hltn "sport = :$port" 2>/dev/null) ]]; then
            log "$name: up (pid $(<"$home/pid"), $(uri_of "$name" "$port"))"
            return 0
        fi
        alive "$(<"$home/pid")" || break
        sleep 0.1
    done
    die "printer $name did not start; see $LOG_DIR/printer-$name.log"
}

cmd_up() {
    mkdir -p -- "$DIR" "$LOG_DIR"
    tls_up
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
            printf '%-9s %-8s pid %-7s %s  spool %s\n' "printer-$name" \
                running "$pid" "$(uri_of "$name" "$port")" "$DIR/$name/spool"
        else
            printf '%-9s %-8s %-11s %s\n' "printer-$name" stopped "" "$(uri_of "$name" "$port")"
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
        printf 'export BUREAU_%s_PRINTER_URI=%q\n' "$upper" "$(uri_of "$name" "$port")"
        printf 'export BUREAU_%s_PRINTER_SPOOL=%q\n' "$upper" "$DIR/$name/spool"
        if is_tls "$name"; then printf 'export BUREAU_%s_PRINTER_CA=%q\n' "$upper" "$CA_CERT"; fi
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
