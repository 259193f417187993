#!/usr/bin/env bash
# Start and stop the bureau's services (and the card feeder) as private processes on the local
# stack. Each logs JSON to .run/logs/<name>.log and keeps its pid in .run/pids/<name>.pid.
# Each runs under a keeper (its pid in .run/pids/<name>.keeper.pid) that starts it again, with
# backoff, whenever it exits: a service whose task cannot run exits on purpose (its liveness
# fails first, docs/architecture.md "Supervision"), as Kubernetes would restart its pod.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
RUN="${BUREAU_RUN_DIR:-$REPO/.run}"
PY="$REPO/.venv/bin/python"
SERVICES=(audit keymgmt intake electrical graphical qa fulfillment)
declare -A PORTS=([intake]=8101 [keymgmt]=8102 [electrical]=8103 [graphical]=8104 [qa]=8105
                  [fulfillment]=8106 [audit]=8107 [witness]=8108 [feeder]=8110)

mkdir -p "$RUN/logs" "$RUN/pids"

proc_alive() {  # pid: a live process. kill -0 also succeeds on a zombie (exited, not reaped),
    # so the state letter in /proc/<pid>/stat decides: Z (zombie) and X (dead) are not alive.
    local stat state
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    state=${stat##*) }
    state=${state%% *}
    [[ -n $state && $state != Z && $state != X ]]
}

alive() { [[ -f "$RUN/pids/$1.pid" ]] && proc_alive "$(cat "$RUN/pids/$1.pid")"; }

kept() { [[ -f "$RUN/pids/$1.keeper.pid" ]] && proc_alive "$(cat "$RUN/pids/$1.keeper.pid")"; }

write_pid() {  # file pid: written whole and renamed into place, so a reader never sees it empty
    echo "$2" >"$1.new" && mv -f "$1.new" "$1"
}

keep() {  # name command...: run it; whenever it exits, start it again (backoff 1 s doubling to
    # 30 s, back to 1 s after a run of a minute), until this keeper is told to stop (TERM).
    local name=$1 child="" delay=1 started rc
    shift
    trap 'if [[ -n $child ]]; then kill "$child" 2>/dev/null; wait "$child"; fi; exit 0' TERM INT
    while true; do
        started=$SECONDS
        "$@" &
        child=$!
        write_pid "$RUN/pids/$name.pid" "$child"
        rc=0
        wait "$child" || rc=$?
        if ((SECONDS - started >= 60)); then delay=1; fi
        echo "services: $name exited with status $rc; starting it again in ${delay} s" >&2
        sleep "$delay" &
        child=$!
        wait "$child" || true
        delay=$((delay * 2 > 30 ? 30 : delay * 2))
    done
}

wait_ready() {  # name port
    local deadline=$((SECONDS + 60))
    until curl -fsS "http://127.0.0.1:$2/ready" >/dev/null 2>&1; do
        if ! kept "$1"; then
            echo "services: $1 exited while starting; last log lines:" >&2
            tail -n 20 "$RUN/logs/$1.log" >&2
            return 1
        fi
        if (( SECONDS > deadline )); then
            echo "services: $1 not ready on port $2 after 60 s:" >&2
            curl -sS "http://127.0.0.1:$2/ready" >&2 || true
            tail -n 20 "$RUN/logs/$1.log" >&2
            return 1
        fi
        sleep 0.3
    done
}

load_creds() {  # name: export the workload's own credentials, written by stack.sh as
    # $RUN/creds/<name>.<part>.env (one file per part: its database role, its Kafka principal,
    # ...), into the subshell that runs it only, so no process gets another's credentials.
    local file
    # env.sh's Kafka principal is the stack's admin (for tests and tools), no workload's: a
    # workload gets its own from its kafka.env, or none (feeder, witness: they use no Kafka).
    unset BUREAU_KAFKA_SECURITY_PROTOCOL BUREAU_KAFKA_SASL_MECHANISM BUREAU_KAFKA_USERNAME \
        BUREAU_KAFKA_PASSWORD
    # HTTP tokens: a workload gets its own and the verifiers of those it admits from its
    # tokens.env (deploy/local/tokens.py), never one a caller's environment carries: not the
    # people's (tools.tokens.env, which a human may have sourced) nor another workload's.
    unset BUREAU_SERVICE_TOKENS BUREAU_PRINCIPALS BUREAU_STATION_TOKEN BUREAU_PEOPLE_TOKENS \
        BUREAU_AUDITOR_TOKEN BUREAU_WITNESS_KEY_READER
    # Once stack.sh has made the runtime roles, a workload without a database credential of its
    # own (the feeder, the witness) gets none: not the owner's, which env.sh exports.
    if [[ ! -f "$RUN/creds/$1.db.env" ]] && compgen -G "$RUN/creds/*.db.env" >/dev/null; then
        unset BUREAU_DATABASE_URL
    fi
    for file in "$RUN/creds/$1".*.env; do
        [[ -f $file ]] || continue
        # shellcheck disable=SC1090
        source "$file"
    done
}

migrate_one() {  # name: apply its migrations as the schema owner before it starts. stack.sh
    # wrote $RUN/creds/migrate-<name>.db.env (the owner's URL, the runtime role to grant), read
    # here by the migrate step only; the service then gets its runtime role alone (<name>.db.env)
    # and checks its schema instead of migrating. Without that file it migrates itself (dev).
    local file="$RUN/creds/migrate-$1.db.env"
    [[ -f $file ]] || return 0
    # shellcheck disable=SC1090
    if ! (cd "$REPO" && source "$file" && "$PY" -m shared.migrate "$1") >>"$RUN/logs/$1.log" 2>&1; then
        echo "services: the migrations of $1 failed; last log lines:" >&2
        tail -n 20 "$RUN/logs/$1.log" >&2
        return 1
    fi
}

start_one() {  # name command...
    local name=$1; shift
    if alive "$name" || kept "$name"; then echo "services: $name already running"; return 0; fi
    rm -f "$RUN/pids/$name.pid"
    (cd "$REPO" && load_creds "$name" && keep "$name" "$@") >>"$RUN/logs/$name.log" 2>&1 &
    write_pid "$RUN/pids/$name.keeper.pid" $!
    for _ in $(seq 1 50); do [[ -f "$RUN/pids/$name.pid" ]] && break; sleep 0.1; done
}

auditor_header() {  # the auditor's Authorization header, read in a subshell: never exported
    (
        # shellcheck disable=SC1091
        source "$RUN/creds/tools.tokens.env"
        printf 'Authorization: Bearer %s\n' "${BUREAU_WITNESS_KEY_READER:-$BUREAU_AUDITOR_TOKEN}"
    )
}

start_witness() {  # the audit log's witness: its own process, key and store (docs/audit.md)
    # keymgmt's log key is pinned in the witness's store on its first start (trust on first
    # use, dev only: a real witness is given the vkey by its operator).
    local pinned="$RUN/witness/log.vkey"
    if [[ ! -s "$pinned" ]]; then
        mkdir -p "$RUN/witness"
        # As the auditor (the people's file; the header on stdin, never on a command line).
        auditor_header | curl -fsS -H @- \
            "http://127.0.0.1:${PORTS[keymgmt]}/v1/signing/audit-checkpoints/public-key" \
            | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["vkey"])' >"$pinned.tmp"
        mv "$pinned.tmp" "$pinned"
    fi
    BUREAU_WITNESS_DIR="$RUN/witness" BUREAU_WITNESS_LOG_VKEYS="$(cat "$pinned")" \
        start_one witness "$PY" -m services.audit.witness
    wait_ready witness "${PORTS[witness]}"
}

floor_readers() {  # the floor's readers.json split: the encoding station takes the first
    # BUREAU_FLOOR_STATION_READERS (default 4) readers, hopper-fed; every reader after them is a
    # QA position (manual: the feeder inserts a printed card by chip serial), all of them
    # positions of the one QA station (docs/architecture.md "The floor").
    # BUREAU_FLOOR_PCSC_READERS runs the floor on another pcscd's readers (bench/pipeline's
    # private pcscd with more vpcd readers); its socket comes with its readers.json.
    if [[ -n ${BUREAU_FLOOR_PCSC_READERS:-} ]]; then
        export BUREAU_PCSC_READERS=$BUREAU_FLOOR_PCSC_READERS
        PCSCLITE_CSOCK_NAME=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))[0]["pcsc_socket"])' "$BUREAU_PCSC_READERS")
        export PCSCLITE_CSOCK_NAME
    fi
    local split
    split=$("$PY" - "$BUREAU_PCSC_READERS" "${BUREAU_FLOOR_STATION_READERS:-4}" <<'EOF'
import json, sys
readers, count = json.load(open(sys.argv[1])), int(sys.argv[2])
if not 0 < count < len(readers):
    sys.exit(f"services: {len(readers)} readers leave no QA position after {count} station readers")
print(",".join(r["name"] for r in readers[:count]))
print(",".join(r["name"] for r in readers[count:]))
print(" ".join(str(r["port"]) for r in readers[count:]))
EOF
    )
    { read -r STATION_NAMES; read -r QA_NAMES; read -r QA_PORTS; } <<<"$split"
}

up() {
    [[ -f "$RUN/env.sh" ]] || { echo "services: no $RUN/env.sh; run 'make stack-up' first" >&2; exit 1; }
    # Every workload's HTTP tokens (deploy/local/tokens.py): without them a service would
    # run on the development tokens every other one knows.
    [[ -f "$RUN/creds/tools.tokens.env" ]] || {
        echo "services: no $RUN/creds/tools.tokens.env; run 'deploy/local/stack.sh up' (it makes the tokens)" >&2
        exit 1
    }
    # shellcheck disable=SC1091
    source "$RUN/env.sh"
    export BUREAU_TRACE_FILE="${BUREAU_TRACE_FILE:-$RUN/traces.jsonl}"
    # Kafka: each service runs as its own principal (load_creds); a run on another topic prefix
    # (an e2e run's, a benchmark's) first gets the workloads' ACLs and topics for that prefix.
    if [[ ${BUREAU_KAFKA_SECURITY_PROTOCOL:-PLAINTEXT} == SASL_* ]]; then
        "$PY" "$REPO/deploy/local/kafka/access.py" grant --prefix "${BUREAU_TOPIC_PREFIX:-bureau}"
    fi
    export BUREAU_WITNESS_URL="${BUREAU_WITNESS_URL:-http://127.0.0.1:${PORTS[witness]}}"
    floor_readers
    local manual=() port
    for port in $QA_PORTS; do manual+=(--manual "$port"); done
    start_one feeder "$PY" -m vcard.feeder --readers "$BUREAU_PCSC_READERS" \
        --state-dir "$RUN/vcard" --port "${PORTS[feeder]}" "${manual[@]}"
    for name in "${SERVICES[@]}"; do
        if ! alive "$name" && ! kept "$name"; then migrate_one "$name"; fi
        case $name in
            electrical) BUREAU_STATION_READERS=${BUREAU_STATION_READERS:-$STATION_NAMES} \
                start_one "$name" "$PY" -m "services.$name" ;;
            qa) BUREAU_QA_READERS=${BUREAU_QA_READERS:-$QA_NAMES} \
                start_one "$name" "$PY" -m "services.$name" ;;
            # Station planning: each prepared batch goes to the local station (set it empty
            # to leave every batch to a planner, docs/keymgmt.md).
            keymgmt) BUREAU_PERSO_STATIONS=${BUREAU_PERSO_STATIONS-${BUREAU_STATION_ID:-station-a}} \
                start_one "$name" "$PY" -m "services.$name" ;;
            *) start_one "$name" "$PY" -m "services.$name" ;;
        esac
    done
    for name in "${SERVICES[@]}"; do
        wait_ready "$name" "${PORTS[$name]}"
    done
    start_witness
    echo "services: all ready (logs in $RUN/logs)"
}

down() {
    local name
    for name in witness "${SERVICES[@]}" feeder; do
        if kept "$name"; then  # the keeper stops its process and waits for it
            kill "$(cat "$RUN/pids/$name.keeper.pid")" 2>/dev/null || true
            for _ in $(seq 1 60); do kept "$name" || break; sleep 0.2; done
        fi
        rm -f "$RUN/pids/$name.keeper.pid"
        if alive "$name"; then
            local pid; pid=$(cat "$RUN/pids/$name.pid")
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
            kill -9 "$pid" 2>/dev/null || true
        fi
        rm -f "$RUN/pids/$name.pid"
    done
}

status() {
    local name
    for name in feeder "${SERVICES[@]}" witness; do
        if alive "$name"; then
            printf '%-12s running pid %-7s port %s\n' "$name" "$(cat "$RUN/pids/$name.pid")" "${PORTS[$name]}"
        else
            printf '%-12s stopped\n' "$name"
        fi
    done
}

# Sourced (tests/unit/test_services_sh.py), it only defines its functions.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    case "${1:-}" in
        up) up ;;
        down) down ;;
        status) status ;;
        *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
    esac
fi
