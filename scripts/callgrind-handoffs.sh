#!/usr/bin/env bash
# Instructions per grant on the server while CLIENTS clients contend on one lock, under
# callgrind (issue 11: does a handoff cost more with more waiters?):
#
#   scripts/callgrind-handoffs.sh CLIENTS [GRANTS]     (default 3000 grants)
#
# Starts redis-server under callgrind with the module, zeroes the counters, runs
# examples/handoffs.rs (each client loops LOCK.ACQUIRE ... WAIT 0, LOCK.RELEASE) until
# GRANTS grants were made, dumps, and prints instructions per grant (connection set-up of
# the clients included). Leaves an annotated profile in target/callgrind/handoffs-CLIENTS.
set -euo pipefail
cd "$(dirname "$0")/.."
clients=${1:?usage: scripts/callgrind-handoffs.sh CLIENTS [GRANTS]}
grants=${2:-3000}
server=${REDIS_SERVER:-/usr/bin/redis-server}
module=${FENCELOCK_MODULE:-$PWD/target/release/libfencelock.so}
out=$PWD/target/callgrind/handoffs-$clients
rm -rf "$out"; mkdir -p "$out"
cargo build --release --example handoffs -q
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
valgrind --tool=callgrind --callgrind-out-file="$out/callgrind.out.%p" --dump-instr=no "$server" --port "$port" \
    --bind 127.0.0.1 --save '' --appendonly no --dir "$out" --loadmodule "$module" >"$out/server.log" 2>&1 &
vg=$!
trap 'kill $vg 2>/dev/null || true' EXIT
for _ in $(seq 600); do redis-cli -p "$port" PING >/dev/null 2>&1 && break; sleep 0.1; done
callgrind_control -z "$vg" >/dev/null 2>&1
granted=$(target/release/examples/handoffs "$port" "$clients" "$grants")
callgrind_control -d handoffs "$vg" >/dev/null 2>&1
redis-cli -p "$port" SHUTDOWN NOSAVE >/dev/null 2>&1 || true
wait $vg 2>/dev/null || true
trap - EXIT
dump=$(ls "$out"/callgrind.out.*.1 | head -1)
total=$(grep -h '^summary:' "$dump" | awk '{print $2}')
callgrind_annotate --inclusive=yes "$dump" >"$out/annotate.txt" 2>/dev/null || true
echo "$clients clients: $((total / granted)) instructions per grant ($granted grants)"
