# Shared by the scripts in bench/ (sourced, not run): stopping the processes a script
# started, by their pids, and politely first, and leaving nothing behind. A script sets
# `pids` (what it started), `objects` (a pattern of its instance's names in /dev/shm),
# `tmp` and `KEEP`, and runs `trap cleanup EXIT`.

# Whether pid $1 is running; a zombie is gone for our purposes (`stop` reaps it).
alive() {
    [ -e "/proc/$1" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null
}

# Stops pid $1: SIGTERM (so that webproxy and shmcached unlink what they own), then
# SIGKILL if it is still there after 10 s; reaps it.
stop() {
    local pid=$1 i what
    what=$(cat "/proc/$pid/comm" 2>/dev/null || echo gone)
    kill -TERM "$pid" 2>/dev/null || return 0
    for i in $(seq 100); do
        alive "$pid" || break
        sleep 0.1
    done
    if alive "$pid"; then
        echo "$(basename "$0"): pid $pid ($what) ignored SIGTERM for 10 s; killing it" >&2
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

# At exit: stops every process the script started, removes (and warns of) any object of
# its instance left in /dev/shm, which fails the run, and removes its temporary folder
# unless KEEP=1.
cleanup() {
    local rc=$? pid left
    trap - EXIT INT TERM
    for pid in "${pids[@]}"; do
        stop "$pid"
    done
    left=$(ls /dev/shm | grep -E "$objects" || true)
    if [ -n "$left" ]; then
        echo "$(basename "$0"): warning: objects left in /dev/shm, removing them:" $left >&2
        for obj in $left; do rm -f "/dev/shm/$obj"; done
        [ "$rc" -ne 0 ] || rc=1
    fi
    if [ "$KEEP" = 1 ]; then
        echo "$(basename "$0"): logs and outputs kept in $tmp" >&2
    else
        rm -rf "$tmp"
    fi
    exit "$rc"
}

# Waits until the server with pid $1 logs a line matching the extended regex $3 in its
# log $2 (":PORT" at the end of the match); prints PORT.
wait_port() {
    local pid=$1 log=$2 pattern=$3 i port
    for i in $(seq 200); do
        port=$(grep -oE "$pattern" "$log" 2>/dev/null | head -1 | grep -oE '[0-9]+$' || true)
        if [ -n "$port" ]; then
            echo "$port"
            return 0
        fi
        alive "$pid" || break
        sleep 0.1
    done
    echo "$(basename "$0"): server pid $pid did not start; its log:" >&2
    cat "$log" >&2
    return 1
}

# A port nobody listens on (nginx and varnishd need one on their command lines). It is
# taken below the kernel's ephemeral range (32768 and up by default), where a port can
# also be the local end of some outgoing connection, which a listener then cannot bind.
free_port() {
    local p low
    read -r low _ </proc/sys/net/ipv4/ip_local_port_range
    for p in $(shuf -i 20000-$((low > 20100 ? low - 1 : 32767)) -n 100); do
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return 0
        fi
    done
    return 1
}

# The head of an nginx configuration of the benchmark's own in folder $1: no daemon, its
# pid, logs and temporary paths in that folder, no access log, keep-alive without a
# request limit, TCP_NODELAY; $2 worker connections; $3 `files` for a server of files
# (sendfile, tcp_nopush, an open-file cache) or `proxy`. The caller writes the rest of
# the `http` block (its server blocks) and closes it.
nginx_conf_head() {
    local dir=$1 conns=$2 kind=$3
    cat <<NGINX
daemon off;
worker_processes auto;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections $conns; }
http {
    access_log off;
    tcp_nodelay on;
    keepalive_requests 1000000000;
    keepalive_timeout 65s;
    client_body_temp_path $dir/body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
NGINX
    if [ "$kind" = files ]; then
        printf '    default_type application/octet-stream;\n    sendfile on;\n'
        printf '    tcp_nopush on;\n    open_file_cache max=64 inactive=60s;\n'
    fi
}
