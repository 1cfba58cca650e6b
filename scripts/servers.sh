#!/usr/bin/env bash
# Server binaries for the compatibility matrix (`make compat`), built or unpacked from
# Debian's own archive and cached outside the tree:
#
#   ${FENCELOCK_SERVER_CACHE:-$HOME/.cache/fencelock/servers}/<redis|valkey>-<version>/
#       bin/<redis|valkey>-server, bin/<redis|valkey>-cli, bin/<redis|valkey>-benchmark
#       info          what it is, where it came from, how long the build took
#
# Usage:
#   scripts/servers.sh list              the names, one a line
#                                        (NAME-libc: a source build with MALLOC=libc)
#   scripts/servers.sh status            names, cached version, build wall time
#   scripts/servers.sh build NAME...     build (or reuse) each; prints each server's path
#   scripts/servers.sh path NAME         the cached server's path, never builds (exit 1 if none)
#   scripts/servers.sh cli NAME          the cached redis-cli/valkey-cli's path
#   scripts/servers.sh versions          what the archive offers for each name (network)
#   scripts/servers.sh clean             removes the cache
#
# A build that is cached is reused without touching the network. With
# FENCELOCK_SERVERS_REFRESH=1 `build` asks the archive again and builds a newer release of
# the same series if there is one.
#
# Sources: `apt-get source --download-only` with a private apt configuration (its own
# sources list, state and cache under the cache folder; the system's apt state is not
# touched) listing `deb-src <mirror>/debian trixie main` and `forky main`, plus
# `deb <mirror>/debian bookworm-backports main` for valkey-8.0, which is a binary package
# unpacked with `dpkg-deb -x` (not installed). The mirror is the one the system's own
# sources list uses (FENCELOCK_DEBIAN_MIRROR overrides it). Source builds use the
# upstream tarball as Debian ships it (Debian's packaging patches are not applied) and
# `make BUILD_TLS=no -C src`: jemalloc is linked statically, so valgrind cannot see their
# allocations. The name with `-libc` (`valkey-9.1-libc`) builds with MALLOC=libc instead,
# cached under <redis|valkey>-<version>-libc: valgrind sees that one.
#
# Root installs the build tools it lacks (gcc, make, pkg-config, xz-utils); anyone else
# gets the apt-get command to run.
set -euo pipefail
shopt -s inherit_errexit

CACHE=${FENCELOCK_SERVER_CACHE:-$HOME/.cache/fencelock/servers}
JOBS=${FENCELOCK_BUILD_JOBS:-2}
REFRESH=${FENCELOCK_SERVERS_REFRESH:-0}

# name        kind    package        series  program prefix
#   source: `apt-get source` of the newest <package> <series>.x in trixie/forky, built
#   binary: the newest <package> <series>.x from bookworm-backports, unpacked
#   system: Debian 12's own package, installed by `make deps`
CATALOG='
redis-7.0   system  redis-server   7.0  redis
valkey-8.0  binary  valkey-server  8.0  valkey
valkey-8.1  source  valkey         8.1  valkey
redis-8.0   source  redis          8.0  redis
valkey-9.1  source  valkey         9.1  valkey
'

say() { echo "servers.sh: $*" >&2; }
die() { say "$*"; exit 1; }

names() { awk 'NF { print $1 }' <<<"$CATALOG"; }

# Sets KIND PKG SERIES PROG MALLOC_CHOICE for a name.
lookup() {
  local line base=${1%-libc}
  line=$(awk -v n="$base" '$1 == n' <<<"$CATALOG")
  [[ -n $line ]] || die "unknown server '$1'; known: $(names | tr '\n' ' ') (and NAME-libc for source builds)"
  read -r _ KIND PKG SERIES PROG <<<"$line"
  MALLOC_CHOICE=""
  if [[ $1 == *-libc ]]; then
    [[ $KIND == source ]] || die "$1: only source builds have a MALLOC=libc variant ($base is $KIND)"
    MALLOC_CHOICE=libc
  fi
}

suffix() { [[ -n $MALLOC_CHOICE ]] && echo "-$MALLOC_CHOICE" || true; }

# The newest complete cached folder for the looked-up name, or nothing.
cached_dir() {
  local d best=""
  for d in "$CACHE/$PROG-$SERIES".*"$(suffix)"; do
    [[ -f $d/info && -x $d/bin/$PROG-server && $d != *.tmp.* ]] || continue
    # `valkey-8.1.*` also matches `valkey-8.1.1-libc`; keep only our malloc variant.
    [[ -z $(suffix) && $d == *-libc ]] && continue
    best=$(printf '%s\n%s\n' "$best" "$d" | sed '/^$/d' | sort -V | tail -n 1)
  done
  echo "$best"
}

# --- tools -------------------------------------------------------------------------------

need_tools() { # command:package ...
  local missing="" t
  for t in "$@"; do command -v "${t%%:*}" >/dev/null 2>&1 || missing="$missing ${t##*:}"; done
  [[ -z $missing ]] && return 0
  if [[ $(id -u) -ne 0 ]]; then
    die "needs:$missing. Install them with: sudo apt-get update && sudo apt-get install -y$missing"
  fi
  say "installing:$missing"
  apt-get update -q >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing >&2
}

# --- private apt -------------------------------------------------------------------------

# The Debian mirror the system uses: the first `.../debian` URI in its sources.
mirror() {
  if [[ -n ${FENCELOCK_DEBIAN_MIRROR:-} ]]; then echo "${FENCELOCK_DEBIAN_MIRROR%/}"; return; fi
  local uri
  uri=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null |
        sed -n -e 's/^[[:space:]]*deb\(-src\)\?[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\?\([a-z]\+:\/\/[^[:space:]]*\).*/\3/p' \
               -e 's/^[[:space:]]*URIs:[[:space:]]*\([a-z]\+:\/\/[^[:space:]]*\).*/\1/p' |
        sed 's:/*$::' | grep -E '/debian$' | head -n 1 || true)
  [[ -n $uri ]] && echo "${uri%/debian}" || echo "http://deb.debian.org"
}

APT_READY=0
APT_DIR="$CACHE/.apt"
apt_private() { APT_CONFIG="$APT_DIR/apt.conf" "$@"; }

apt_setup() {
  [[ $APT_READY == 1 ]] && return 0
  need_tools apt-get:apt
  local m; m=$(mirror)
  mkdir -p "$APT_DIR"/{state/lists/partial,cache/archives/partial,sources.list.d,preferences.d}
  cat >"$APT_DIR/sources.list" <<EOF
deb-src $m/debian trixie main
deb-src $m/debian forky main
deb $m/debian bookworm-backports main
EOF
  cat >"$APT_DIR/apt.conf" <<EOF
Dir::State "$APT_DIR/state";
Dir::State::status "/var/lib/dpkg/status";
Dir::Cache "$APT_DIR/cache";
Dir::Etc::SourceList "$APT_DIR/sources.list";
Dir::Etc::SourceParts "$APT_DIR/sources.list.d";
Dir::Etc::Preferences "$APT_DIR/preferences";
Dir::Etc::PreferencesParts "$APT_DIR/preferences.d";
Acquire::Languages "none";
APT::Sandbox::User "$(id -un)";
EOF
  say "reading Debian's archive at $m (trixie, forky sources; bookworm-backports)"
  apt_private apt-get update -q >&2 || die "apt-get update with $APT_DIR/apt.conf failed"
  APT_READY=1
}

# Full Debian versions of PKG (source or binary) whose upstream version is SERIES.x,
# newest first.
archive_versions() { # kind pkg series
  local what
  if [[ $1 == source ]]; then what=$(apt_private apt-cache showsrc "$2" 2>/dev/null || true)
  else what=$(apt_private apt-cache show "$2" 2>/dev/null || true); fi
  sed -n 's/^Version: //p' <<<"$what" | sort -u |
    awk -v s="$3" '{ v = $0; sub(/^[0-9]+:/, "", v); if (index(v, s ".") == 1) print $0 }' |
    sort -V -r
}

upstream_of() { local v=${1#*:}; v=${v%-*}; echo "${v%%+*}"; }  # 5:8.0.6-3 -> 8.0.6
origver_of() { local v=${1#*:}; echo "${v%-*}"; }                 # 8.1.1+dfsg1-3 -> 8.1.1+dfsg1

# --- building ----------------------------------------------------------------------------

write_info() { # dir version origin seconds
  cat >"$1/info" <<EOF
name=$NAME
program=$PROG
version=$2
origin=$3
malloc=${MALLOC_CHOICE:-default}
seconds=$4
built=$(date -u +%Y-%m-%dT%H:%M:%SZ)
cores=$(nproc)
jobs=$JOBS
EOF
}

build_source() {
  need_tools cc:gcc make:make pkg-config:pkg-config xz:xz-utils tar:tar
  apt_setup
  local versions v up orig final tmp src t0 secs log
  versions=$(archive_versions source "$PKG" "$SERIES")
  [[ -n $versions ]] || die "$NAME: Debian's archive has no $PKG $SERIES.x source"
  local dl="$CACHE/.downloads"; mkdir -p "$dl"
  for v in $versions; do
    up=$(upstream_of "$v")
    final="$CACHE/$PROG-$up$(suffix)"
    if [[ -f $final/info ]]; then echo "$final"; return 0; fi
    orig=$(ls "$dl/${PKG}_$(origver_of "$v").orig.tar."* 2>/dev/null | head -n 1 || true)
    if [[ -z $orig ]]; then
      say "$NAME: apt-get source --download-only $PKG=$v"
      # Only the upstream tarball is used; a missing .dsc/.debian.tar on the mirror
      # (seen for valkey 8.1.1+dfsg1-3+deb13u3) does not matter. apt checks each file
      # against the signed index.
      (cd "$dl" && apt_private apt-get source --download-only -q "$PKG=$v" >&2) ||
        say "$NAME: apt-get source reported errors (checking for the upstream tarball)"
      orig=$(ls "$dl/${PKG}_$(origver_of "$v").orig.tar."* 2>/dev/null | head -n 1 || true)
    fi
    if [[ -z $orig ]]; then say "$NAME: no upstream tarball for $PKG $v, trying an older one"; continue; fi
    src="$CACHE/.build/$PROG-$up$(suffix)"
    rm -rf "$src"; mkdir -p "$src"
    tar -xf "$orig" -C "$src" --strip-components=1
    log="$src/build.log"
    say "$NAME: building $PROG $up (make -j$JOBS BUILD_TLS=no${MALLOC_CHOICE:+ MALLOC=$MALLOC_CHOICE} -C src; log $log)"
    t0=$(date +%s)
    if ! make -j"$JOBS" BUILD_TLS=no ${MALLOC_CHOICE:+MALLOC=$MALLOC_CHOICE} -C "$src/src" >"$log" 2>&1; then
      tail -n 40 "$log" >&2
      die "$NAME: build of $PROG $up failed (log: $log)"
    fi
    secs=$(( $(date +%s) - t0 ))
    tmp="$final.tmp.$$"; rm -rf "$tmp"; mkdir -p "$tmp/bin"
    cp "$src/src/$PROG-server" "$src/src/$PROG-cli" "$src/src/$PROG-benchmark" "$tmp/bin/"
    write_info "$tmp" "$up" "source $PKG=$v ($(basename "$orig")), make -j$JOBS BUILD_TLS=no${MALLOC_CHOICE:+ MALLOC=$MALLOC_CHOICE}" "$secs"
    rm -rf "$final"; mv "$tmp" "$final"
    [[ ${FENCELOCK_KEEP_SOURCE:-0} == 1 ]] || rm -rf "$src"
    say "$NAME: $PROG $up built in ${secs}s"
    echo "$final"; return 0
  done
  die "$NAME: no $PKG $SERIES.x source could be fetched"
}

fetch_binary() {
  apt_setup
  local versions v up final tmp t0 secs tools="${PROG}-tools" dl="$CACHE/.downloads"
  versions=$(archive_versions binary "$PKG" "$SERIES")
  [[ -n $versions ]] || die "$NAME: Debian's archive has no $PKG $SERIES.x package"
  v=$(head -n 1 <<<"$versions"); up=$(upstream_of "$v")
  final="$CACHE/$PROG-$up"
  if [[ -f $final/info ]]; then echo "$final"; return 0; fi
  t0=$(date +%s)
  mkdir -p "$dl"
  say "$NAME: apt-get download $PKG=$v $tools=$v"
  (cd "$dl" && apt_private apt-get download -q "$PKG=$v" "$tools=$v" >&2)
  tmp="$final.tmp.$$"; rm -rf "$tmp"; mkdir -p "$tmp/root" "$tmp/bin"
  local deb
  for deb in "$dl/${PKG}_$(origver_of "$v")"-*.deb "$dl/${tools}_$(origver_of "$v")"-*.deb; do
    dpkg-deb -x "$deb" "$tmp/root"
  done
  local b
  for b in server cli benchmark; do
    [[ -e $tmp/root/usr/bin/$PROG-$b ]] && cp -L "$tmp/root/usr/bin/$PROG-$b" "$tmp/bin/"
  done
  rm -rf "$tmp/root"
  [[ -x $tmp/bin/$PROG-server ]] || die "$NAME: no /usr/bin/$PROG-server in $PKG $v"
  # Shared libraries it links (libjemalloc2, liblzf1, ...): from the system's own sources.
  local libs
  libs=$(ldd "$tmp/bin/$PROG-server" | awk '/not found/ { print $1 }' | tr '\n' ' ')
  if [[ -n $libs ]]; then
    local pkgs
    pkgs=$(apt_private apt-cache show "$tools=$v" | sed -n 's/^Depends: //p' | tr ',' '\n' |
           sed 's/(.*//; s/|.*//; s/[[:space:]]//g' | grep '^lib' | tr '\n' ' ')
    [[ $(id -u) -eq 0 ]] || die "$NAME: $PROG-server lacks $libs; install: sudo apt-get install -y $pkgs"
    say "$NAME: $PROG-server lacks $libs; installing $pkgs"
    apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $pkgs >&2
  fi
  secs=$(( $(date +%s) - t0 ))
  write_info "$tmp" "$up" "binary $PKG=$v from bookworm-backports (dpkg-deb -x)" "$secs"
  rm -rf "$final"; mv "$tmp" "$final"
  say "$NAME: $PROG $up unpacked in ${secs}s"
  echo "$final"
}

system_server() {
  [[ -x /usr/bin/$PROG-server ]] || die "$NAME is Debian 12's $PKG package: run \`make deps\` (or apt-get install -y $PKG)"
  echo "/usr/bin/$PROG-server"
}

# Prints the server's path, building or fetching it unless cached.
build_one() {
  NAME=$1; lookup "$NAME"
  [[ $KIND == system ]] && { system_server; return; }
  mkdir -p "$CACHE"
  exec 9>"$CACHE/.lock"
  flock 9
  local dir=""
  [[ $REFRESH == 1 ]] || dir=$(cached_dir)
  if [[ -z $dir ]]; then
    if [[ $KIND == source ]]; then dir=$(build_source); else dir=$(fetch_binary); fi
  fi
  flock -u 9
  echo "$dir/bin/$PROG-server"
}

cached_path() { # name program-suffix
  NAME=$1; lookup "$NAME"
  if [[ $KIND == system ]]; then
    [[ -x /usr/bin/$PROG-$2 ]] || exit 1
    echo "/usr/bin/$PROG-$2"; return
  fi
  local dir; dir=$(cached_dir)
  [[ -n $dir ]] || { say "$NAME is not built yet: scripts/servers.sh build $NAME"; exit 1; }
  echo "$dir/bin/$PROG-$2"
}

status() {
  printf '%-11s %-7s %-14s %-8s %s\n' NAME KIND VERSION BUILD_S PATH
  local n dir ver secs path
  for n in $(names); do
    NAME=$n; lookup "$n"; ver=-; secs=-; path=-
    if [[ $KIND == system ]]; then
      if [[ -x /usr/bin/$PROG-server ]]; then
        path=/usr/bin/$PROG-server
        ver=$("$path" --version | sed -n 's/.* v=\([^ ]*\).*/\1/p')
      fi
    else
      dir=$(cached_dir)
      if [[ -n $dir ]]; then
        ver=$(sed -n 's/^version=//p' "$dir/info"); secs=$(sed -n 's/^seconds=//p' "$dir/info")
        path=$dir/bin/$PROG-server
      fi
    fi
    printf '%-11s %-7s %-14s %-8s %s\n' "$n" "$KIND" "$ver" "$secs" "$path"
  done
}

versions() {
  apt_setup
  local n
  for n in $(names); do
    NAME=$n; lookup "$n"
    case $KIND in
      system) echo "$n: Debian 12 $PKG $(dpkg-query -W -f '${Version}' "$PKG" 2>/dev/null || echo '(not installed)')" ;;
      *) echo "$n: $(archive_versions "$KIND" "$PKG" "$SERIES" | tr '\n' ' ')" ;;
    esac
  done
}

cmd=${1:-}
[[ $# -gt 0 ]] && shift
case $cmd in
  list) names ;;
  status) status ;;
  build)
    [[ $# -gt 0 ]] || die "usage: scripts/servers.sh build NAME... (or 'all')"
    [[ $1 == all ]] && set -- $(names)
    for n in "$@"; do build_one "$n"; done ;;
  path) [[ $# -eq 1 ]] || die "usage: scripts/servers.sh path NAME"; cached_path "$1" server ;;
  cli) [[ $# -eq 1 ]] || die "usage: scripts/servers.sh cli NAME"; cached_path "$1" cli ;;
  versions) versions ;;
  clean) rm -rf "$CACHE"; say "removed $CACHE" ;;
  *) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
esac
