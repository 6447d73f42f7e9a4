#!/usr/bin/env bash
# End-to-end HTTP benchmark: webproxy's hit path beside (b) memserve, webproxy's own HTTP
# stack serving the same files from memory (the ceiling of this stack), and (c) nginx
# serving the same directory when it is installed. All three run in the same run, so the
# ratios printed at the end compare like with like.
#
# Usage (from anywhere in the repository):
#
#   bench/http.sh                                   # REPEAT=3 DURATION=5: about 6 minutes
#   REPEAT=1 DURATION=2 bench/http.sh               # a smoke run, about 1 minute
#   PROXY_ARGS="-z 256K -k 4" bench/http.sh         # extra webproxy flags
#   MODE=origin bench/http.sh                       # caches in front of an HTTP origin:
#                                                   # webproxy -s, nginx proxy_cache and
#                                                   # Varnish; hits and misses (see
#                                                   # origin_mode below), about 4 minutes
#
# Needs wrk and curl; nginx is optional:   apt-get install -y wrk curl nginx-light
# MODE=origin needs nginx and Varnish:     apt-get install -y nginx-light varnish
#
# Environment:
#   REPEAT      runs of each case; the table shows the median run (default 3)
#   DURATION    seconds of each wrk run (default 5)
#   MODE        "origin" for the origin mode; otherwise webproxy serves a directory
#   CONNS       connection counts to try (default "1 16", origin mode 16); wrk uses 1 thread for 1
#               connection and 2 threads (the machine's 2 cores) otherwise
#   PROXY_ARGS  extra flags for webproxy, e.g. "-z 1M -n 16 -k 4" (default: none, so
#               webproxy's defaults: 8 threads, 8 segments of 256K, 4 slots)
#   NO_BUILD=1  skip `cargo build --release` (use the binaries already built)
#   BASELINE    a directory holding webproxy and shmcached of another build (say
#               /tmp/before/target/release): run as a fourth server, `baseline`, with the
#               same flags, interleaved with the others, and compared in a `/baseline`
#               column. The way to measure a change: both builds see the same machine.
#   CACHE_ARGS  flags for shmcached (say "--dispatch boss"): the cache is then started on
#               its own, not by webproxy's --spawn-cache; BASELINE_CACHE_ARGS the same for
#               the baseline's cache. With BASELINE set to this build's own directory, this
#               compares two settings of the cache in one run.
#   FILES       which of the files to try (default "1KiB.bin 64KiB.bin 1MiB.bin 16MiB.bin";
#               origin mode "1KiB.bin 1MiB.bin")
#
# What it does: builds webproxy, shmcached and the memserve example in release mode; writes
# 1 KiB, 64 KiB, 1 MiB and 16 MiB files of random bytes into a fresh temporary directory;
# starts
#   (a) webproxy --name benchPID --port 0 --spawn-cache DIR $PROXY_ARGS   (no -s: a miss is
#       a 503, so every 200 counted is a cache hit through shared memory),
#   (b) memserve DIR 0                        (same threads, listener tuning, response path),
#   (c) nginx with a private config in the temporary directory, when nginx is installed:
#       worker_processes auto, sendfile, tcp_nopush, tcp_nodelay, no access log, keep-alive
#       without a request limit (webproxy has none);
# checks that each serves every file byte for byte; then, REPEAT times, for each file, each
# connection count and each server in turn, runs `wrk -tT -cN -dDURATION` on
# http://127.0.0.1:PORT/FILE. Access logs are off everywhere (webproxy runs with
# RUST_LOG=info,access=off). Everything listens on 127.0.0.1 only.
#
# Output: per file and connection count, the median requests/s and MB/s (body bytes,
# 10^6 bytes per MB, i.e. requests/s x file size) of each server, and the ratios
# webproxy/memserve and webproxy/nginx. A cell marked `!` had errors (non-2xx answers,
# socket errors or timeouts) in at least one run; the wrk outputs are kept in the
# temporary directory only when KEEP=1.
#
# wrk runs on the same 2 cores as the server it measures, as it would on the machine this
# was written on; numbers are only comparable within one run.
#
# Cleanup: every process started here is stopped by its pid (SIGTERM, then SIGKILL after
# 10 s) when the script exits for any reason; webproxy stops its cache and unlinks its
# segments itself, and the script then checks /dev/shm for objects of its instance name
# and removes any it finds (with a warning).

set -euo pipefail

REPEAT=${REPEAT:-3}
DURATION=${DURATION:-5}
if [ "${MODE:-}" = origin ]; then
    CONNS=${CONNS:-16}
else
    CONNS=${CONNS:-"1 16"}
fi
PROXY_ARGS=${PROXY_ARGS:-}
KEEP=${KEEP:-0}

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

for tool in wrk curl; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "http.sh: $tool is not installed (apt-get install -y wrk curl nginx-light)" >&2
        exit 1
    fi
done
have_nginx=0
if command -v nginx >/dev/null 2>&1; then
    have_nginx=1
fi

if [ "${NO_BUILD:-0}" != 1 ]; then
    cargo build --release --bins --example memserve --example tinyserve >&2
fi
bin=${CARGO_TARGET_DIR:-$root/target}/release
for exe in "$bin/webproxy" "$bin/shmcached" "$bin/examples/memserve" "$bin/examples/tinyserve"; do
    [ -x "$exe" ] || { echo "http.sh: $exe is missing; run without NO_BUILD" >&2; exit 1; }
done

name=bench$$
tmp=$(mktemp -d /tmp/shmcache-http-bench.XXXXXX)
# nginx's workers run as another user when started as root: they must read the files.
chmod 755 "$tmp"
www=$tmp/www
mkdir -m 755 "$www"

pids=()

# shellcheck source=bench/lib.sh
source "$root/bench/lib.sh"

# The instance objects of this run (checked for at exit).
objects="^${name}b?[.-]"
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The files: name and size in bytes, smallest first.
if [ "${MODE:-}" = origin ]; then
    read -r -a files <<<"${FILES:-1KiB.bin 1MiB.bin}"
else
    read -r -a files <<<"${FILES:-1KiB.bin 64KiB.bin 1MiB.bin 16MiB.bin}"
fi
declare -A size=([1KiB.bin]=1024 [64KiB.bin]=65536 [1MiB.bin]=1048576 [16MiB.bin]=16777216)
for f in "${files[@]}"; do
    head -c "${size[$f]}" /dev/urandom >"$www/$f"
    chmod 644 "$www/$f"
done

# What our servers log once they listen.
LISTENING='listening on http://127\.0\.0\.1:[0-9]+'

# Origin mode (MODE=origin): caches in front of one HTTP origin, measured in one
# interleaved run. The origin is nginx serving the files of $www, under /hit/ with
# `Cache-Control: max-age=3600` and under /miss/ with `Cache-Control: no-store`, with
# keep-alive. In front of it, each with an empty cache:
#   webproxy  --spawn-cache EMPTY-DIR -s http://127.0.0.1:ORIGIN $PROXY_ARGS
#   nginx     proxy_cache (keys_zone 10m, max 1g), upstream keepalive 16, HTTP/1.1 upstream
#   varnish   varnishd -a … -b 127.0.0.1:ORIGIN -s malloc,256m -p thread_pools=1
#   baseline  (with BASELINE=DIR) the webproxy of another build, same flags
#   origin    the origin itself, for reference
# Cases: hits (`/hit/FILE`, fetched once before measuring, so every request counted is a
# fresh hit) and misses (`/miss/FILE?UNIQUE`: a wrk script gives every request its own
# key, so nothing is coalesced or stored; each one crosses the cache to the origin).
# Besides requests/s, a second table has the CPU time webproxy and its cache spent per
# request (from /proc/PID/stat), which moves far less with the machine's load.
origin_mode() {
    local s f kind c t url out r e key n total ticks
    for tool in varnishd nginx; do
        if ! command -v "$tool" >/dev/null 2>&1; then
            echo "http.sh: MODE=origin needs $tool (apt-get install -y nginx-light varnish)" >&2
            exit 1
        fi
    done
    local servers=(webproxy nginx varnish)
    declare -A port proc

    # The origin.
    port[origin]=$(free_port)
    mkdir -p "$tmp/origin"
    { nginx_conf_head "$tmp/origin" 4096 files; cat <<NGINX; } >"$tmp/origin/nginx.conf"
    server {
        listen 127.0.0.1:${port[origin]};
        location /hit/ { alias $www/; add_header Cache-Control "max-age=3600"; }
        location /miss/ { alias $www/; add_header Cache-Control "no-store"; }
    }
}
NGINX
    nginx -p "$tmp/origin" -c "$tmp/origin/nginx.conf" -e "$tmp/origin/error.log" \
        2>>"$tmp/origin/error.log" &
    pids+=($!)
    local origin_url=http://127.0.0.1:${port[origin]}

    # webproxy (and the baseline build), each with an empty cache of its own.
    mkdir -p "$tmp/empty"
    start_webproxy() { # key, build dir, instance
        # shellcheck disable=SC2086 # PROXY_ARGS is a list of flags
        RUST_LOG=info,access=off "$2/webproxy" --name "$3" --port 0 \
            --spawn-cache "$tmp/empty" -s "$origin_url" $PROXY_ARGS 2>"$tmp/$1.log" &
        pids+=($!)
        proc[$1]=$!
        port[$1]=$(wait_port "$!" "$tmp/$1.log" "$LISTENING")
    }
    start_webproxy webproxy "$bin" "$name"
    if [ -n "${BASELINE:-}" ]; then
        start_webproxy baseline "$BASELINE" "${name}b"
        servers+=(baseline)
    fi

    # nginx proxy_cache, as one would deploy it in front of this origin.
    port[nginx]=$(free_port)
    mkdir -p "$tmp/nginx"
    { nginx_conf_head "$tmp/nginx" 4096 proxy; cat <<NGINX; } >"$tmp/nginx/nginx.conf"
    proxy_cache_path $tmp/nginx/cache levels=1:2 keys_zone=bench:10m max_size=1g;
    upstream origin {
        server 127.0.0.1:${port[origin]};
        keepalive 16;
    }
    server {
        listen 127.0.0.1:${port[nginx]};
        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache bench;
            add_header X-Cache \$upstream_cache_status;
        }
    }
}
NGINX
    nginx -p "$tmp/nginx" -c "$tmp/nginx/nginx.conf" -e "$tmp/nginx/error.log" \
        2>>"$tmp/nginx/error.log" &
    pids+=($!)

    # Varnish, as NOTES.md starts it: its own work folder, one thread pool, memory storage.
    port[varnish]=$(free_port)
    mkdir -m 755 "$tmp/varnish"
    varnishd -F -a "127.0.0.1:${port[varnish]}" -b "127.0.0.1:${port[origin]}" \
        -s malloc,256m -n "$tmp/varnish" -p thread_pools=1 >"$tmp/varnish.log" 2>&1 &
    pids+=($!)

    # Every server must serve every file whole; a cache's second answer must be a hit.
    local hit_header
    for s in origin "${servers[@]}"; do
        for f in "${files[@]}"; do
            for i in $(seq 100); do
                curl -sf -o "$tmp/body" "http://127.0.0.1:${port[$s]}/hit/$f" && break
                sleep 0.1
            done
            if ! cmp -s "$tmp/body" "$www/$f"; then
                echo "http.sh: $s does not serve /hit/$f correctly" >&2
                exit 1
            fi
            [ "$s" != origin ] || continue
            hit_header=$(curl -sf -o "$tmp/body" -D - "http://127.0.0.1:${port[$s]}/hit/$f")
            case $s in
                varnish) grep -qiE '^X-Varnish: [0-9]+ [0-9]+' <<<"$hit_header" ;;
                *) grep -qi '^X-Cache: HIT' <<<"$hit_header" ;;
            esac || { echo "http.sh: $s did not answer /hit/$f from its cache" >&2; exit 1; }
            curl -sf -o "$tmp/body" "http://127.0.0.1:${port[$s]}/miss/$f?check" &&
                cmp -s "$tmp/body" "$www/$f" ||
                { echo "http.sh: $s does not serve /miss/$f correctly" >&2; exit 1; }
        done
    done
    rm -f "$tmp/body"
    servers+=(origin)

    # Misses: a key of its own for every request (thread number and count).
    cat >"$tmp/unique.lua" <<'LUA'
local threads = 0
function setup(thread)
    threads = threads + 1
    thread:set("tid", threads)
end
local n = 0
function request()
    n = n + 1
    return wrk.format(nil, wrk.path .. "?" .. tid .. "-" .. n)
end
LUA

    # CPU time of a webproxy and the cache it spawned (its child), in clock ticks: per
    # request, it shows what a change to the request path costs even when the machine's
    # load moves requests/s by a quarter from run to run.
    cpu_ticks() {
        local pid total=0
        for pid in "$1" $(pgrep -P "$1"); do
            total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
        done
        echo "$total"
    }
    declare -A rps errors cpu
    local kinds=(hit miss)
    total=$((REPEAT * ${#files[@]} * ${#kinds[@]} * $(wc -w <<<"$CONNS") * ${#servers[@]}))
    echo "http.sh: $total wrk runs of ${DURATION}s each; servers: ${servers[*]}" >&2
    n=0
    for rep in $(seq "$REPEAT"); do
        for kind in "${kinds[@]}"; do
            for f in "${files[@]}"; do
                for c in $CONNS; do
                    t=$((c < 2 ? 1 : 2))
                    for s in "${servers[@]}"; do
                        n=$((n + 1))
                        url=http://127.0.0.1:${port[$s]}/$kind/$f
                        out=$tmp/wrk.$s.$kind.$f.c$c.$rep.txt
                        script=()
                        [ "$kind" = hit ] || script=(-s "$tmp/unique.lua")
                        [ -z "${proc[$s]:-}" ] || ticks=$(cpu_ticks "${proc[$s]}")
                        wrk -t"$t" -c"$c" -d"${DURATION}s" --timeout 10s "${script[@]}" "$url" \
                            >"$out" 2>&1 || true
                        if [ -n "${proc[$s]:-}" ]; then
                            ticks=$(($(cpu_ticks "${proc[$s]}") - ticks))
                            cpu["$s $kind $f $c"]+=" $(awk -v t="$ticks" -v hz="$(getconf CLK_TCK)" \
                                '/requests in/ {if ($1 > 0) printf "%.1f", t / hz * 1e6 / $1}' "$out")"
                        fi
                        r=$(awk '/^Requests\/sec:/ {print $2}' "$out")
                        e=$(awk '/Non-2xx or 3xx responses:/ {n += $NF}
                                 /Socket errors:/ {gsub(/,/, ""); n += $4 + $6 + $8 + $10}
                                 END {print n + 0}' "$out")
                        [ -n "$r" ] || { r=0; e=$((e + 1)); }
                        key="$s $kind $f $c"
                        rps[$key]="${rps[$key]:-} $r"
                        errors[$key]=$((${errors[$key]:-0} + e))
                        printf 'http.sh: [%d/%d] run %d %-8s %-4s %-10s c%-3s %10.1f req/s%s\n' \
                            "$n" "$total" "$rep" "$s" "$kind" "$f" "$c" "$r" \
                            "$([ "$e" = 0 ] || echo "  ($e errors)")" >&2
                    done
                done
            done
        done
    done

    echo
    echo "shmcache origin-mode HTTP benchmark ($(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs)"
    echo "median of $REPEAT run(s) of wrk -d${DURATION}s on 127.0.0.1, requests/s"
    echo "origin:   $(nginx -v 2>&1 | sed 's/.*: //') serving files; /hit/ max-age=3600, /miss/ no-store"
    echo "webproxy: --spawn-cache EMPTY -s ORIGIN${PROXY_ARGS:+ $PROXY_ARGS}"
    echo "nginx:    proxy_cache, upstream keepalive 16"
    echo "varnish:  $(varnishd -V 2>&1 | head -1 | sed 's/ revision.*//;s/[()]//g'), -s malloc,256m -p thread_pools=1"
    [ -z "${BASELINE:-}" ] || echo "baseline: $BASELINE"
    echo "misses: every request has its own key (a wrk script), so each one reaches the origin"
    echo
    local header="case            conns"
    for s in "${servers[@]}"; do header+=$(printf ' %12s' "$s"); done
    header+=$(printf ' %14s' "/best-other")
    [ -z "${BASELINE:-}" ] || header+=$(printf ' %10s' "/baseline")
    echo "$header"
    local marked=0 line best
    for kind in "${kinds[@]}"; do
        for f in "${files[@]}"; do
            for c in $CONNS; do
                line=$(printf '%-4s %-10s %5s' "$kind" "${f%.bin}" "$c")
                declare -A med=()
                for s in "${servers[@]}"; do
                    key="$s $kind $f $c"
                    med[$s]=$(median "${rps[$key]}")
                    mark=" "
                    if [ "${errors[$key]}" != 0 ]; then
                        mark="!"
                        marked=1
                    fi
                    line+=$(awk -v r="${med[$s]}" -v m="$mark" 'BEGIN {printf " %11.1f%s", r, m}')
                done
                best=$(awk -v a="${med[nginx]}" -v b="${med[varnish]}" 'BEGIN {print (a > b ? a : b)}')
                line+=$(awk -v a="${med[webproxy]}" -v b="$best" \
                    'BEGIN {if (b > 0) printf " %13.2fx", a / b; else printf " %14s", "-"}')
                if [ -n "${BASELINE:-}" ]; then
                    line+=$(awk -v a="${med[webproxy]}" -v b="${med[baseline]}" \
                        'BEGIN {if (b > 0) printf " %9.2fx", a / b; else printf " %10s", "-"}')
                fi
                unset med
                echo "$line"
            done
        done
    done
    echo
    echo "/best-other: webproxy's requests/s divided by the better of nginx and varnish."
    [ -z "${BASELINE:-}" ] || echo "/baseline: webproxy's requests/s divided by the baseline build's."
    if [ "$marked" = 1 ]; then
        echo "!: errors (non-2xx, socket errors or timeouts) in at least one run; KEEP=1 keeps wrk's output."
    fi
    echo
    echo "CPU microseconds per request, webproxy and its cache together (median of the runs)"
    header="case            conns"
    for s in webproxy ${BASELINE:+baseline}; do header+=$(printf ' %12s' "$s"); done
    [ -z "${BASELINE:-}" ] || header+=$(printf ' %10s' "/baseline")
    echo "$header"
    for kind in "${kinds[@]}"; do
        for f in "${files[@]}"; do
            for c in $CONNS; do
                line=$(printf '%-4s %-10s %5s' "$kind" "${f%.bin}" "$c")
                for s in webproxy ${BASELINE:+baseline}; do
                    line+=$(printf ' %12s' "$(median "${cpu["$s $kind $f $c"]}")")
                done
                if [ -n "${BASELINE:-}" ]; then
                    line+=$(awk -v a="$(median "${cpu["webproxy $kind $f $c"]}")" \
                        -v b="$(median "${cpu["baseline $kind $f $c"]}")" \
                        'BEGIN {if (b > 0) printf " %9.2fx", a / b; else printf " %10s", "-"}')
                fi
                echo "$line"
            done
        done
    done
}

median() {
    tr ' ' '\n' <<<"$1" | awk 'NF' | sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'
}

if [ "${MODE:-}" = origin ]; then
    origin_mode
    exit 0
fi

declare -A port
servers=(webproxy memserve)

# Starts server $1: the webproxy of build $2 for instance $3 with its cache (flags $4, if
# any, for a cache started on its own), logging to $5; sets port[$1].
start_proxy() {
    local key=$1 dir=$2 instance=$3 cache_args=$4 log=$5 cache=(--spawn-cache "$www")
    if [ -n "$cache_args" ]; then
        # shellcheck disable=SC2086 # a list of flags
        RUST_LOG=warn "$dir/shmcached" --name "$instance" -c "$www" $cache_args 2>"$log.cache" &
        pids+=($!)
        cache=()
    fi
    # shellcheck disable=SC2086 # PROXY_ARGS is a list of flags
    RUST_LOG=info,access=off "$dir/webproxy" --name "$instance" --port 0 "${cache[@]}" \
        $PROXY_ARGS 2>"$log" &
    pids+=($!)
    port[$key]=$(wait_port "$!" "$log" "$LISTENING")
}

# (a) webproxy with its cache.
start_proxy webproxy "$bin" "$name" "${CACHE_ARGS:-}" "$tmp/webproxy.log"

# (a') the same from another build, for a before-and-after in one run.
if [ -n "${BASELINE:-}" ]; then
    for exe in webproxy shmcached; do
        [ -x "$BASELINE/$exe" ] || { echo "http.sh: $BASELINE/$exe is missing" >&2; exit 1; }
    done
    start_proxy baseline "$BASELINE" "${name}b" "${BASELINE_CACHE_ARGS:-}" "$tmp/baseline.log"
    servers+=(baseline)
fi

# (b) memserve.
"$bin/examples/memserve" "$www" 0 2>"$tmp/memserve.log" &
pids+=($!)
port[memserve]=$(wait_port "$!" "$tmp/memserve.log" "$LISTENING")

# (b') tinyserve: tiny_http with 8 threads each calling recv(), from memory.
"$bin/examples/tinyserve" "$www" 0 2>"$tmp/tinyserve.log" &
pids+=($!)
port[tinyserve]=$(wait_port "$!" "$tmp/tinyserve.log" "$LISTENING")
servers+=(tinyserve)

# (c) nginx.
if [ "$have_nginx" = 1 ]; then
    port[nginx]=$(free_port)
    mkdir -p "$tmp/nginx"
    { nginx_conf_head "$tmp/nginx" 1024 files; cat <<EOF; } >"$tmp/nginx/nginx.conf"
    server {
        listen 127.0.0.1:${port[nginx]};
        root $www;
    }
}
EOF
    nginx -p "$tmp/nginx" -c "$tmp/nginx/nginx.conf" -e "$tmp/nginx/error.log" \
        2>>"$tmp/nginx/error.log" &
    pids+=($!)
    servers+=(nginx)
fi

# Every server must answer every file correctly before anything is measured; webproxy's
# answers must be cache hits (it may take a moment to find its cache).
check() {
    local server=$1 f i headers
    for f in "${files[@]}"; do
        for i in $(seq 100); do
            if headers=$(curl -sf -o "$tmp/body" -D - "http://127.0.0.1:${port[$server]}/$f"); then
                break
            fi
            sleep 0.1
        done
        if ! cmp -s "$tmp/body" "$www/$f"; then
            echo "http.sh: $server does not serve $f correctly" >&2
            return 1
        fi
        if [[ $server =~ ^(webproxy|baseline)$ ]] && ! grep -qi '^X-Cache: HIT' <<<"$headers"; then
            echo "http.sh: webproxy answered $f without a cache hit" >&2
            return 1
        fi
    done
    rm -f "$tmp/body"
}
for s in "${servers[@]}"; do
    check "$s"
done

# Results: "SERVER FILE CONNS" -> space-separated requests/s of each run, and error counts.
declare -A rps errors lat
total=$((REPEAT * ${#files[@]} * $(wc -w <<<"$CONNS") * ${#servers[@]}))
echo "http.sh: $total wrk runs of ${DURATION}s each; servers: ${servers[*]}" >&2
n=0
for rep in $(seq "$REPEAT"); do
    for f in "${files[@]}"; do
        for c in $CONNS; do
            t=$((c < 2 ? 1 : 2))
            for s in "${servers[@]}"; do
                n=$((n + 1))
                key0="$s $f $c"
                out=$tmp/wrk.$s.$f.c$c.$rep.txt
                wrk -t"$t" -c"$c" -d"${DURATION}s" --timeout 10s --latency \
                    "http://127.0.0.1:${port[$s]}/$f" >"$out" 2>&1 || true
                r=$(awk '/^Requests\/sec:/ {print $2}' "$out")
                # The median latency, in microseconds.
                l=$(awk '$1 == "50%" {v = $2; u = 1
                         if (v ~ /us$/) u = 1; else if (v ~ /ms$/) u = 1000; else if (v ~ /s$/) u = 1e6
                         gsub(/[a-z]+$/, "", v); print v * u}' "$out")
                lat[$key0]="${lat[$key0]:-} ${l:-0}"
                e=$(awk '/Non-2xx or 3xx responses:/ {n += $NF}
                         /Socket errors:/ {gsub(/,/, ""); n += $4 + $6 + $8 + $10}
                         END {print n + 0}' "$out")
                [ -n "$r" ] || { r=0; e=$((e + 1)); }
                key="$s $f $c"
                rps[$key]="${rps[$key]:-} $r"
                errors[$key]=$((${errors[$key]:-0} + e))
                printf 'http.sh: [%d/%d] run %d %-8s %-10s c%-3s %10.1f req/s%s\n' \
                    "$n" "$total" "$rep" "$s" "$f" "$c" "$r" \
                    "$([ "$e" = 0 ] || echo "  ($e errors)")" >&2
            done
        done
    done
done

echo
echo "shmcache end-to-end HTTP benchmark ($(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs)"
echo "median of $REPEAT run(s) of wrk -d${DURATION}s on 127.0.0.1; MB/s = req/s x file size / 10^6"
echo "webproxy: --spawn-cache${PROXY_ARGS:+ $PROXY_ARGS} (no -s: only cache hits count)${CACHE_ARGS:+; shmcached $CACHE_ARGS}"
echo "memserve: webproxy's HTTP stack serving from memory (the ceiling of this stack)"
echo "tinyserve: tiny_http, 8 threads each calling recv(), serving from memory (an in-process ceiling)"
if [ "$have_nginx" = 1 ]; then
    echo "nginx:    $(nginx -v 2>&1 | sed 's/.*: //'), worker_processes auto, sendfile"
else
    echo "nginx:    not installed (apt-get install -y nginx-light), column left out"
fi
echo
header="file        conns"
for s in "${servers[@]}"; do
    header+=$(printf ' %12s %9s' "$s req/s" "MB/s")
done
[ -z "${BASELINE:-}" ] || header+=$(printf ' %10s' "/baseline")
header+=$(printf ' %10s %10s' "/memserve" "/tinyserve")
[ "$have_nginx" = 0 ] || header+=$(printf ' %10s' "/nginx")
echo "$header"
marked=0
for f in "${files[@]}"; do
    for c in $CONNS; do
        line=$(printf '%-11s %5s' "${f%.bin}" "$c")
        declare -A med=()
        for s in "${servers[@]}"; do
            key="$s $f $c"
            med[$s]=$(median "${rps[$key]}")
            mark=" "
            if [ "${errors[$key]}" != 0 ]; then
                mark="!"
                marked=1
            fi
            line+=$(awk -v r="${med[$s]}" -v b="${size[$f]}" -v m="$mark" \
                'BEGIN {printf " %11.1f%s %9.1f", r, m, r * b / 1e6}')
        done
        for s in baseline memserve tinyserve nginx; do
            [ -n "${med[$s]:-}" ] || continue
            line+=$(awk -v a="${med[webproxy]}" -v b="${med[$s]}" \
                'BEGIN {if (b > 0) printf " %9.2fx", a / b; else printf " %10s", "-"}')
        done
        unset med
        echo "$line"
    done
done
echo
echo "/baseline, /memserve, /tinyserve and /nginx: webproxy's requests/s divided by theirs (1.00x = as fast)."
[ -z "${BASELINE:-}" ] || echo "baseline: $BASELINE${BASELINE_CACHE_ARGS:+; shmcached $BASELINE_CACHE_ARGS}"
if [ "$marked" = 1 ]; then
    echo "!: errors (non-2xx, socket errors or timeouts) in at least one run; KEEP=1 keeps wrk's output."
fi

# The median of the runs' median latencies, at one connection: a request's whole round
# trip when nothing else competes for the server.
if [[ " $CONNS " == *" 1 "* ]]; then
    echo
    echo "p50 latency at 1 connection (microseconds; median of the runs' medians):"
    line=$(printf '%-11s' file)
    for s in "${servers[@]}"; do line+=$(printf ' %10s' "$s"); done
    echo "$line"
    for f in "${files[@]}"; do
        line=$(printf '%-11s' "${f%.bin}")
        for s in "${servers[@]}"; do
            line+=$(printf ' %10.0f' "$(median "${lat[$s $f 1]:-0}")")
        done
        echo "$line"
    done
fi
