#!/usr/bin/env bash
# Runs the public HTTP cache test suite (the one behind cache-tests.fyi: npm package
# http-cache-tests, version 0.4.5, unmodified) against webproxy and, when nginx is
# installed, against nginx's proxy_cache, both in front of the suite's own origin server,
# so that issue 12's target ("at least 140 of the 160 required tests") is measured the
# same way every time, beside a cache whose figure is known.
#
# Usage (from anywhere in the repository):
#
#   bench/cache-tests.sh                  # about 20 s: one suite run per cache (the
#                                         # client runs 100 tests at once, 3 s pauses)
#   NO_BUILD=1 bench/cache-tests.sh       # use the release binaries already built
#   SUITE_DIR=/tmp/x bench/cache-tests.sh # reuse an install (SUITE_DIR/node_modules/...)
#   OUT=dir bench/cache-tests.sh          # also keep each cache's results JSON in dir
#
# Needs node (>= 14.8) and npm; nginx is optional (apt-get install -y nginx-light).
#
# What it does:
#   1. installs http-cache-tests@0.4.5 with npm into a fresh temporary folder (unless
#      SUITE_DIR names an existing install);
#   2. starts the suite's origin, `node server/server.mjs`, on a free port (npm_config_port=0:
#      it logs the port it got);
#   3. starts webproxy (release build) with `--spawn-cache EMPTY-DIR -s http://ORIGIN`, on
#      its own instance name and a free port, so every stored response comes from the
#      origin; and nginx, when installed, with proxy_cache and proxy_cache_revalidate on,
#      from a config written into the temporary folder (no daemon, its own pid file, error
#      log and cache directory, so no system config is read or touched);
#   4. runs the suite's client, `node cli.mjs`, against each cache in turn (never both at
#      once: the suite measures time), with npm_config_base=http://127.0.0.1:PORT and both
#      npm_config_id and npm_package_config_id set empty (with either unset the client runs
#      nothing);
#   5. prints, per cache, how many tests of each kind passed, and the tests webproxy fails.
#
# How results are counted, from the suite's own files (README "Interpreting the Results",
# lib/display.mjs determineTestResult, tests/index.mjs):
#   - each test has a kind: "required" (a failure is a conformance problem; a test without
#     a kind is required), "optimal" (a failure means the cache did not reuse a response
#     it could have) or "check" (information gathering: yes or no, neither good nor bad);
#   - a test passes when its result is `true` and every test in its depends_on passes;
#   - the totals are over tests/index.mjs, the suite's test index: 160 required and 88
#     optimal tests. Five of them are browser_only, which the command-line client never
#     runs, so they count as not passed for every cache (3 required, 2 optimal);
#   - cli.mjs also runs the Surrogate-Control suite, which the index leaves out; it is
#     counted on a line of its own and not in the totals.
#
# Cleanup: every process started here (origin, webproxy, nginx, the client) is stopped by
# its pid when the script exits for any reason; webproxy stops its cache and unlinks its
# segments itself, and the script then checks /dev/shm for objects of its instance name.

set -euo pipefail

VERSION=0.4.5
OUT=${OUT:-}
KEEP=${KEEP:-0}
# Longest a whole client run may take, in seconds; a cache that never answers would
# otherwise hang the client forever (node-fetch has no timeout).
CLIENT_TIMEOUT=${CLIENT_TIMEOUT:-900}

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

for tool in node npm; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "cache-tests.sh: $tool is not installed" >&2
        exit 1
    fi
done
have_nginx=0
if command -v nginx >/dev/null 2>&1; then
    have_nginx=1
else
    echo "cache-tests.sh: nginx is not installed (apt-get install -y nginx-light); only webproxy is tested" >&2
fi

if [ "${NO_BUILD:-0}" != 1 ]; then
    cargo build --release --bins >&2
fi
bin=${CARGO_TARGET_DIR:-$root/target}/release
for exe in "$bin/webproxy" "$bin/shmcached"; do
    [ -x "$exe" ] || { echo "cache-tests.sh: $exe is missing; run without NO_BUILD" >&2; exit 1; }
done

name=ct$$
tmp=$(mktemp -d /tmp/shmcache-cache-tests.XXXXXX)
# nginx's workers run as another user when started as root: they must reach their dirs.
chmod 755 "$tmp"

pids=()

# shellcheck source=bench/lib.sh
source "$root/bench/lib.sh"

# The instance objects of this run (checked for at exit).
objects="^${name}[.-]"
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# 1. The suite.
if [ -n "${SUITE_DIR:-}" ]; then
    suite=$SUITE_DIR/node_modules/http-cache-tests
else
    echo "cache-tests.sh: installing http-cache-tests@$VERSION into $tmp/suite" >&2
    mkdir "$tmp/suite"
    npm install --prefix "$tmp/suite" --no-audit --no-fund --loglevel=error \
        "http-cache-tests@$VERSION" >&2
    suite=$tmp/suite/node_modules/http-cache-tests
fi
got=$(node -p "require('$suite/package.json').version")
if [ "$got" != "$VERSION" ]; then
    echo "cache-tests.sh: $suite is version $got, not $VERSION" >&2
    exit 1
fi

# 2. The origin. Port 0: the kernel picks a free one and the server logs it.
(cd "$suite" && exec env npm_config_port=0 npm_config_protocol=http \
    npm_config_pidfile="$tmp/origin.pid" node server/server.mjs) >"$tmp/origin.log" 2>&1 &
pids+=($!)
origin=$(wait_port "$!" "$tmp/origin.log" 'Listening on http://[^ ]*:[0-9]+')

declare -A port
caches=()

# 3. The caches. webproxy preloads nothing (an empty directory), so it stores only what
# the origin sends.
mkdir "$tmp/empty"
RUST_LOG=info,access=off "$bin/webproxy" --name "$name" --port 0 \
    --spawn-cache "$tmp/empty" -s "http://127.0.0.1:$origin" 2>"$tmp/webproxy.log" &
pids+=($!)
port[webproxy]=$(wait_port "$!" "$tmp/webproxy.log" 'listening on http://127\.0\.0\.1:[0-9]+')
caches+=(webproxy)

if [ "$have_nginx" = 1 ]; then
    port[nginx]=$(free_port)
    mkdir -p "$tmp/nginx"
    # A reverse proxy cache as published results configure it: every method forwarded
    # (nginx caches only GET and HEAD), conditional revalidation of stale entries, no
    # cache of its own making (proxy_cache_valid unset: only the origin's freshness).
    cat >"$tmp/nginx/nginx.conf" <<EOF
daemon off;
worker_processes 1;
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $tmp/nginx/body;
    proxy_temp_path $tmp/nginx/proxy;
    fastcgi_temp_path $tmp/nginx/fastcgi;
    uwsgi_temp_path $tmp/nginx/uwsgi;
    scgi_temp_path $tmp/nginx/scgi;
    proxy_cache_path $tmp/nginx/cache levels=1:2 keys_zone=tests:10m;
    server {
        listen 127.0.0.1:${port[nginx]};
        location / {
            proxy_pass http://127.0.0.1:$origin;
            proxy_cache tests;
            proxy_cache_revalidate on;
        }
    }
}
EOF
    nginx -p "$tmp/nginx" -c "$tmp/nginx/nginx.conf" -e "$tmp/nginx/error.log" \
        2>>"$tmp/nginx/error.log" &
    pids+=($!)
    for i in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/${port[nginx]}") 2>/dev/null && break
        sleep 0.1
    done
    caches=(nginx "${caches[@]}")
fi

# Counts one cache's results ($1: results JSON) against the suite's index; prints
# "KIND PASSED TOTAL" lines, "surrogate-KIND PASSED TOTAL" lines, and (with $2 = 1) one
# "fail KIND ID REASON" line per test of the index that did not pass.
cat >"$tmp/count.mjs" <<'EOF'
import { readFileSync } from 'fs'
const [suite, file, listFailures] = process.argv.slice(2)
const index = (await import(`${suite}/tests/index.mjs`)).default
const surrogate = (await import(`${suite}/tests/surrogate-control.mjs`)).default
const results = JSON.parse(readFileSync(file, 'utf8'))
const byId = new Map()
for (const s of [...index, surrogate]) for (const t of s.tests) byId.set(t.id, t)
// As lib/display.mjs decides: true, and every dependency passes (a dependency that is a
// check passes on "yes", which is also `true`).
const passes = (id) => results[id] === true &&
  (byId.get(id).depends_on || []).every(passes)
const reason = (t) => {
  const r = results[t.id]
  if (r === undefined) return t.browser_only ? 'not run (browser_only)' : 'not run'
  if (Array.isArray(r)) return `[${r[0]}] ${String(r[1]).replace(/\s+/g, ' ').trim()}`
  if (r !== true) return `harness failure (${JSON.stringify(r)})`
  const dep = (t.depends_on || []).find(d => !passes(d))
  return `dependency ${dep} did not pass`
}
const tally = (suites, prefix) => {
  const counts = {}
  for (const s of suites) for (const t of s.tests) {
    const kind = t.kind || 'required'
    counts[kind] ||= [0, 0]
    counts[kind][1]++
    if (passes(t.id)) counts[kind][0]++
    else if (listFailures === '1' && !prefix) console.log(`fail ${kind} ${t.id} ${reason(t)}`)
  }
  for (const kind of ['required', 'optimal', 'check']) {
    const [p, n] = counts[kind] || [0, 0]
    console.log(`${prefix}${kind} ${p} ${n}`)
  }
}
tally(index, '')
tally([surrogate], 'surrogate-')
EOF

# 4. The client, against each cache in turn.
declare -A summary
for c in "${caches[@]}"; do
    echo "cache-tests.sh: running the suite against $c (127.0.0.1:${port[$c]})" >&2
    (cd "$suite" && exec env npm_config_base="http://127.0.0.1:${port[$c]}" npm_config_id= \
        npm_package_config_id= timeout "$CLIENT_TIMEOUT" node --no-warnings cli.mjs) \
        >"$tmp/results-$c.json" 2>"$tmp/client-$c.log" &
    pids+=($!)
    if ! wait "$!"; then
        echo "cache-tests.sh: the client failed against $c; its log:" >&2
        cat "$tmp/client-$c.log" >&2
        exit 1
    fi
    [ -z "$OUT" ] || { mkdir -p "$OUT" && cp "$tmp/results-$c.json" "$OUT/"; }
    list=0
    [ "$c" != webproxy ] || list=1
    summary[$c]=$(node "$tmp/count.mjs" "$suite" "$tmp/results-$c.json" "$list")
done

# 5. The report.
field() { # cache, kind, column (2: passed, 3: total)
    awk -v k="$2" -v c="$3" '$1 == k {print $c}' <<<"${summary[$1]}"
}
echo
echo "HTTP cache test suite http-cache-tests@$VERSION ($(date -u '+%Y-%m-%d %H:%M UTC'))"
echo "passed of the suite's index (a test passes when it and its dependencies pass)"
echo
printf '%-10s %12s %12s %12s   %s\n' cache required optimal "check: yes" "surrogate-control (req/opt)"
for c in "${caches[@]}"; do
    printf '%-10s %12s %12s %12s   %s\n' "$c" \
        "$(field "$c" required 2)/$(field "$c" required 3)" \
        "$(field "$c" optimal 2)/$(field "$c" optimal 3)" \
        "$(field "$c" check 2)/$(field "$c" check 3)" \
        "$(field "$c" surrogate-required 2)/$(field "$c" surrogate-required 3) $(field "$c" surrogate-optimal 2)/$(field "$c" surrogate-optimal 3)"
done
if [ "$have_nginx" = 1 ]; then
    echo "nginx: $(nginx -v 2>&1 | sed 's/.*: //'), proxy_cache with proxy_cache_revalidate on"
fi
echo
for kind in required optimal; do
    n=$(grep -c "^fail $kind " <<<"${summary[webproxy]}" || true)
    echo "webproxy: $n $kind tests not passed (id, then why):"
    grep "^fail $kind " <<<"${summary[webproxy]}" | cut -d' ' -f3- | sed 's/^/  /' || true
done
