#!/usr/bin/env bash
# A private pcscd with 6 vpcd virtual readers for the local stack (see docs/local-stack.md).
#
#   deploy/local/pcscd.sh up      start pcscd (idempotent), write readers.json
#   deploy/local/pcscd.sh down    stop it (idempotent, stale pid files handled)
#   deploy/local/pcscd.sh status  one line; exit 0 when running, 3 when stopped
#   deploy/local/pcscd.sh env     export lines for clients (PCSCLITE_CSOCK_NAME, readers file)
#
# Data under ${BUREAU_RUN_DIR:-<repo>/.run}/pcsc, log in .run/logs/pcscd.log.
#
# Private socket: pcsc-lite 1.9.9's client library (libpcsclite) reads PCSCLITE_CSOCK_NAME, but
# the daemon ignores it (its socket path /run/pcscd/pcscd.comm is compiled in). The daemon does
# take a listening socket from systemd-style socket activation (LISTEN_FDS/LISTEN_PID, fd 3),
# so a two-line launcher binds the private socket and execs pcscd with it. Clients then need
# PCSCLITE_CSOCK_NAME=<socket>, which readers.json carries as "pcsc_socket" on every reader.
# pcscd still writes (and on exit removes) /run/pcscd/pcscd.pid, its compiled-in pid file: a
# second private pcscd (bench/pipeline's, with more readers) puts back the first one's pid
# there after its start and after its stop (keep_system_pid_file).
set -euo pipefail
readonly SYSTEM_PID_FILE=/run/pcscd/pcscd.pid

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd -- "$SCRIPT_DIR/../.." && pwd)
RUN_DIR=${BUREAU_RUN_DIR:-$REPO_ROOT/.run}
case $RUN_DIR in
    /*) ;;
    *) RUN_DIR=$PWD/$RUN_DIR ;;
esac
readonly PCSC_DIR=$RUN_DIR/pcsc
readonly LOG_FILE=$RUN_DIR/logs/pcscd.log
readonly CONF_DIR=$PCSC_DIR/reader.conf.d
readonly LIB_DIR=$PCSC_DIR/lib
readonly PID_FILE=$PCSC_DIR/pcscd.pid
readonly READERS_JSON=$PCSC_DIR/readers.json
readonly ENV_FILE=$PCSC_DIR/env.sh
readonly VPCD_LIB=${VPCD_LIB:-/usr/lib/pcsc/drivers/serial/libifdvpcd.so}
# Each vpcd entry serves 2 readers on TCP ports CHANNELID and CHANNELID+1: 35963-35968.
# BUREAU_VPCD_CHANNELS overrides them, for a second private pcscd beside the stack's (another
# work tree, or tests that must not share readers), e.g. "0x9C7B 0x9C7D 0x9C7F".
read -r -a CHANNELS <<<"${BUREAU_VPCD_CHANNELS:-0x8C7B 0x8C7D 0x8C7F}"
readonly CHANNELS
readonly FRIENDLY_PREFIX="Bureau VPCD"

# AF_UNIX paths are limited to 108 bytes; a deep run directory gets its socket under /tmp.
SOCKET=$PCSC_DIR/pcscd.comm
if ((${#SOCKET} > 100)); then
    SOCKET=/tmp/cardbureau-pcscd-$(printf '%s' "$PCSC_DIR" | sha1sum | cut -c1-12)/pcscd.comm
fi
readonly SOCKET

PY=$REPO_ROOT/.venv/bin/python
[[ -x $PY ]] || PY=python3

log() { printf '[pcscd] %s\n' "$*" >&2; }
die() {
    printf '[pcscd] ERROR: %s\n' "$*" >&2
    exit 1
}

# Alive and not a zombie: an exited pcscd stays a zombie until its (re)parent reaps it.
alive() {
    local state
    state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
    [[ -n $state && $state != Z && $state != X ]]
}

# The pid in our pid file, if that process is alive and is a pcscd.
running_pid() {
    [[ -f $PID_FILE ]] || return 1
    local pid
    pid=$(<"$PID_FILE")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    alive "$pid" || return 1
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == pcscd ]] || return 1
    printf '%s\n' "$pid"
}

ports() {
    local ch
    for ch in "${CHANNELS[@]}"; do
        printf '%d\n%d\n' "$((ch))" "$((ch + 1))"
    done
}

# Someone else (a system pcscd with the stock vpcd reader.conf) listening on our ports?
check_ports_free() {
    local port busy
    for port in $(ports); do
        busy=$(ss -Hltn "sport = :$port" 2>/dev/null || true)
        [[ -z $busy ]] || die "TCP port $port is already in use (a system pcscd with vpcd?): $busy"
    done
}

write_config() {
    mkdir -p -- "$CONF_DIR" "$LIB_DIR" "$(dirname -- "$LOG_FILE")" "$(dirname -- "$SOCKET")"
    [[ -e $VPCD_LIB ]] || die "$VPCD_LIB missing: apt-get install vsmartcard-vpcd"
    rm -f -- "$CONF_DIR"/*
    local ch id lib
    for ch in "${CHANNELS[@]}"; do
        id=${ch#0x}
        # Entries sharing one LIBPATH share vpcd's slot table and stop servicing cards:
        # every entry gets its own copy of the driver.
        lib=$LIB_DIR/libifdvpcd-$id.so
        cp -f -- "$(readlink -f -- "$VPCD_LIB")" "$lib"
        cat >"$CONF_DIR/vpcd-$id.conf" <<EOF
FRIENDLYNAME "$FRIENDLY_PREFIX $id"
DEVICENAME   /dev/null:$ch
LIBPATH      $lib
CHANNELID    $ch
EOF
    done
}

launch() {
    rm -f -- "$SOCKET"
    rm -f -- "$PID_FILE"
    # Socket activation (sd_listen_fds): fd 3 listening, LISTEN_PID = the pid after exec, which
    # is also the pid the launcher records (setsid may fork, so $! is not trusted).
    setsid "$PY" -c '
import os, socket, sys
sock_path, pid_file, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.bind(sock_path)
os.chmod(sock_path, 0o666)
sock.listen(128)
if sock.fileno() != 3:
    os.dup2(sock.fileno(), 3)
os.set_inheritable(3, True)
os.environ.update(LISTEN_FDS="1", LISTEN_PID=str(os.getpid()))
with open(pid_file, "w") as f:
    f.write(f"{os.getpid()}\n")
os.execvp(argv[0], argv)
' "$SOCKET" "$PID_FILE" pcscd --foreground --info --config "$CONF_DIR" \
        </dev/null >>"$LOG_FILE" 2>&1 &
    local i
    for ((i = 0; i < 50; i++)); do
        [[ -s $PID_FILE ]] && return 0
        sleep 0.1
    done
    die "pcscd launcher did not start; see $LOG_FILE"
}

# The live pcscd other than $1 that /run/pcscd/pcscd.pid names, if any.
other_pcscd() {
    local pid
    pid=$(tr -dc '0-9' 2>/dev/null <"$SYSTEM_PID_FILE") || return 1  # stderr first: a missing file says nothing
    [[ -n $pid && $pid != "${1:-}" ]] && alive "$pid" || return 1
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == pcscd ]] || return 1
    printf '%s\n' "$pid"
}

keep_system_pid_file() {  # pid: write it back into pcscd's compiled-in pid file
    [[ -n ${1:-} ]] || return 0
    printf '%s\n' "$1" >"$SYSTEM_PID_FILE" 2>/dev/null || true
}

# List readers through pyscard, map each to its vpcd port, write readers.json atomically.
write_readers_json() {
    PCSCLITE_CSOCK_NAME=$SOCKET "$PY" - "$READERS_JSON" "$SOCKET" "$FRIENDLY_PREFIX" \
        "${CHANNELS[@]}" <<'EOF'
import json, os, sys, time
from smartcard.scard import (SCARD_S_SUCCESS, SCARD_SCOPE_USER, SCardEstablishContext,
                             SCardListReaders, SCardReleaseContext)
out, sock, prefix, channels = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
want = {}
for ch in channels:
    for slot in (0, 1):
        want[int(ch, 16) + slot] = (f"{prefix} {ch[2:]} ", slot)
names = []
deadline = time.monotonic() + 10
while time.monotonic() < deadline:
    hr, ctx = SCardEstablishContext(SCARD_SCOPE_USER)
    if hr == SCARD_S_SUCCESS:
        hr, names = SCardListReaders(ctx, [])
        SCardReleaseContext(ctx)
        if hr == SCARD_S_SUCCESS and len(names) >= len(want):
            break
    time.sleep(0.1)
readers = []
for port, (head, slot) in sorted(want.items()):
    match = [n for n in names if n.startswith(head) and int(n.split()[-1], 16) == slot]
    if len(match) != 1:
        sys.exit(f"no unique reader for port {port} among {names}")
    readers.append({"name": match[0], "port": port, "pcsc_socket": sock})
with open(out + ".tmp", "w") as f:
    json.dump(readers, f, indent=2)
os.replace(out + ".tmp", out)
EOF
}

write_env_file() {
    cat >"$ENV_FILE.tmp" <<EOF
export PCSCLITE_CSOCK_NAME=$SOCKET
export BUREAU_PCSC_READERS=$READERS_JSON
EOF
    mv -f -- "$ENV_FILE.tmp" "$ENV_FILE"
}

cmd_up() {
    local pid i
    if pid=$(running_pid); then
        [[ -f $READERS_JSON ]] || write_readers_json
        write_env_file
        log "already running (pid $pid, socket $SOCKET)"
        return 0
    fi
    rm -f -- "$PID_FILE" # stale
    check_ports_free
    write_config
    local first
    first=$(other_pcscd) || first=""
    launch
    pid=$(<"$PID_FILE")
    if [[ -n $first ]]; then  # ours overwrites it as soon as it runs: wait for that, put back
        for ((i = 0; i < 50; i++)); do
            [[ $(tr -dc '0-9' <"$SYSTEM_PID_FILE" 2>/dev/null) == "$pid" ]] && break
            sleep 0.1
        done
        keep_system_pid_file "$first"
    fi
    if ! write_readers_json; then
        kill "$pid" 2>/dev/null || true
        rm -f -- "$PID_FILE"
        die "pcscd did not list its readers; see $LOG_FILE"
    fi
    write_env_file
    log "up (pid $pid, socket $SOCKET, readers in $READERS_JSON)"
}

cmd_down() {
    local pid i first
    if pid=$(running_pid); then
        first=$(other_pcscd "$pid") || first=""
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do
            alive "$pid" || break
            sleep 0.1
        done
        if alive "$pid"; then
            log "pcscd $pid ignored SIGTERM; killing"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        keep_system_pid_file "$first"  # ours removed it on exit
        log "stopped (pid $pid)"
    fi
    # A socket-activated pcscd leaves its socket behind: remove it with the pid file.
    rm -f -- "$PID_FILE" "$SOCKET"
}

cmd_status() {
    local pid n=0
    if pid=$(running_pid); then
        [[ -f $READERS_JSON ]] && n=$(grep -c '"port"' "$READERS_JSON" || true)
        printf '%-9s %-8s pid %-7s socket %s, %s readers (%s)\n' pcscd running "$pid" \
            "$SOCKET" "$n" "$READERS_JSON"
        return 0
    fi
    printf '%-9s %-8s %-11s vpcd ports %s\n' pcscd stopped "" "$(ports | paste -sd, -)"
    return 3
}

case ${1:-} in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    env) printf 'export PCSCLITE_CSOCK_NAME=%q\nexport BUREAU_PCSC_READERS=%q\n' "$SOCKET" \
        "$READERS_JSON" ;;
    *)
        sed -n '2,7p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
        exit 2
        ;;
esac
