#!/usr/bin/env bash
# Build the qcsbm-bench Docker image and run the smoke benchmark in it, then check the
# results on the host and that the container ran as a non-root user.
#
# Needs root on a Debian host (it installs docker.io and debootstrap with apt-get when they
# are missing, and starts dockerd when no daemon responds). It takes about 7 minutes on 2
# cores, so it is not part of `python -m pytest`. Run it from anywhere:
#   bash tests/container/check.sh
#
# Environment variables:
#   QCSBM_CHECK_DIR   work folder for the base root file system, logs and results
#                     (default /tmp/qcsbm-container-check)
#   QCSBM_IMAGE       tag of the image to build (default qcsbm-bench:check)
#   QCSBM_BASE_IMAGE  base image; built with debootstrap when it does not exist
#                     (default qcsbm-base:bookworm)
#   QCSBM_LOCAL_MIRROR=0  let pip in the build download from PyPI even where this host's
#                     pip configuration names local package folders (file:// indexes)
#   QCSBM_MIRROR_PORT port on 127.0.0.1 that serves those folders (default 8765); a fixed
#                     port keeps the build arguments, and so Docker's layer cache, the same
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
WORK="${QCSBM_CHECK_DIR:-/tmp/qcsbm-container-check}"
IMAGE="${QCSBM_IMAGE:-qcsbm-bench:check}"
BASE_IMAGE="${QCSBM_BASE_IMAGE:-qcsbm-base:bookworm}"
DEBIAN_MIRROR="http://deb.debian.org/debian"
APP_DIR=/opt/qcsbm-bench
IMAGE_UID=1000
mkdir -p "$WORK"

log() { printf '[check %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
fail() {
    printf '[check] FAILED: %s\n' "$*" >&2
    exit 1
}

MIRROR_PID=""
cleanup() {
    if [ -n "$MIRROR_PID" ]; then
        kill "$MIRROR_PID" 2>/dev/null || true
    fi
}
trap cleanup EXIT

install_missing() {
    local missing=()
    command -v dockerd >/dev/null || missing+=(docker.io)
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    if [ "${#missing[@]}" -gt 0 ]; then
        log "installing ${missing[*]} with apt-get"
        apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
    fi
}

start_docker() {
    if docker info >/dev/null 2>&1; then
        log "using the running Docker daemon"
        return
    fi
    log "starting dockerd (log: $WORK/dockerd.log)"
    setsid dockerd >"$WORK/dockerd.log" 2>&1 &
    echo $! >"$WORK/dockerd.pid"
    for _ in $(seq 60); do
        if docker info >/dev/null 2>&1; then
            log "dockerd is up and stays running after this script (pid $(cat "$WORK/dockerd.pid"))"
            return
        fi
        sleep 1
    done
    tail -n 20 "$WORK/dockerd.log" >&2
    fail "dockerd did not answer within 60 s; see $WORK/dockerd.log"
}

build_base_image() {
    if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
        log "base image $BASE_IMAGE exists"
        return
    fi
    log "building $BASE_IMAGE with debootstrap from $DEBIAN_MIRROR"
    local rootfs="$WORK/rootfs"
    rm -rf "$rootfs"
    debootstrap --variant=minbase \
        --include=python3,python3-venv,python3-pip,ca-certificates \
        bookworm "$rootfs" "$DEBIAN_MIRROR" >"$WORK/debootstrap.log" 2>&1 \
        || fail "debootstrap failed; see $WORK/debootstrap.log"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    # pip in the build reaches PyPI through this host's network, so the base trusts the
    # certificate authorities that this host adds to Debian's (for a TLS-inspecting proxy).
    if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
        cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
        chroot "$rootfs" update-ca-certificates >/dev/null 2>&1 \
            || fail "update-ca-certificates failed in $rootfs"
        log "added this host's certificate authorities to $BASE_IMAGE"
    fi
    tar -C "$rootfs" -c . | docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["/bin/bash"]' - "$BASE_IMAGE" >/dev/null
    rm -rf "$rootfs"
}

# This host's pip may find wheels in local folders named as file:// indexes, which the
# build containers cannot see. A build with --network host reaches 127.0.0.1, so serving
# those folders there over HTTP spares the multi-GB download of torch and its CUDA
# libraries. Packages missing from them still come from PyPI.
BUILD_ARGS=()
serve_local_indexes() {
    [ "${QCSBM_LOCAL_MIRROR:-1}" = 1 ] || return 0

    local urls
    urls="$(pip config get global.extra-index-url 2>/dev/null || true)"
    local served="$WORK/mirror" http_urls=() index=0 port
    rm -rf "$served"
    mkdir -p "$served"

    for url in $urls; do
        case "$url" in
            file://*/simple | file://*/simple/) ;;
            *) continue ;;
        esac
        local simple="${url#file://}"
        simple="${simple%/}"
        [ -d "$simple" ] || continue
        ln -s "$(dirname "$simple")" "$served/index$index"
        index=$((index + 1))
    done
    [ "$index" -gt 0 ] || return 0

    port="${QCSBM_MIRROR_PORT:-8765}"
    python3 -m http.server --bind 127.0.0.1 --directory "$served" "$port" \
        >"$WORK/mirror.log" 2>&1 &
    MIRROR_PID=$!
    sleep 1
    kill -0 "$MIRROR_PID" 2>/dev/null \
        || fail "could not serve the local indexes on 127.0.0.1:$port; if the port is in use, set QCSBM_MIRROR_PORT"

    for ((i = 0; i < index; i++)); do
        http_urls+=("http://127.0.0.1:$port/index$i/simple")
    done
    BUILD_ARGS+=(--build-arg "PIP_EXTRA_INDEX_URL=${http_urls[*]}")
    log "serving $index local package index(es) to the build at http://127.0.0.1:$port"
}

install_missing
start_docker
build_base_image
serve_local_indexes

log "building $IMAGE from $ROOT on $BASE_IMAGE (log: $WORK/build.log)"
build_start=$(date +%s)
docker build --network host --force-rm \
    --build-arg "BASE_IMAGE=$BASE_IMAGE" "${BUILD_ARGS[@]}" \
    -t "$IMAGE" "$ROOT" >"$WORK/build.log" 2>&1 \
    || {
        tail -n 40 "$WORK/build.log" >&2
        fail "docker build failed; see $WORK/build.log"
    }
build_seconds=$(($(date +%s) - build_start))
cleanup
MIRROR_PID=""
image_bytes="$(docker image inspect --format '{{.Size}}' "$IMAGE")"
log "build took ${build_seconds} s; image size $((image_bytes / 1000000)) MB"

results="$WORK/results"
rm -rf "$results"
mkdir -p "$results"
chown "$IMAGE_UID:$IMAGE_UID" "$results"
log "running the smoke DAG: docker run --rm --network none -v $results:$APP_DIR/results $IMAGE --configfile workflow/config/smoke.yaml"
run_start=$(date +%s)
docker run --rm --network none -v "$results:$APP_DIR/results" "$IMAGE" \
    --configfile workflow/config/smoke.yaml >"$WORK/run.log" 2>&1 \
    || {
        tail -n 40 "$WORK/run.log" >&2
        fail "the smoke run failed; see $WORK/run.log"
    }
log "smoke run took $(($(date +%s) - run_start)) s"

table="$results/smoke/tables/table1.md"
[ -s "$table" ] || fail "$table is missing or empty"
grep -q '| 8gaussians |' "$table" || fail "$table has no 8gaussians row"
log "ok: $table exists on the host ($(wc -l <"$table") lines)"

owner="$(stat -c %u "$table")"
[ "$owner" != 0 ] || fail "$table is owned by root, so the container ran as root"
log "ok: files written by the container belong to uid $owner"

container_uid="$(docker run --rm --entrypoint id "$IMAGE" -u)"
[ "$container_uid" != 0 ] || fail "the image's default user is root"
log "ok: the image runs as uid $container_uid by default"

docker run --rm --network none -v "$results:$APP_DIR/results" "$IMAGE" \
    --configfile workflow/config/smoke.yaml --dry-run >"$WORK/rerun.log" 2>&1 \
    || fail "the dry run of the complete results failed; see $WORK/rerun.log"
grep -q 'Nothing to be done' "$WORK/rerun.log" \
    || fail "a second container wants to rerun jobs; see $WORK/rerun.log"
log "ok: a second container finds the run complete (Snakemake metadata kept in results/)"

other="$WORK/results-uid-4321"
rm -rf "$other"
mkdir -p "$other"
chown 4321:4321 "$other"
docker run --rm --network none --user 4321:4321 -v "$other:$APP_DIR/results" "$IMAGE" \
    --configfile workflow/config/smoke.yaml --dry-run >"$WORK/other-uid.log" 2>&1 \
    || fail "a dry run with --user 4321:4321 failed; see $WORK/other-uid.log"
[ "$(stat -c %u "$other/smoke/config.yaml")" = 4321 ] \
    || fail "the --user 4321:4321 run did not write $other/smoke/config.yaml as uid 4321"
log "ok: --user 4321:4321 with a folder of that owner works"

toy="$WORK/results-toy"
rm -rf "$toy"
mkdir -p "$toy"
chown "$IMAGE_UID:$IMAGE_UID" "$toy"
docker run --rm --network none -v "$toy:$APP_DIR/results" "$IMAGE" --dry-run \
    >"$WORK/toy-dry-run.log" 2>&1 \
    || fail "a dry run of the default command failed; see $WORK/toy-dry-run.log"
grep -q 'results/toy/tables/table1.md' "$WORK/toy-dry-run.log" \
    || fail "the default command does not target the toy config; see $WORK/toy-dry-run.log"
log "ok: with no arguments the image plans the toy benchmark ($(grep -m 1 -E '^total' "$WORK/toy-dry-run.log" | tr -s ' '))"

root_owned="$WORK/results-root-owned"
rm -rf "$root_owned"
mkdir -p "$root_owned"
if docker run --rm --network none -v "$root_owned:$APP_DIR/results" "$IMAGE" \
    --dry-run >"$WORK/root-owned.log" 2>&1; then
    fail "a run into a root-owned folder succeeded; expected an error"
fi
grep -q 'is not writable by uid' "$WORK/root-owned.log" \
    || fail "a root-owned results folder gave no clear error; see $WORK/root-owned.log"
log "ok: a results folder the user cannot write stops the run with: $(head -n 1 "$WORK/root-owned.log")"

torch_build="$(docker run --rm --network none --entrypoint python "$IMAGE" \
    -c 'import torch; print(torch.__version__, torch.version.cuda)')"
case "$torch_build" in
    *None) fail "the image's torch is a CPU-only build ($torch_build)" ;;
esac
log "ok: torch in the image is $torch_build (version, CUDA), so --gpus all can use it"

log "all checks passed; build ${build_seconds} s, image $((image_bytes / 1000000)) MB"
