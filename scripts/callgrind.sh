#!/usr/bin/env bash
# Instructions per request on the server, for one workload, under callgrind:
#
#   scripts/callgrind.sh WORKLOAD [N]     (N requests per measured batch, default 20000)
#
# Starts redis-server (REDIS_SERVER, default Debian's; SERVER_ARGS adds arguments, e.g.
# SERVER_ARGS="--appendonly yes") under callgrind with the module
# (FENCELOCK_MODULE, default target/release/libfencelock.so), prepares the keys the
# workload needs, then sends two batches of N and 2N requests through `redis-cli --pipe`,
# zeroing the counters before each and dumping them after. Instructions per request are
# (I(2N) - I(N)) / N, which cancels what does not grow with the requests (the event loop's
# idle passes, the pipe's connection). Prints that figure and leaves the dumps and an
# annotated profile of the 2N batch (inclusive, per function) in $OUT (default
# target/callgrind/WORKLOAD).
#
# Workloads (each key is used once, so every request does the same work):
#   lock-fresh    LOCK.ACQUIRE on keys never used          set-fresh   SET NX PX, succeeding
#   lock-busy     LOCK.ACQUIRE on keys another owner holds set-busy    SET NX PX, failing
#   lock-release  LOCK.RELEASE by the holder               cad-release EVALSHA compare-and-delete
#   lock-reenter  LOCK.ACQUIRE by the holder (re-entry)    lock-extend LOCK.EXTEND by the holder
#   floor-fresh   FLOOR.ACQUIRE on keys never used: the floor of any module's fresh grant
#                 (examples/floor.rs: open the key, store a value, reply; built here)
#   floor-busy    FLOOR.ACQUIRE on keys it holds: the floor of a refused acquire
set -euo pipefail
cd "$(dirname "$0")/.."
workload=${1:?usage: scripts/callgrind.sh WORKLOAD [N]}
n=${2:-20000}
server=${REDIS_SERVER:-/usr/bin/redis-server}
module=${FENCELOCK_MODULE:-$PWD/target/release/libfencelock.so}
out=${OUT:-$PWD/target/callgrind/$workload}
extra=()
if [[ $workload == floor-* ]]; then
    cargo build --release --example floor -q
    extra=(--loadmodule "$PWD/target/release/examples/libfloor.so")
fi
rm -rf "$out"; mkdir -p "$out"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cli() { redis-cli -p "$port" "$@"; }

cad='if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) else return 0 end'

# The requests of batch $1 for keys $2..$3 (prefix per batch so keys never repeat).
requests() {
    local batch=$1 from=$2 to=$3 sha=${4:-}
    awk -v w="$workload" -v b="$batch" -v from="$from" -v to="$to" -v sha="$sha" 'BEGIN {
        for (i = from; i < to; i++) {
            k = "k:" b ":" i
            if (w == "floor-fresh" || w == "floor-busy") {
                printf "*4\r\n$13\r\nFLOOR.ACQUIRE\r\n$%d\r\n%s\r\n$2\r\nme\r\n$5\r\n30000\r\n", length(k), k
            } else if (w == "lock-fresh" || w == "lock-busy" || w == "lock-reenter") {
                owner = (w == "lock-busy") ? "other" : "me"
                printf "*4\r\n$12\r\nLOCK.ACQUIRE\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n$5\r\n30000\r\n", length(k), k, length(owner), owner
            } else if (w == "set-fresh" || w == "set-busy") {
                printf "*6\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$2\r\nme\r\n$2\r\nNX\r\n$2\r\nPX\r\n$5\r\n30000\r\n", length(k), k
            } else if (w == "lock-release") {
                printf "*3\r\n$12\r\nLOCK.RELEASE\r\n$%d\r\n%s\r\n$2\r\nme\r\n", length(k), k
            } else if (w == "lock-extend") {
                printf "*4\r\n$11\r\nLOCK.EXTEND\r\n$%d\r\n%s\r\n$2\r\nme\r\n$5\r\n60000\r\n", length(k), k
            } else if (w == "cad-release") {
                printf "*5\r\n$7\r\nEVALSHA\r\n$40\r\n%s\r\n$1\r\n1\r\n$%d\r\n%s\r\n$2\r\nme\r\n", sha, length(k), k
            }
        }
    }'
}

# What must exist before batch $1's requests run: the keys, held by "me".
prepare() {
    local batch=$1 from=$2 to=$3
    case $workload in
        lock-busy|lock-release|lock-reenter|lock-extend)
            requests_as lock-fresh "$batch" "$from" "$to" | cli --pipe >/dev/null ;;
        set-busy|cad-release)
            requests_as set-fresh "$batch" "$from" "$to" | cli --pipe >/dev/null ;;
        floor-busy)
            requests_as floor-fresh "$batch" "$from" "$to" | cli --pipe >/dev/null ;;
    esac
}
requests_as() { local w=$1; shift; workload=$w requests "$@"; }

valgrind --tool=callgrind --callgrind-out-file="$out/callgrind.out.%p" --dump-instr=no \
    --collect-atstart=yes "$server" --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
    --dir "$out" --loadmodule "$module" "${extra[@]}" ${SERVER_ARGS:-} >"$out/server.log" 2>&1 &
vg=$!
trap 'kill $vg 2>/dev/null || true' EXIT
for _ in $(seq 600); do cli PING >/dev/null 2>&1 && break; sleep 0.1; done
sha=$(cli SCRIPT LOAD "$cad")

measure() {
    local batch=$1 count=$2
    prepare "$batch" 0 "$count"
    callgrind_control -z "$vg" >/dev/null 2>&1
    requests "$batch" 0 "$count" "$sha" | cli --pipe >"$out/pipe.$batch.log"
    callgrind_control -d "batch$batch" "$vg" >/dev/null 2>&1
    grep -q "errors: 0" "$out/pipe.$batch.log" || { cat "$out/pipe.$batch.log"; exit 1; }
}
measure 1 "$n"
measure 2 $((2 * n))
cli SHUTDOWN NOSAVE >/dev/null 2>&1 || true
wait $vg 2>/dev/null || true
trap - EXIT

total() { grep -h '^summary:' "$1" | awk '{print $2}'; }
f1=$(ls "$out"/callgrind.out.*.1 | head -1)
f2=$(ls "$out"/callgrind.out.*.2 | head -1)
i1=$(total "$f1"); i2=$(total "$f2")
callgrind_annotate --inclusive=yes "$f2" >"$out/annotate.txt" 2>/dev/null || true
echo "$workload: $(( (i2 - i1) / n )) instructions per request (I(2N)=$i2, I(N)=$i1, N=$n)"
