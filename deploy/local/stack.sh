#!/usr/bin/env bash
# The private local stack of cardbureau: PostgreSQL, Kafka (KRaft), a SoftHSM2 token, an OpenSSL
# config with the legacy provider, pcscd + vpcd (through deploy/local/pcscd.sh, if present) and
# two IPP printers (deploy/local/printers.sh).
# Everything runs as private processes whose data lives under ${BUREAU_RUN_DIR:-<repo>/.run} and
# listens on 127.0.0.1 only. Contract: docs/local-stack.md. Install what it needs first with
# deploy/local/bootstrap.sh.
#
#   deploy/local/stack.sh up       start everything (idempotent), write <run>/env.sh
#   deploy/local/stack.sh down     stop Kafka, then PostgreSQL, then pcscd (idempotent)
#   deploy/local/stack.sh status   one line per component; exit 0 only when all are up
#                                  (--quiet: no output, the exit code only)
#   deploy/local/stack.sh env      print the `export` lines the services and tests read
#   deploy/local/stack.sh reset    down, then wipe all data (keeps the downloaded Kafka jars)
#
# Knobs (environment): BUREAU_RUN_DIR, KAFKA_START_TIMEOUT (s, default 120),
# STOP_TIMEOUT (s, default 30), JAVA_HOME, PG_BIN (PostgreSQL's bin directory), and for a
# private broker beside the stack (tests): KAFKA_PORT, KAFKA_CONTROLLER_PORT, KAFKA_BROKER_PORT.
#
#   deploy/local/stack.sh kafka-up|kafka-down   Kafka alone (its TLS, users, ACLs, topics)
set -euo pipefail

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd -- "$SCRIPT_DIR/../.." && pwd)
RUN_DIR=${BUREAU_RUN_DIR:-$REPO_ROOT/.run}
case $RUN_DIR in
    /*) ;;
    *) RUN_DIR=$PWD/$RUN_DIR ;;
esac
RUN_DIR=${RUN_DIR%/}

# --- fixed local settings (the contract; keep in line with docs/local-stack.md) ---------------
readonly PG_PORT=55432
readonly PG_DB=bureau
readonly PG_ROLE=bureau
readonly PG_PASSWORD=bureau-dev
readonly KAFKA_VERSION=4.3.1
readonly KAFKA_PORT=${KAFKA_PORT:-19092}
readonly KAFKA_CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-19093}
readonly KAFKA_BROKER_PORT=${KAFKA_BROKER_PORT:-19094}
readonly -a KAFKA_HEAP_OPTS=(-Xms256m -Xmx512m)
readonly HSM_TOKEN=bureau
readonly HSM_PIN=1234
readonly HSM_SO_PIN=12345678

readonly LOG_DIR=$RUN_DIR/logs
readonly PG_DATA=$RUN_DIR/pg
PG_SOCKET_DIR=$RUN_DIR/pgsocket
# A unix socket path has at most 107 bytes: a deep run directory gets its socket under /tmp.
if ((${#PG_SOCKET_DIR} + 18 > 107)); then
    PG_SOCKET_DIR=/tmp/cardbureau-pg-$(printf '%s' "$RUN_DIR" | sha1sum | cut -c1-12)
fi
readonly PG_SOCKET_DIR
readonly PG_LOG=$LOG_DIR/postgres.log
readonly KAFKA_LIB=$RUN_DIR/opt/kafka/lib
readonly KAFKA_DIR=$RUN_DIR/kafka
readonly KAFKA_DATA=$KAFKA_DIR/data
readonly KAFKA_PROPS=$KAFKA_DIR/server.properties
readonly KAFKA_PID_FILE=$KAFKA_DIR/kafka.pid
readonly KAFKA_CLUSTER_ID_FILE=$KAFKA_DIR/cluster.id
readonly KAFKA_TEMPLATE=$SCRIPT_DIR/kafka/server.properties.in
readonly KAFKA_LOG4J=$SCRIPT_DIR/kafka/log4j2.properties
readonly KAFKA_ACCESS=$SCRIPT_DIR/kafka/access.py
readonly KAFKA_TLS=$KAFKA_DIR/tls
readonly KAFKA_PROPS_SHA=$KAFKA_DIR/server.properties.started.sha256
readonly KAFKA_ADMIN_PASSWORD=$KAFKA_DIR/admin.password
readonly CREDS_DIR=$RUN_DIR/creds
readonly HSM_DIR=$RUN_DIR/softhsm
readonly HSM_CONF=$HSM_DIR/softhsm2.conf
readonly HSM_TOKENS=$HSM_DIR/tokens
readonly OPENSSL_CNF=$RUN_DIR/openssl.cnf
readonly PCSC_READERS=$RUN_DIR/pcsc/readers.json
readonly PCSCD_SCRIPT=$SCRIPT_DIR/pcscd.sh
readonly PRINTERS_SCRIPT=$SCRIPT_DIR/printers.sh
readonly ENV_FILE=$RUN_DIR/env.sh
readonly LOCK_FILE=$RUN_DIR/.stack.lock
readonly VENV_PY=$REPO_ROOT/.venv/bin/python

KAFKA_START_TIMEOUT=${KAFKA_START_TIMEOUT:-120}
STOP_TIMEOUT=${STOP_TIMEOUT:-30}

log() { printf '[stack] %s\n' "$*" >&2; }
warn() { printf '[stack] WARNING: %s\n' "$*" >&2; }
die() {
    printf '[stack] ERROR: %s\n' "$*" >&2
    exit 1
}
tail_of() { # tail_of FILE [N]: the last lines of a log, indented, for error messages
    if [[ -f $1 ]]; then
        printf '\n--- last lines of %s ---\n' "$1"
        tail -n "${2:-30}" "$1" | sed 's/^/  /'
    else
        printf '\n(no log at %s)\n' "$1"
    fi
}

is_root() { [[ $(id -u) -eq 0 ]]; }

# PostgreSQL refuses to run as root: as root it runs as the `postgres` system user.
if is_root; then PG_OS_USER=postgres; else PG_OS_USER=$(id -un); fi

as_pg() { # run a command as the PostgreSQL OS user, from a directory it can enter
    if is_root; then
        (cd / && runuser -u "$PG_OS_USER" -- "$@")
    else
        (cd / && "$@")
    fi
}

find_pg_bin() {
    local d
    if [[ -n ${PG_BIN:-} ]]; then
        [[ -x $PG_BIN/initdb ]] || die "PG_BIN=$PG_BIN has no initdb"
        printf '%s\n' "$PG_BIN"
        return
    fi
    # Debian/Ubuntu keep the server binaries out of PATH; prefer 15 (the contract), else the newest.
    if [[ -x /usr/lib/postgresql/15/bin/initdb ]]; then
        printf '%s\n' /usr/lib/postgresql/15/bin
        return
    fi
    d=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1 || true)
    if [[ -n $d && -x $d/initdb ]]; then
        printf '%s\n' "$d"
        return
    fi
    d=$(command -v initdb 2>/dev/null || true)
    if [[ -n $d ]]; then
        dirname -- "$(readlink -f -- "$d")"
        return
    fi
    return 1
}

find_softhsm_module() {
    local p arch=""
    arch=$(gcc -print-multiarch 2>/dev/null || dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || true)
    for p in /usr/lib/softhsm/libsofthsm2.so \
        ${arch:+/usr/lib/$arch/softhsm/libsofthsm2.so} \
        /usr/lib64/pkcs11/libsofthsm2.so /usr/lib/pkcs11/libsofthsm2.so \
        /usr/local/lib/softhsm/libsofthsm2.so; do
        if [[ -f $p ]]; then
            printf '%s\n' "$p"
            return
        fi
    done
    p=$(find /usr/lib /usr/lib64 /usr/local/lib -name libsofthsm2.so -print -quit 2>/dev/null || true)
    [[ -n $p ]] && printf '%s\n' "$p"
}

find_java() {
    if [[ -n ${JAVA_HOME:-} && -x $JAVA_HOME/bin/java ]]; then
        printf '%s\n' "$JAVA_HOME/bin/java"
    else
        command -v java
    fi
}

port_listener() { # the ss line of whatever listens on TCP port $1 (empty if nothing)
    ss -Hltnp "sport = :$1" 2>/dev/null || true
}

tcp_open() { # tcp_open PORT: does 127.0.0.1:PORT accept a connection?
    timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

pid_alive() { # a live process (a zombie, killed but not yet reaped by init, counts as gone)
    [[ -n ${1:-} ]] && kill -0 "$1" 2>/dev/null || return 1
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ ${stat:0:1} != Z ]]
}

wait_gone() { # wait_gone PID SECONDS: 0 when the process ended within the time
    local pid=$1 deadline=$((SECONDS + $2))
    while pid_alive "$pid"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.2
    done
}

ensure_traversable() { # as root: the postgres user must be able to reach the run directory
    is_root || return 0
    local d=$1
    while [[ $d != / && -n $d ]]; do
        if ! runuser -u "$PG_OS_USER" -- test -x "$d" 2>/dev/null; then
            log "giving others search (x) permission on $d so that the $PG_OS_USER user can reach $RUN_DIR"
            chmod o+x -- "$d"
        fi
        d=$(dirname -- "$d")
    done
}

quote() { # single-quote a value for the shell
    local s=${1//\'/\'\\\'\'}
    printf "'%s'" "$s"
}

emit_env() {
    local module
    module=$(find_softhsm_module || true)
    [[ -n $module ]] || module=/usr/lib/softhsm/libsofthsm2.so
    local -a pairs=(
        BUREAU_RUN_DIR "$RUN_DIR"
        BUREAU_DATABASE_URL "postgresql+asyncpg://$PG_ROLE:$PG_PASSWORD@127.0.0.1:$PG_PORT/$PG_DB"
        BUREAU_KAFKA_BOOTSTRAP "127.0.0.1:$KAFKA_PORT"
        BUREAU_KAFKA_SECURITY_PROTOCOL SASL_SSL
        BUREAU_KAFKA_SASL_MECHANISM SCRAM-SHA-512
        BUREAU_KAFKA_USERNAME admin
        BUREAU_KAFKA_PASSWORD "$(cat -- "$KAFKA_ADMIN_PASSWORD" 2>/dev/null || true)"
        BUREAU_KAFKA_CA_FILE "$KAFKA_TLS/ca.crt"
        SOFTHSM2_CONF "$HSM_CONF"
        BUREAU_PKCS11_MODULE "$module"
        BUREAU_HSM_TOKEN "$HSM_TOKEN"
        BUREAU_HSM_PIN "$HSM_PIN"
        OPENSSL_CONF "$OPENSSL_CNF"
        BUREAU_PCSC_READERS "$PCSC_READERS"
    )
    local i line name
    local -A seen=()
    for ((i = 0; i < ${#pairs[@]}; i += 2)); do
        printf 'export %s=%s\n' "${pairs[i]}" "$(quote "${pairs[i + 1]}")"
        seen[${pairs[i]}]=1
    done
    # pcscd.sh adds what PC/SC clients need (PCSCLITE_CSOCK_NAME for its private socket);
    # printers.sh the printers' URIs and spool folders.
    local script
    for script in "$PCSCD_SCRIPT" "$PRINTERS_SCRIPT"; do
        [[ -f $script ]] || continue
        while IFS= read -r line; do
            [[ $line =~ ^export\ ([A-Za-z_][A-Za-z0-9_]*)= ]] || continue
            name=${BASH_REMATCH[1]}
            [[ -z ${seen[$name]:-} ]] || continue
            printf '%s\n' "$line"
            seen[$name]=1
        done < <(BUREAU_RUN_DIR=$RUN_DIR timeout 20 bash "$script" env 2>/dev/null || true)
    done
}

write_env_file() {
    emit_env >"$ENV_FILE.tmp"
    mv -f -- "$ENV_FILE.tmp" "$ENV_FILE"
}

with_lock() { # serialise up/down/reset between concurrent callers
    # Every daemon started while the lock is held must get `9>&-`, or it keeps the lock forever.
    mkdir -p -- "$RUN_DIR"
    exec 9>"$LOCK_FILE"
    if ! flock -w 600 9; then
        die "another stack.sh holds $LOCK_FILE for more than 600 s"
    fi
}

# --- OpenSSL ---------------------------------------------------------------------------------
write_openssl_cnf() {
    cat >"$OPENSSL_CNF.tmp" <<'EOF'
# Written by deploy/local/stack.sh. Activates OpenSSL's `legacy` provider beside `default`, so
# that SoftHSM (which uses the process's OpenSSL) can do single DES (DES_ECB/DES_CBC) for the
# ISO 9797-1 algorithm 3 retail MAC. Must be in OPENSSL_CONF before the process loads OpenSSL.
openssl_conf = openssl_init

[openssl_init]
providers = provider_sect

[provider_sect]
default = default_sect
legacy = legacy_sect

[default_sect]
activate = 1

[legacy_sect]
activate = 1
EOF
    mv -f -- "$OPENSSL_CNF.tmp" "$OPENSSL_CNF"
}

# --- SoftHSM2 --------------------------------------------------------------------------------
hsm_token_present() {
    SOFTHSM2_CONF=$HSM_CONF softhsm2-util --show-slots 2>/dev/null |
        grep -Eq "^[[:space:]]*Label:[[:space:]]+${HSM_TOKEN}[[:space:]]*\$"
}

softhsm_up() {
    command -v softhsm2-util >/dev/null || die "softhsm2-util not found: run deploy/local/bootstrap.sh"
    [[ -n $(find_softhsm_module || true) ]] || die "libsofthsm2.so not found: run deploy/local/bootstrap.sh"
    mkdir -p -- "$HSM_TOKENS"
    chmod 700 -- "$HSM_TOKENS"
    cat >"$HSM_CONF.tmp" <<EOF
# Written by deploy/local/stack.sh: the private SoftHSM2 configuration (SOFTHSM2_CONF).
directories.tokendir = $HSM_TOKENS
objectstore.backend = file
log.level = ERROR
slots.removable = false
EOF
    mv -f -- "$HSM_CONF.tmp" "$HSM_CONF"
    if hsm_token_present; then
        log "softhsm: token '$HSM_TOKEN' present"
        return
    fi
    log "softhsm: initialising token '$HSM_TOKEN'"
    local out
    if ! out=$(SOFTHSM2_CONF=$HSM_CONF softhsm2-util --init-token --free --label "$HSM_TOKEN" \
        --so-pin "$HSM_SO_PIN" --pin "$HSM_PIN" 2>&1); then
        die "softhsm2-util --init-token failed (SOFTHSM2_CONF=$HSM_CONF): $out"
    fi
    hsm_token_present || die "softhsm: token '$HSM_TOKEN' not visible after init: $out"
}

# --- PostgreSQL ------------------------------------------------------------------------------
pg_running() { # 0 when our cluster's postmaster runs
    [[ -f $PG_DATA/PG_VERSION ]] || return 1
    local pg_bin
    pg_bin=$(find_pg_bin) || return 1
    as_pg "$pg_bin/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1 || return 1
    # pg_ctl (like the postmaster's own lock check) takes a zombie, or another process that
    # got the pid after a reboot, for a live server.
    pg_is_our_postmaster "$(pg_pid)"
}

pg_is_our_postmaster() {
    local cmd
    pid_alive "${1:-}" || return 1
    cmd=$(tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null) || return 1
    [[ $cmd == *"-D $PG_DATA"* ]]
}

pg_clear_stale_pid() { # a stale postmaster.pid would make the postmaster refuse to start
    local pid
    pid=$(pg_pid 2>/dev/null || true)
    if [[ -n $pid ]] && ! pg_is_our_postmaster "$pid"; then
        log "postgres: removing stale $PG_DATA/postmaster.pid (pid $pid is not our postmaster)"
        rm -f -- "$PG_DATA/postmaster.pid"
    fi
}

pg_pid() { [[ -f $PG_DATA/postmaster.pid ]] && head -n 1 -- "$PG_DATA/postmaster.pid"; }

pg_psql_super() { # run SQL from stdin as the cluster's superuser over the unix socket
    as_pg "$PG_BIN_DIR/psql" -X -q -v ON_ERROR_STOP=1 -h "$PG_SOCKET_DIR" -p "$PG_PORT" \
        -U "$PG_OS_USER" -d postgres
}

pg_up() {
    PG_BIN_DIR=$(find_pg_bin) || die "PostgreSQL server binaries (initdb, pg_ctl) not found: run deploy/local/bootstrap.sh"
    if is_root && ! id -u "$PG_OS_USER" >/dev/null 2>&1; then
        die "the '$PG_OS_USER' system user does not exist (it comes with Debian's postgresql package): run deploy/local/bootstrap.sh"
    fi
    ensure_traversable "$RUN_DIR"
    mkdir -p -- "$PG_SOCKET_DIR"
    touch -- "$PG_LOG"
    if is_root; then chown "$PG_OS_USER": -- "$PG_SOCKET_DIR" "$PG_LOG"; fi
    chmod 755 -- "$PG_SOCKET_DIR"

    if [[ ! -f $PG_DATA/PG_VERSION ]]; then
        rm -rf -- "$PG_DATA" # a half-made cluster from an interrupted initdb
        mkdir -p -- "$PG_DATA"
        if is_root; then chown "$PG_OS_USER": -- "$PG_DATA"; fi
        chmod 700 -- "$PG_DATA"
        log "postgres: initdb $PG_DATA ($("$PG_BIN_DIR/postgres" --version))"
        local out
        if ! out=$(as_pg "$PG_BIN_DIR/initdb" -D "$PG_DATA" -U "$PG_OS_USER" --encoding=UTF8 \
            --locale=C --auth-local=peer --auth-host=scram-sha-256 --no-sync 2>&1); then
            die "initdb of $PG_DATA failed (as user $PG_OS_USER): $out"
        fi
    fi
    # Our settings live in bureau.conf, included by postgresql.conf and rewritten on every up.
    cat >"$PG_DATA/bureau.conf" <<EOF
# Written by deploy/local/stack.sh on every up; included from postgresql.conf.
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PG_SOCKET_DIR'
max_connections = 200
password_encryption = scram-sha-256
# Every test schema stays until stack-reset; the e2e's pg_dump locks every table of every schema
# in one transaction, so the lock table must hold them all (64 per connection ran out at about
# 25,000 tables on a long-lived dev stack).
max_locks_per_transaction = 1024
EOF
    if is_root; then chown "$PG_OS_USER": -- "$PG_DATA/bureau.conf"; fi
    if ! grep -q "^include_if_exists = 'bureau.conf'" "$PG_DATA/postgresql.conf"; then
        printf "\n# deploy/local/stack.sh\ninclude_if_exists = 'bureau.conf'\n" >>"$PG_DATA/postgresql.conf"
    fi

    if pg_running; then
        log "postgres: already running (pid $(pg_pid))"
    else
        local holder
        holder=$(port_listener "$PG_PORT")
        [[ -z $holder ]] || die "postgres: TCP port $PG_PORT is taken by another process: $holder"
        pg_clear_stale_pid
        log "postgres: starting on 127.0.0.1:$PG_PORT"
        if ! as_pg "$PG_BIN_DIR/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -w -t 60 start >/dev/null 2>&1 9>&-; then
            die "postgres did not start (pg_ctl -D $PG_DATA start, as $PG_OS_USER)$(tail_of "$PG_LOG")"
        fi
    fi

    # The bureau role: password login over TCP, may create roles and (as the database owner)
    # schemas; not a superuser.
    local pw_sql=${PG_PASSWORD//\'/\'\'}
    pg_psql_super <<EOF || die "postgres: could not create role/database '$PG_ROLE'$(tail_of "$PG_LOG" 10)"
DO \$\$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = '$PG_ROLE') THEN
        CREATE ROLE $PG_ROLE LOGIN CREATEROLE NOSUPERUSER PASSWORD '$pw_sql';
    ELSE
        ALTER ROLE $PG_ROLE LOGIN CREATEROLE NOSUPERUSER PASSWORD '$pw_sql';
    END IF;
END
\$\$;
SELECT 'CREATE DATABASE $PG_DB OWNER $PG_ROLE'
WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_database WHERE datname = '$PG_DB') \gexec
ALTER DATABASE $PG_DB OWNER TO $PG_ROLE;
EOF
    # Check what the services do: password login over TCP.
    local out
    if ! out=$(PGPASSWORD=$PG_PASSWORD PGCONNECT_TIMEOUT=5 "$PG_BIN_DIR/psql" -X -qAt \
        -h 127.0.0.1 -p "$PG_PORT" -U "$PG_ROLE" -d "$PG_DB" -c 'SELECT 1' 2>&1); then
        die "postgres: '$PG_ROLE' cannot log in over TCP 127.0.0.1:$PG_PORT: $out"
    fi
    pg_runtime_roles
}

# --- PostgreSQL runtime roles (least privilege: docs/deploy.md, "Database roles") -------------
# The bureau role owns every schema and is used by migrations, tests and humans (env.sh); each
# service process connects as its own runtime role, granted by `python -m shared.migrate`.
PG_SERVICES=(intake keymgmt electrical graphical qa fulfillment audit)

pg_role_password() { # pg_role_password FILE ROLE: ROLE's password as FILE keeps it, else a new one
    local line
    if [[ -f $1 ]]; then
        line=$(grep -m 1 '^export BUREAU_DATABASE_URL=' "$1" || true)
        if [[ $line =~ //$2:([0-9a-f]+)@ ]]; then
            printf '%s\n' "${BASH_REMATCH[1]}"
            return 0
        fi
    fi
    od -An -N24 -tx1 /dev/urandom | tr -d ' \n'
}

write_creds() { # write_creds FILE NAME VALUE [NAME VALUE...]: export lines only we can read
    local file=$1
    shift
    (
        umask 077
        while (($# >= 2)); do
            printf 'export %s=%s\n' "$1" "$(quote "$2")"
            shift 2
        done >"$file.tmp"
    )
    mv -f -- "$file.tmp" "$file"
}

pg_runtime_roles() { # [prefix]: one LOGIN role per service (<prefix><service>), idempotent
    # A role keeps its random password across runs (read back from its creds file), so a
    # running service is not locked out. <run>/creds/<service>.db.env is what the service gets
    # (services.sh); <run>/creds/migrate-<service>.db.env what its migrate step gets.
    local creds=$RUN_DIR/creds prefix=${1:-bureau_} service role password
    local owner_url="postgresql+asyncpg://$PG_ROLE:$PG_PASSWORD@127.0.0.1:$PG_PORT/$PG_DB"
    mkdir -p -- "$creds"
    chmod 700 -- "$creds"
    for service in "${PG_SERVICES[@]}"; do
        role=$prefix$service
        password=$(pg_role_password "$creds/$service.db.env" "$role")
        pg_psql_super <<EOF || die "postgres: could not create the runtime role $role"
DO \$\$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = '$role') THEN
        CREATE ROLE $role LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION PASSWORD '$password';
    ELSIF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = '$role'
                  AND (rolsuper OR rolreplication OR rolbypassrls)) THEN
        RAISE EXCEPTION 'role $role exists as a superuser, replication or bypassrls role: drop it';
    ELSE
        ALTER ROLE $role LOGIN NOCREATEDB NOCREATEROLE PASSWORD '$password';
    END IF;
END
\$\$;
EOF
        write_creds "$creds/$service.db.env" \
            BUREAU_DATABASE_URL "postgresql+asyncpg://$role:$password@127.0.0.1:$PG_PORT/$PG_DB" \
            BUREAU_MIGRATE_ON_START false
        write_creds "$creds/migrate-$service.db.env" \
            BUREAU_DATABASE_URL "$owner_url" BUREAU_DATABASE_RUNTIME_ROLE "$role"
    done
    log "postgres: runtime roles $prefix{${PG_SERVICES[*]}} (credentials in $creds)"
}

pg_down() {
    if ! pg_running; then
        log "postgres: not running"
        return 0
    fi
    PG_BIN_DIR=$(find_pg_bin)
    local pid
    pid=$(pg_pid)
    log "postgres: stopping (pid $pid)"
    # pg_ctl's fast mode (SIGINT) ends sessions and checkpoints; SIGTERM (smart) would wait for
    # every client to leave. Then immediate (SIGQUIT), then SIGKILL.
    if as_pg "$PG_BIN_DIR/pg_ctl" -D "$PG_DATA" -m fast -w -t "$STOP_TIMEOUT" stop >/dev/null 2>&1; then
        return 0
    fi
    warn "postgres: fast shutdown took over ${STOP_TIMEOUT}s; stopping it in immediate mode"
    as_pg "$PG_BIN_DIR/pg_ctl" -D "$PG_DATA" -m immediate -w -t 10 stop >/dev/null 2>&1 || true
    if pid_alive "$pid"; then
        warn "postgres: killing pid $pid"
        kill -KILL "$pid" 2>/dev/null || true
        wait_gone "$pid" 10 || die "postgres pid $pid survives SIGKILL"
    fi
}

# --- Kafka -----------------------------------------------------------------------------------
kafka_pid() { # the pid of our broker, or nothing (clears a stale pid file)
    local pid="" p cmd
    if [[ -f $KAFKA_PID_FILE ]]; then
        pid=$(<"$KAFKA_PID_FILE")
        if [[ $pid =~ ^[0-9]+$ ]] && pid_alive "$pid" &&
            cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) &&
            [[ $cmd == *"kafka.Kafka $KAFKA_PROPS"* ]]; then
            printf '%s\n' "$pid"
            return 0
        fi
        rm -f -- "$KAFKA_PID_FILE"
    fi
    # No (valid) pid file: look for a broker started on our properties file anyway.
    for p in /proc/[0-9]*; do
        cmd=$(tr '\0' ' ' <"$p/cmdline" 2>/dev/null) || continue
        if [[ $cmd == *"kafka.Kafka $KAFKA_PROPS"* ]]; then
            printf '%s\n' "${p#/proc/}" | tee "$KAFKA_PID_FILE"
            return 0
        fi
    done
    return 0
}

kafka_render_props() {
    [[ -f $KAFKA_TEMPLATE ]] || die "missing $KAFKA_TEMPLATE"
    mkdir -p -- "$KAFKA_DATA"
    sed -e "s|@KAFKA_DATA_DIR@|$KAFKA_DATA|g" -e "s|@KAFKA_TLS_DIR@|$KAFKA_TLS|g" \
        -e "s|@KAFKA_PORT@|$KAFKA_PORT|g" -e "s|@KAFKA_CONTROLLER_PORT@|$KAFKA_CONTROLLER_PORT|g" \
        -e "s|@KAFKA_BROKER_PORT@|$KAFKA_BROKER_PORT|g" -- "$KAFKA_TEMPLATE" >"$KAFKA_PROPS.tmp"
    mv -f -- "$KAFKA_PROPS.tmp" "$KAFKA_PROPS"
}

kossl() { env -u OPENSSL_CONF openssl "$@" 2>/dev/null; } # the stack's provider config is not needed

kafka_tls_good() { # the CA and the node's certificate exist, verify and last another week
    [[ -f $KAFKA_TLS/ca.crt && -f $KAFKA_TLS/node.crt && -f $KAFKA_TLS/node.key && -f $KAFKA_TLS/node.pem ]] || return 1
    kossl verify -CAfile "$KAFKA_TLS/ca.crt" "$KAFKA_TLS/node.crt" >/dev/null || return 1
    kossl x509 -in "$KAFKA_TLS/node.crt" -noout -checkend 604800 >/dev/null
}

kafka_make_tls() { # kafka_make_tls WORK: a new CA (its key dies with WORK) and the node's cert
    local work=$1 serial
    kossl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
        -keyout "$work/ca.key" -out "$work/ca.crt" -subj "/CN=cardbureau local Kafka CA" \
        -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" || return 1
    # One certificate for the node as server (all listeners) and as client (controller, broker).
    printf '%s\n' "subjectAltName=DNS:localhost,IP:127.0.0.1" "basicConstraints=critical,CA:FALSE" \
        "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth,clientAuth" >"$work/node.ext"
    kossl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=kafka-node" \
        -keyout "$work/node.key" -out "$work/node.csr" || return 1
    serial=0x$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
    kossl x509 -req -in "$work/node.csr" -CA "$work/ca.crt" -CAkey "$work/ca.key" \
        -set_serial "$serial" -days 825 -extfile "$work/node.ext" -out "$work/node.crt" || return 1
    # Kafka's PEM keystore: the PKCS#8 key, then the certificate chain, in one file.
    cat -- "$work/node.key" "$work/node.crt" "$work/ca.crt" >"$work/node.pem" || return 1
    local f
    for f in node.key node.crt node.pem; do mv -f -- "$work/$f" "$KAFKA_TLS/$f" || return 1; done
    mv -f -- "$work/ca.crt" "$KAFKA_TLS/ca.crt" && chmod 644 -- "$KAFKA_TLS/ca.crt" "$KAFKA_TLS/node.crt"
}

kafka_tls() { # the TLS material of all three listeners (made once, again before it expires)
    if kafka_tls_good; then return 0; fi
    command -v openssl >/dev/null || die "openssl missing: run deploy/local/bootstrap.sh"
    log "kafka: making the Kafka CA and the node's certificate ($KAFKA_TLS)"
    mkdir -p -- "$KAFKA_TLS"
    chmod 755 -- "$KAFKA_TLS" # the CA is for everyone; the key files are 600
    local work rc=0
    work=$(umask 077 && mktemp -d "$KAFKA_TLS/make.XXXXXX")
    (umask 077 && kafka_make_tls "$work") || rc=$?
    rm -rf -- "$work"
    ((rc == 0)) || die "kafka: could not make the TLS certificates (openssl failed)"
}

kafka_access() { # the SCRAM users, ACLs and topics of shared/kafka_access.py; creds/<w>.kafka.env
    [[ -x $VENV_PY ]] || die "kafka: $VENV_PY missing: run deploy/local/bootstrap.sh (users and ACLs need it)"
    local out
    if ! out=$(cd -- "$REPO_ROOT" && "$VENV_PY" "$KAFKA_ACCESS" apply \
        --node-bootstrap "127.0.0.1:$KAFKA_BROKER_PORT" --client-bootstrap "127.0.0.1:$KAFKA_PORT" \
        --tls-dir "$KAFKA_TLS" --creds-dir "$CREDS_DIR" \
        --admin-password-file "$KAFKA_ADMIN_PASSWORD" 2>&1); then
        die "kafka: could not apply users and ACLs: $out"
    fi
    log "${out##*$'\n'}"
}

# --- HTTP tokens: one per principal, each workload given its own (deploy/local/tokens.py) ----
make_tokens() { # creds/<workload>.tokens.env, and creds/tools.tokens.env (the people's tokens)
    [[ -x $VENV_PY ]] || die "tokens: $VENV_PY missing: run deploy/local/bootstrap.sh"
    local out
    if ! out=$(cd -- "$REPO_ROOT" && "$VENV_PY" -m deploy.local.tokens --creds-dir "$CREDS_DIR" 2>&1); then
        die "tokens: could not write the workloads' tokens: $out"
    fi
    log "${out##*$'\n'}"
}

kafka_cluster_id() { # a Kafka cluster id: 16 random bytes, base64url without padding
    # An id starting with '-' reads as an option to StorageTool's argument parser (1 in 64
    # draws), so such an id is drawn again.
    while [[ ! -s $KAFKA_CLUSTER_ID_FILE || $(head -c 1 -- "$KAFKA_CLUSTER_ID_FILE") == - ]]; do
        head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n' >"$KAFKA_CLUSTER_ID_FILE"
    done
    cat -- "$KAFKA_CLUSTER_ID_FILE"
}

kafka_start() { # start the broker in the background (no waiting); sets KAFKA_STARTED=1
    KAFKA_STARTED=0
    [[ -f $KAFKA_LIB/kafka_2.13-$KAFKA_VERSION.jar ]] ||
        die "Kafka $KAFKA_VERSION jars not found in $KAFKA_LIB: run deploy/local/bootstrap.sh"
    local java
    java=$(find_java) || die "java not found (Kafka needs Java 17 or newer): run deploy/local/bootstrap.sh"
    kafka_tls
    kafka_render_props
    local pid sha
    sha=$(sha256sum -- "$KAFKA_PROPS" | cut -c1-64)
    pid=$(kafka_pid)
    if [[ -n $pid && $(cat -- "$KAFKA_PROPS_SHA" 2>/dev/null) != "$sha" ]]; then
        # A broker started on another configuration (one from before SASL_SSL, say): it gets
        # the new one now, its data kept.
        log "kafka: running (pid $pid) on an older server.properties; restarting it on the new one"
        kafka_down
        pid=""
    fi
    if [[ -n $pid ]]; then
        log "kafka: already running (pid $pid)"
        return 0
    fi
    local port holder
    for port in "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT" "$KAFKA_BROKER_PORT"; do
        holder=$(port_listener "$port")
        [[ -z $holder ]] || die "kafka: TCP port $port is taken by another process: $holder"
    done
    mkdir -p -- "$LOG_DIR"
    local -a jvm=("$java" "${KAFKA_HEAP_OPTS[@]}" -XX:+UseG1GC -XX:MaxGCPauseMillis=20
        -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true -Djava.net.preferIPv4Stack=true
        "-Dlog4j2.configurationFile=$KAFKA_LOG4J" "-Dkafka.logs.dir=$LOG_DIR"
        -cp "$KAFKA_LIB/*")
    if [[ ! -f $KAFKA_DATA/meta.properties ]]; then
        local cid
        cid=$(kafka_cluster_id)
        log "kafka: formatting storage $KAFKA_DATA (cluster id $cid)"
        if ! "${jvm[@]}" kafka.tools.StorageTool format "--cluster-id=$cid" -c "$KAFKA_PROPS" --standalone \
            >"$LOG_DIR/kafka-format.log" 2>&1; then
            die "kafka: storage format failed$(tail_of "$LOG_DIR/kafka-format.log")"
        fi
    fi
    log "kafka: starting on 127.0.0.1:$KAFKA_PORT (SASL_SSL; controller 127.0.0.1:$KAFKA_CONTROLLER_PORT, broker 127.0.0.1:$KAFKA_BROKER_PORT, mutual TLS)"
    : >"$LOG_DIR/kafka.out"
    printf '%s\n' "$sha" >"$KAFKA_PROPS_SHA"
    # The broker writes its own pid before exec, in a session of its own (no terminal signals).
    # shellcheck disable=SC2016 # expanded by the inner bash
    setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' _ "$KAFKA_PID_FILE" \
        "${jvm[@]}" kafka.Kafka "$KAFKA_PROPS" </dev/null >>"$LOG_DIR/kafka.out" 2>&1 9>&- &
    local launcher=$! i
    for ((i = 0; i < 50; i++)); do
        [[ -s $KAFKA_PID_FILE ]] && break
        pid_alive "$launcher" || break
        sleep 0.1
    done
    [[ -s $KAFKA_PID_FILE ]] || kafka_fail "the broker process did not start"
    KAFKA_STARTED=1
}

kafka_fail() {
    die "kafka: $1$(tail_of "$LOG_DIR/kafka.log" 40)$(tail_of "$LOG_DIR/kafka.out" 15)"
}

kafka_wait() { # wait until the broker answers on TCP and with metadata
    local deadline=$((SECONDS + KAFKA_START_TIMEOUT)) pid=""
    while ((SECONDS < deadline)); do
        pid=$(kafka_pid)
        [[ -n $pid ]] || kafka_fail "the broker process exited during startup"
        tcp_open "$KAFKA_PORT" && break
        sleep 0.3
    done
    tcp_open "$KAFKA_PORT" || kafka_fail "127.0.0.1:$KAFKA_PORT not accepting connections after ${KAFKA_START_TIMEOUT}s"
    if [[ ! -x $VENV_PY ]]; then
        warn "kafka: $VENV_PY missing, checked TCP only (run deploy/local/bootstrap.sh for the metadata check)"
        return 0
    fi
    local left=$((deadline - SECONDS)) out
    ((left > 5)) || left=5
    # Asked as the node itself (mutual TLS on the BROKER listener): users may not exist yet.
    if ! out=$("$VENV_PY" - "127.0.0.1:$KAFKA_BROKER_PORT" "$left" "$KAFKA_TLS" 2>&1 <<'EOF'
import asyncio
import sys
import time

from aiokafka.client import AIOKafkaClient
from aiokafka.helpers import create_ssl_context


async def main(bootstrap: str, timeout: float, tls: str) -> None:
    deadline = time.monotonic() + timeout
    last: object = None
    context = create_ssl_context(
        cafile=f"{tls}/ca.crt", certfile=f"{tls}/node.crt", keyfile=f"{tls}/node.key"
    )
    while time.monotonic() < deadline:
        client = AIOKafkaClient(
            bootstrap_servers=bootstrap,
            request_timeout_ms=5000,
            security_protocol="SSL",
            ssl_context=context,
        )
        try:
            await client.bootstrap()
            if client.cluster.brokers():
                return
            last = "metadata lists no broker yet"
        except Exception as exc:  # noqa: BLE001 - any failure means: not ready yet
            last = exc
        finally:
            await client.close()
        await asyncio.sleep(0.3)
    sys.exit(f"no metadata from {bootstrap} within {timeout:.0f}s: {last}")


asyncio.run(main(sys.argv[1], float(sys.argv[2]), sys.argv[3]))
EOF
    ); then
        kafka_fail "broker does not answer a metadata request: $out"
    fi
}

kafka_down() {
    local pid
    pid=$(kafka_pid)
    if [[ -z $pid ]]; then
        log "kafka: not running"
        return 0
    fi
    log "kafka: stopping (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_gone "$pid" "$STOP_TIMEOUT"; then
        warn "kafka: still running ${STOP_TIMEOUT}s after SIGTERM; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        wait_gone "$pid" 10 || die "kafka pid $pid survives SIGKILL"
    fi
    rm -f -- "$KAFKA_PID_FILE"
}

# --- pcscd (owned by deploy/local/pcscd.sh) --------------------------------------------------
pcscd_call() { # pcscd_call up|down|status
    if [[ ! -f $PCSCD_SCRIPT ]]; then
        if [[ $1 == status ]]; then
            printf '%-9s %s\n' pcscd "skipped ($PCSCD_SCRIPT not present)"
        else
            warn "pcscd: $PCSCD_SCRIPT not present, skipping pcscd/vpcd"
        fi
        return 0
    fi
    # fd 9 (the stack lock) closed: daemons started there must not hold it.
    BUREAU_RUN_DIR=$RUN_DIR bash "$PCSCD_SCRIPT" "$1" 9>&-
}

# --- subcommands -----------------------------------------------------------------------------
cmd_up() {
    with_lock
    local t0=$SECONDS
    mkdir -p -- "$LOG_DIR" "$KAFKA_DIR"
    write_openssl_cnf
    # Kafka's JVM starts in the background while PostgreSQL and SoftHSM come up.
    kafka_start
    pg_up
    softhsm_up
    kafka_wait
    if ((KAFKA_STARTED)); then log "kafka: ready (pid $(kafka_pid))"; fi
    kafka_access
    make_tokens
    write_env_file # before pcscd: a pcscd failure leaves the rest usable
    pcscd_call up || die "pcscd: $PCSCD_SCRIPT up failed"
    BUREAU_RUN_DIR=$RUN_DIR bash "$PRINTERS_SCRIPT" up 9>&- || die "printers: $PRINTERS_SCRIPT up failed"
    write_env_file # again, with what pcscd.sh and printers.sh add
    log "stack up in $((SECONDS - t0))s; environment: source $ENV_FILE (or eval \"\$($0 env)\")"
    log "the people's tokens (operators, auditor, admin, custodians): source $CREDS_DIR/tools.tokens.env"
}

cmd_kafka_up() { # Kafka alone, as `up` makes it (a private broker for tests: other ports)
    with_lock
    mkdir -p -- "$LOG_DIR" "$KAFKA_DIR"
    kafka_start
    kafka_wait
    kafka_access
    log "kafka: ready on 127.0.0.1:$KAFKA_PORT (SASL_SSL); admin password in $KAFKA_ADMIN_PASSWORD"
}

cmd_down() {
    with_lock
    kafka_down
    pg_down
    pcscd_call down || die "pcscd: $PCSCD_SCRIPT down failed"
    BUREAU_RUN_DIR=$RUN_DIR bash "$PRINTERS_SCRIPT" down 9>&- || die "printers: down failed"
}

cmd_status() {
    if [[ ${1:-} == --quiet || ${1:-} == -q ]]; then
        cmd_status >/dev/null 2>&1
        return
    fi
    local rc=0 pid
    if pg_running; then
        printf '%-9s %-8s pid %-7s 127.0.0.1:%s  db %s, socket %s\n' postgres running "$(pg_pid)" \
            "$PG_PORT" "$PG_DB" "$PG_SOCKET_DIR"
    else
        printf '%-9s %-8s %-11s 127.0.0.1:%s\n' postgres stopped "" "$PG_PORT"
        rc=1
    fi
    pid=$(kafka_pid)
    if [[ -n $pid ]] && tcp_open "$KAFKA_PORT"; then
        printf '%-9s %-8s pid %-7s 127.0.0.1:%s  SASL_SSL; controller :%s, broker :%s (mutual TLS)\n' \
            kafka running "$pid" "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT" "$KAFKA_BROKER_PORT"
    elif [[ -n $pid ]]; then
        printf '%-9s %-8s pid %-7s 127.0.0.1:%s  (process up, port closed)\n' kafka starting "$pid" "$KAFKA_PORT"
        rc=1
    else
        printf '%-9s %-8s %-11s 127.0.0.1:%s\n' kafka stopped "" "$KAFKA_PORT"
        rc=1
    fi
    if [[ -f $HSM_CONF ]] && hsm_token_present; then
        printf '%-9s %-8s %-11s token %s, %s\n' softhsm ready "" "$HSM_TOKEN" "$HSM_CONF"
    else
        printf '%-9s %-8s %-11s token %s not initialised\n' softhsm missing "" "$HSM_TOKEN"
        rc=1
    fi
    pcscd_call status || rc=1
    BUREAU_RUN_DIR=$RUN_DIR bash "$PRINTERS_SCRIPT" status || rc=1
    return "$rc"
}

cmd_reset() {
    cmd_down
    case $RUN_DIR in
        / | "$REPO_ROOT" | "${HOME:-/}" | "") die "refusing to wipe $RUN_DIR" ;;
    esac
    [[ -d $RUN_DIR ]] || return 0
    log "wiping $RUN_DIR (keeping $RUN_DIR/opt)"
    if [[ $PG_SOCKET_DIR != "$RUN_DIR"/* ]]; then rm -rf -- "$PG_SOCKET_DIR"; fi
    local entry
    shopt -s dotglob nullglob
    for entry in "$RUN_DIR"/*; do
        case ${entry##*/} in
            opt | .stack.lock) ;;
            *) rm -rf -- "$entry" ;;
        esac
    done
}

usage() {
    awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "${BASH_SOURCE[0]}"
}

main() {
    case ${1:-} in
        up) cmd_up ;;
        down) cmd_down ;;
        status) cmd_status "${2:-}" ;;
        env) emit_env ;;
        kafka-up) cmd_kafka_up ;;
        kafka-down)
            with_lock
            kafka_down
            ;;
        reset) cmd_reset ;;
        -h | --help | help) usage ;;
        *)
            usage >&2
            exit 2
            ;;
    esac
}

# Sourced (tests/integration/test_stack_pg_roles.py), it only defines its functions.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    main "$@"
fi
