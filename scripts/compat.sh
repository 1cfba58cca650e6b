#!/usr/bin/env bash
# The compatibility matrix (`make compat`): the test suite against each server in
# COMPAT_SERVERS (names from `scripts/servers.sh list`; each is built or reused from the
# cache first), with the module as built (`make build`), then a table.
#
#   COMPAT_SERVERS  server names (default: all of `scripts/servers.sh list`)
#   COMPAT_TESTS    empty or `all`: the whole suite (`cargo test --release`); `core`: the
#                   core suites (mutex fence durability replication blocking rwlock sem config info events fence_call
#                   cluster takeover and
#                   any tests/citizen*.rs, tests/commands*.rs); else test file names
#                   (`mutex chaos_valgrind`)
#
# A test that cannot run on a server is skipped by name and the table says so:
# random_commands_under_valgrind needs a server whose malloc valgrind can see (libc's, or
# a shared libjemalloc.so as in Debian's packages; source builds link jemalloc in, but
# NAME-libc builds use libc's) and that runs under valgrind at all (Debian's Valkey 8.0
# does not).
# Each run gets REDIS_SERVER and REDIS_CLI (the cli built with that server).
# Logs: target/compat/<server>.log. Exit status 1 when any server failed a test.
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."

servers=${COMPAT_SERVERS:-$(bash scripts/servers.sh list | tr '\n' ' ')}
tests=${COMPAT_TESTS:-all}
out=target/compat
mkdir -p "$out"

CORE="mutex fence durability replication blocking rwlock sem config info events fence_call cluster takeover"
case $tests in
  all) test_args=() ;;
  core)
    sel=$CORE
    for f in tests/citizen*.rs tests/commands*.rs; do [[ -f $f ]] && sel="$sel $(basename "$f" .rs)"; done
    test_args=(); for t in $sel; do test_args+=(--test "$t"); done ;;
  *) test_args=(); for t in $tests; do test_args+=(--test "$t"); done ;;
esac
# Does the selection include the file that holds the valgrind test (tests/chaos_valgrind.rs)?
runs_file() { [[ $tests == all ]] || [[ " ${test_args[*]} " == *" --test $1 "* ]]; }

# Why valgrind cannot check the server, or nothing when it can (the same rule as
# valgrind_can_check in tests/support/valgrind.rs): its malloc must be libc's or a shared
# libjemalloc.so, and it must run under valgrind at all.
valgrind_unfit() {
  local malloc
  malloc=$("$1" --version | sed -n 's/.*malloc=\([^ ]*\).*/\1/p')
  if [[ $malloc != libc ]] && ! ldd "$1" 2>/dev/null | grep -q 'libjemalloc\.so'; then
    echo "malloc=${malloc:-unknown} is linked into the binary: valgrind cannot see its heap"; return
  fi
  command -v valgrind >/dev/null || return 0  # the test itself says valgrind is missing
  valgrind -q --error-exitcode=99 "$1" --version >/dev/null 2>&1 ||
    echo "it does not run under valgrind (\`valgrind $(basename "$1") --version\` fails)"
}

fmt_s() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }

declare -A R_VER R_RES R_PASS R_FAIL R_IGN R_NOTRUN R_WALL R_BUILD R_FAILED
failed_any=0
for s in $servers; do
  echo "=== $s: building or reusing the server (scripts/servers.sh build $s)"
  t0=$(date +%s)
  if ! bin=$(bash scripts/servers.sh build "$s"); then
    R_RES[$s]="NO SERVER"; R_WALL[$s]=0; R_BUILD[$s]="failed"; failed_any=1; continue
  fi
  bt=$(( $(date +%s) - t0 ))
  if [[ $bin == /usr/bin/* ]]; then R_BUILD[$s]=system; elif ((bt > 2)); then R_BUILD[$s]=$(fmt_s $bt); else R_BUILD[$s]=cached; fi
  R_VER[$s]=$("$bin" --version | sed -n 's/.* v=\([^ ]*\).*/\1/p')
  cli=$(bash scripts/servers.sh cli "$s" 2>/dev/null || true)  # the redis-cli next to it
  skip_args=(); notrun=""
  if runs_file chaos_valgrind; then
    why=$(valgrind_unfit "$bin")
    if [[ -n $why ]]; then
      skip_args=(--skip random_commands_under_valgrind)
      notrun="random_commands_under_valgrind ($why)"
      echo "NOT RUN on $s ($bin): random_commands_under_valgrind: $why"
    fi
  fi
  R_NOTRUN[$s]=$notrun
  log="$out/$s.log"
  echo "=== $s: REDIS_SERVER=$bin REDIS_CLI=${cli:-redis-cli} cargo test --release --no-fail-fast ${test_args[*]} -- ${skip_args[*]} (log: $log)"
  t0=$(date +%s)
  set +e
  REDIS_SERVER=$bin REDIS_CLI=${cli:-redis-cli} cargo test --release --no-fail-fast "${test_args[@]}" -- "${skip_args[@]}" 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  set -e
  R_WALL[$s]=$(( $(date +%s) - t0 ))
  # Per test binary: `Running tests/x.rs (...)`, then `test name ... ok|FAILED|ignored`.
  read -r p f i < <(awk '/^test .* \.\.\. ok$/ { p++ } /^test .* \.\.\. FAILED$/ { f++ }
                        /^test .* \.\.\. ignored/ { i++ } END { print p+0, f+0, i+0 }' "$log")
  R_PASS[$s]=$p; R_FAIL[$s]=$f; R_IGN[$s]=$i
  # Each failed test with the first line of its panic message.
  R_FAILED[$s]=$(awk '
      /^ *Running / { file = $2; sub(/^tests\//, "", file); sub(/\.rs$/, "", file) }
      /^test .* \.\.\. FAILED$/ { failed[++n] = $2; where[$2] = file }
      /^---- .* stdout ----$/ { cur = $2; grab = 0 }
      grab == 1 { if (!(cur in msg)) msg[cur] = $0; grab = 0 }
      cur != "" && / panicked at / && !(cur in msg) { grab = 1 }
      END { for (k = 1; k <= n; k++) { t = failed[k]; m = msg[t]; if (length(m) > 160) m = substr(m, 1, 160) "...";
                                       print "  " where[t] "::" t (m != "" ? ": " m : "") } }' "$log")
  # A test binary that died without a verdict (a crash) has no FAILED line of its own.
  crashed=$(grep -o "process didn't exit successfully: \`[^\` ]*" "$log" | sed 's/.*deps\///; s/-[0-9a-f]*$//' | sort -u || true)
  for c in $crashed; do
    grep -q "^  $c::" <<<"${R_FAILED[$s]}" || R_FAILED[$s]+=$'\n'"  $c (the test binary died; see the log)"
  done
  if [[ $rc -eq 0 ]]; then R_RES[$s]=ok; else R_RES[$s]=FAILED; failed_any=1; fi
done

echo
echo "=== compatibility matrix (tests: $tests; module: ${FENCELOCK_MODULE:-target/release/libfencelock.so})"
printf '%-15s %-9s %-7s %6s %6s %7s %9s %8s  %s\n' server version result passed failed ignored "test time" build "not run"
for s in $servers; do
  printf '%-15s %-9s %-7s %6s %6s %7s %9s %8s  %s\n' "$s" "${R_VER[$s]:--}" "${R_RES[$s]}" "${R_PASS[$s]:--}" \
    "${R_FAIL[$s]:--}" "${R_IGN[$s]:--}" "$(fmt_s "${R_WALL[$s]}")" "${R_BUILD[$s]}" "${R_NOTRUN[$s]:--}"
done
for s in $servers; do
  if [[ -n ${R_FAILED[$s]:-} ]]; then
    echo; echo "failed on $s (log: $out/$s.log):"
    sed '/^$/d' <<<"${R_FAILED[$s]}" | awk 'NR <= 25 { print } END { if (NR > 25) print "  ... and " NR - 25 " more" }'
  fi
done
exit $failed_any
