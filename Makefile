# fencelock: `make run` and `make test` each work alone on a fresh Debian 12 machine.
SHELL := /bin/bash
MODULE := $(CURDIR)/target/release/libfencelock.so
RUN_DIR := $(CURDIR)/.run
# Debian packages the build and the tests need, as "command-or-file:package"
# (valgrind and faketime are for the fault suite: memory errors, wall-clock steps;
# python3 for the README's SQLite recipe, tests/recipes.rs).
NEEDS := redis-server:redis-server /usr/lib/llvm-14/lib/libclang.so:libclang-dev cc:gcc \
         valgrind:valgrind faketime:faketime python3:python3

.PHONY: all deps build run test test-clients bench chaos compat compat-newest clean

all: build

deps:
	@missing=""; \
	for need in $(NEEDS); do \
	  what=$${need%%:*}; pkg=$${need##*:}; \
	  if [[ $$what == /* ]]; then [[ -e $$what ]] || missing="$$missing $$pkg"; \
	  else command -v $$what >/dev/null 2>&1 || missing="$$missing $$pkg"; fi; \
	done; \
	if [[ -z $$missing ]]; then exit 0; fi; \
	if [[ $$(id -u) -ne 0 ]]; then \
	  echo "fencelock needs:$$missing. Install them with:"; \
	  echo "  sudo apt-get update && sudo apt-get install -y$$missing"; exit 1; \
	fi; \
	echo "installing:$$missing"; \
	apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing

build: deps
	cargo build --release

# Foreground redis-server on 127.0.0.1:6379 with the module and the example config.
run: deps build
	mkdir -p $(RUN_DIR)
	redis-server $(CURDIR)/redis.conf.example --dir $(RUN_DIR) --loadmodule $(MODULE)

# Unit tests (pure logic, no Redis) and integration tests (real redis-server), then
# the benchmark at tiny sizes so its harness can't rot (it asserts no timings), then the
# client packages' tests.
test: deps build
	cargo test --release
	BENCH_QUICK=1 cargo bench --bench bench
	$(MAKE) --no-print-directory test-clients

# The Python and Node.js client packages (clients/*), each against a real redis-server
# with the module as built; each script installs what it needs (a venv, npm packages).
test-clients: deps build
	FENCELOCK_MODULE=$(MODULE) bash clients/python/run-tests.sh
	FENCELOCK_MODULE=$(MODULE) bash clients/node/run-tests.sh

# The fault suite at full size (under 15 minutes on 2 cores); `make test` runs it short.
CHAOS_TESTS := checker chaos_contention chaos_blocked chaos_sem_blocked chaos_frozen chaos_paused \
               chaos_crash chaos_failover chaos_clock chaos_cluster chaos_random_commands \
               chaos_valgrind chaos_corrupt_dump chaos_restored_dump
chaos: deps build
	CHAOS_FULL=1 cargo test --release $(addprefix --test ,$(CHAOS_TESTS))

# The compatibility matrix: the suite against each server in COMPAT_SERVERS, built from
# Debian's archive by scripts/servers.sh (cached in ~/.cache/fencelock/servers; the first
# build takes minutes), then a table. COMPAT_TESTS: empty for the whole suite, `core` for
# the core suites, or test file names. `scripts/servers.sh list` names the servers.
COMPAT_SERVERS ?= redis-7.0 valkey-8.0 valkey-8.1 redis-8.0 valkey-9.1
COMPAT_TESTS ?=
compat: deps build
	COMPAT_SERVERS="$(COMPAT_SERVERS)" COMPAT_TESTS="$(COMPAT_TESTS)" bash scripts/compat.sh

# The core suites on the newest Redis and the newest Valkey (CI runs this after `make test`).
COMPAT_NEWEST := redis-8.0 valkey-9.1
compat-newest: deps build
	COMPAT_SERVERS="$(COMPAT_NEWEST)" COMPAT_TESTS=core bash scripts/compat.sh

# Side-by-side figures against SET NX PX + Lua and a Redisson-style lock (~5 min).
bench: deps build
	cargo bench --bench bench

clean:
	cargo clean
	rm -rf $(RUN_DIR)
