#!/usr/bin/env bash
# Installs what the local stack (deploy/local/stack.sh) and the Python venv need on a fresh
# Debian 12 / Ubuntu machine, and only what is missing: run it again and it does nothing.
#   - Debian packages: PostgreSQL, SoftHSM2 + OpenSC tools, pcscd + vpcd, a JRE >= 17, Maven, ...
#   - uv (pip-installed when absent), then the venv at <repo>/.venv with `uv sync --frozen`
#   - the Apache Kafka runtime jars (Maven Central, deploy/local/kafka/pom.xml) into
#     ${BUREAU_RUN_DIR:-<repo>/.run}/opt/kafka/lib
# Runs as root, or through sudo otherwise. Works unattended (CI=true, no stdin).
#
#   deploy/local/bootstrap.sh            everything
#   deploy/local/bootstrap.sh --no-apt   skip the Debian packages (check only)
set -euo pipefail

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd -- "$SCRIPT_DIR/../.." && pwd)
RUN_DIR=${BUREAU_RUN_DIR:-$REPO_ROOT/.run}
case $RUN_DIR in
    /*) ;;
    *) RUN_DIR=$PWD/$RUN_DIR ;;
esac
readonly KAFKA_VERSION=4.3.1
readonly KAFKA_POM=$SCRIPT_DIR/kafka/pom.xml
readonly KAFKA_LIB=$RUN_DIR/opt/kafka/lib

export DEBIAN_FRONTEND=noninteractive

log() { printf '[bootstrap] %s\n' "$*" >&2; }
die() {
    printf '[bootstrap] ERROR: %s\n' "$*" >&2
    exit 1
}

DO_APT=1
for arg in "$@"; do
    case $arg in
        --no-apt) DO_APT=0 ;;
        -h | --help)
            awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "${BASH_SOURCE[0]}"
            exit 0
            ;;
        *) die "unknown argument: $arg (see --help)" ;;
    esac
done

SUDO=()
if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || die "not root and sudo is missing: run this script as root"
    SUDO=(sudo -n)
    # In CI there is nobody to type a password: sudo must work without one.
    if ! sudo -n true 2>/dev/null; then
        if [[ -n ${CI:-} || ! -t 0 ]]; then
            die "sudo needs a password and there is no terminal: run as root or allow passwordless sudo"
        fi
        SUDO=(sudo)
    fi
fi

t_start=$SECONDS

# --- Debian packages -------------------------------------------------------------------------
pkg_installed() {
    [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true) == "install ok installed" ]]
}

java_major() { # the major version of the java on PATH (0 when none)
    local v
    command -v java >/dev/null || {
        echo 0
        return
    }
    v=$(java -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java\.specification\.version = //p')
    v=${v#1.} # 1.8 -> 8
    [[ $v =~ ^[0-9]+$ ]] && echo "$v" || echo 0
}

APT_UPDATED=0
apt_update_once() {
    if ((APT_UPDATED == 0)); then
        log "apt-get update"
        "${SUDO[@]}" apt-get update -q >/dev/null || die "apt-get update failed"
        APT_UPDATED=1
    fi
}

apt_candidate() { # does apt know an installable candidate for package $1?
    local c
    c=$(apt-cache policy "$1" 2>/dev/null | sed -n 's/^ *Candidate: //p')
    [[ -n $c && $c != "(none)" ]]
}

python_has_headers() { # can the python3 that uv will pick compile extensions (pyscard)?
    python3 - <<'EOF' 2>/dev/null
import os, sys, sysconfig
sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")) else 1)
EOF
}

install_packages() {
    command -v dpkg-query >/dev/null || die "this script needs a Debian or Ubuntu system (dpkg/apt)"
    local -a wanted=(
        postgresql softhsm2 opensc pcscd libpcsclite-dev vsmartcard-vpcd swig chromium chromium-driver
        cups-ipp-utils avahi-daemon dbus fonts-dejavu-core maven build-essential pkg-config
        ca-certificates openssl iproute2 procps util-linux  # openssl: the Kafka CA and node certificate (stack.sh)
        libnss3-dev  # NSS softoken: the token the hsm_des3_wrap test runs on (CKM_DES3_ECB wrap)
    )
    python_has_headers || wanted+=(python3-dev)
    local -a missing=()
    local p
    for p in "${wanted[@]}"; do
        pkg_installed "$p" || missing+=("$p")
    done
    local jv
    jv=$(java_major)
    if ((jv < 17)); then
        log "java: found version ${jv} (need >= 17)"
        missing+=(JAVA)
    fi
    if ((${#missing[@]} == 0)); then
        log "Debian packages: all present"
        return
    fi
    if ((DO_APT == 0)); then
        die "missing Debian packages (and --no-apt given): ${missing[*]}"
    fi
    apt_update_once
    local -a install=()
    for p in "${missing[@]}"; do
        if [[ $p == JAVA ]]; then
            # Debian 12 / Ubuntu 22.04+ have 17; newer releases may only have 21 or later.
            local j found=""
            for j in openjdk-17-jre-headless openjdk-21-jre-headless openjdk-25-jre-headless default-jre-headless; do
                if apt_candidate "$j"; then
                    found=$j
                    break
                fi
            done
            [[ -n $found ]] || die "no JRE >= 17 package found by apt (tried openjdk-17/21/25-jre-headless)"
            install+=("$found")
        else
            apt_candidate "$p" || die "Debian package '$p' is not available from apt (check the sources; vsmartcard-vpcd is in Ubuntu's universe)"
            install+=("$p")
        fi
    done
    log "apt-get install ${install[*]}"
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${install[@]}" ||
        die "apt-get install failed for: ${install[*]}"
    jv=$(java_major)
    ((jv >= 17)) || die "java on PATH is still version $jv after installing a JRE (check update-alternatives --config java)"
}

# --- uv and the venv -------------------------------------------------------------------------
find_uv() {
    local c
    for c in "$(command -v uv 2>/dev/null || true)" "$HOME/.local/bin/uv" /usr/local/bin/uv; do
        if [[ -n $c && -x $c ]] && "$c" --version >/dev/null 2>&1; then
            printf '%s\n' "$c"
            return 0
        fi
    done
    return 1
}

install_uv() {
    if UV=$(find_uv); then
        log "uv: $("$UV" --version) ($UV)"
        return
    fi
    log "uv: not found, installing it with pip"
    local -a pip=(python3 -m pip)
    if ! "${pip[@]}" --version >/dev/null 2>&1; then
        ((DO_APT)) || die "python3 has no pip and --no-apt given: cannot install uv"
        apt_update_once
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3-pip ||
            die "apt-get install python3-pip failed"
    fi
    # As root: into the interpreter's prefix (Debian's pip puts scripts in /usr/local/bin, on
    # everyone's PATH); otherwise --user (~/.local/bin). uv is one static binary that touches no
    # other package, so Debian's externally-managed marker (PEP 668) is overridden for it.
    local -a opts=(--disable-pip-version-check --root-user-action=ignore)
    if python3 -c 'import sys, sysconfig, os; sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_paths()["stdlib"], "EXTERNALLY-MANAGED")) else 1)' 2>/dev/null; then
        opts+=(--break-system-packages)
    fi
    if [[ $(id -u) -ne 0 ]] && python3 -c 'import sys; sys.exit(0 if sys.prefix == sys.base_prefix else 1)'; then
        opts+=(--user)
    fi
    "${pip[@]}" install -q "${opts[@]}" uv || die "pip install uv failed"
    hash -r
    UV=$(find_uv) || die "uv installed, but found neither on PATH nor in ~/.local/bin (add ~/.local/bin to PATH)"
    log "uv: installed $("$UV" --version) ($UV)"
}

sync_venv() {
    [[ -f $REPO_ROOT/uv.lock ]] || die "no uv.lock in $REPO_ROOT"
    log "venv: uv sync --frozen ($REPO_ROOT/.venv)"
    (cd -- "$REPO_ROOT" && "$UV" sync --frozen --quiet) || die "uv sync --frozen failed in $REPO_ROOT"
}

# --- Kafka jars ------------------------------------------------------------------------------
install_kafka_jars() {
    local stamp=$KAFKA_LIB/.complete want
    want=$(sha256sum <"$KAFKA_POM" | cut -d' ' -f1)
    if [[ -f $KAFKA_LIB/kafka_2.13-$KAFKA_VERSION.jar && -f $stamp && $(<"$stamp") == "$want" ]]; then
        log "kafka: $KAFKA_VERSION jars present ($(find "$KAFKA_LIB" -name '*.jar' | wc -l) jars in $KAFKA_LIB)"
        return
    fi
    command -v mvn >/dev/null || die "mvn not found (Debian package maven)"
    local tmp=$KAFKA_LIB.tmp.$$
    rm -rf -- "$tmp"
    mkdir -p -- "$tmp"
    log "kafka: resolving org.apache.kafka:kafka_2.13:$KAFKA_VERSION with Maven into $KAFKA_LIB"
    if ! mvn -q -B -f "$KAFKA_POM" dependency:copy-dependencies -DoutputDirectory="$tmp" >"$tmp.log" 2>&1; then
        cat "$tmp.log" >&2
        rm -rf -- "$tmp" "$tmp.log"
        die "mvn dependency:copy-dependencies of $KAFKA_POM failed (output above)"
    fi
    rm -f -- "$tmp.log"
    [[ -f $tmp/kafka_2.13-$KAFKA_VERSION.jar ]] || die "Maven finished but kafka_2.13-$KAFKA_VERSION.jar is not in $tmp"
    printf '%s' "$want" >"$tmp/.complete"
    rm -rf -- "$KAFKA_LIB"
    mv -- "$tmp" "$KAFKA_LIB"
    log "kafka: $(find "$KAFKA_LIB" -name '*.jar' | wc -l) jars in $KAFKA_LIB"
}

install_packages
install_uv
sync_venv
install_kafka_jars
log "done in $((SECONDS - t_start))s"
