#!/usr/bin/env bash
# Wake-ups and system calls per cache hit. Wake-ups: the voluntary context switches (a
# thread going to sleep until another wakes it) of shmcached and of webproxy, all
# threads, per request, under wrk. System calls: a second wrk run of each cell under
# `strace -c -f` on both processes (strace slows the run, so only the counts are used),
# per request, with futex apart. Unlike requests/s, both hardly move with what else the
# machine is doing, so they show what a change to the hit path does even on a busy one.
#
#   bench/wakeups.sh                          # 1 KiB and 64 KiB, 1 and 16 connections
#   CACHE_ARGS="--dispatch boss" bench/wakeups.sh
#   FILES="1MiB" CONNS="1" bench/wakeups.sh
#   SYSCALLS=0 bench/wakeups.sh              # wake-ups only (no strace)
#
# Needs wrk, curl and strace, and release binaries (cargo build --release --bins).
# Everything listens on 127.0.0.1; both processes are stopped by their pids when it exits.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${BIN:-$root/target/release}
CACHE_ARGS=${CACHE_ARGS:-}
FILES=${FILES:-"1KiB 64KiB"}
CONNS=${CONNS:-"1 16"}
DURATION=${DURATION:-3}
SYSCALLS=${SYSCALLS:-1}
declare -A size=([1KiB]=1024 [64KiB]=65536 [1MiB]=1048576 [16MiB]=16777216)

tmp=$(mktemp -d /tmp/shmcache-wakeups.XXXXXX)
name=wake$$
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT
for f in $FILES; do head -c "${size[$f]}" /dev/urandom >"$tmp/$f.bin"; done

# shellcheck disable=SC2086 # a list of flags
RUST_LOG=warn "$bin/shmcached" --name "$name" -c "$tmp" $CACHE_ARGS 2>"$tmp/cache.log" &
cache=$!
pids+=($cache)
RUST_LOG=info,access=off "$bin/webproxy" --name "$name" --port 0 2>"$tmp/proxy.log" &
proxy=$!
pids+=($proxy)
port=
for _ in $(seq 100); do
    port=$(grep -o 'listening on http://127\.0\.0\.1:[0-9]*' "$tmp/proxy.log" | sed 's/.*://' || true)
    [ -n "$port" ] && break
    sleep 0.1
done
[ -n "$port" ] || { echo "wakeups.sh: webproxy did not start" >&2; cat "$tmp/proxy.log" >&2; exit 1; }
for f in $FILES; do
    for _ in $(seq 100); do
        curl -sf -o /dev/null "http://127.0.0.1:$port/$f.bin" && break
        sleep 0.1
    done
done

# Voluntary switches of all threads of a process.
switches() { cat /proc/"$1"/task/*/status | awk '/^voluntary_ctxt_switches/ {n += $2} END {print n}'; }

# System calls of one process under strace while wrk runs; prints "futex total" counts.
traced() {
    # strace -c rows: % time, seconds, usecs/call, calls, [errors], syscall.
    awk '$1 ~ /^[0-9.]+$/ && NF >= 5 && $NF != "total" {
             t += $4; if ($NF == "futex") f += $4 }
         END {printf "%d %d", f, t}' "$1"
}

printf '%-6s %5s %10s %11s %11s' file conns "req/s" "cache wake" "proxy wake"
[ "$SYSCALLS" = 1 ] && printf ' %11s %11s %11s %11s' "cache call" "cache futex" "proxy call" "proxy futex"
printf '\n'
for f in $FILES; do
    for c in $CONNS; do
        c0=$(switches "$cache"); p0=$(switches "$proxy")
        out=$(wrk -t"$((c < 2 ? 1 : 2))" -c"$c" -d"${DURATION}s" "http://127.0.0.1:$port/$f.bin")
        c1=$(switches "$cache"); p1=$(switches "$proxy")
        req=$(awk '/requests in/ {print $1}' <<<"$out")
        rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
        awk -v f="$f" -v c="$c" -v r="$req" -v rps="$rps" -v cs=$((c1 - c0)) -v ps=$((p1 - p0)) \
            'BEGIN {printf "%-6s %5s %10.0f %11.2f %11.2f", f, c, rps, cs / r, ps / r}'
        if [ "$SYSCALLS" = 1 ]; then
            strace -c -f -q -o "$tmp/cache.strace" -p "$cache" 2>/dev/null & st1=$!
            strace -c -f -q -o "$tmp/proxy.strace" -p "$proxy" 2>/dev/null & st2=$!
            sleep 0.5 # strace attaches to every thread first
            out=$(wrk -t"$((c < 2 ? 1 : 2))" -c"$c" -d"${DURATION}s" "http://127.0.0.1:$port/$f.bin")
            kill -INT "$st1" "$st2"; wait "$st1" "$st2" 2>/dev/null || true
            req=$(awk '/requests in/ {print $1}' <<<"$out")
            read -r cf ct <<<"$(traced "$tmp/cache.strace")"
            read -r pf pt <<<"$(traced "$tmp/proxy.strace")"
            awk -v r="$req" -v ct="$ct" -v cf="$cf" -v pt="$pt" -v pf="$pf" \
                'BEGIN {printf " %11.2f %11.2f %11.2f %11.2f", ct / r, cf / r, pt / r, pf / r}'
        fi
        printf '\n'
    done
done
