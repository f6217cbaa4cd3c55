#!/usr/bin/env bash
# bash packaging/npm/check.sh [DIR]: install the tarballs build.sh packed (DIR, default
# target/npm) the way users do, into temporary prefixes, with no registry (--offline):
#   - `npm install -g` of both gives a `portok` whose --version is Cargo.toml's;
#   - `npx` (npm exec) of them runs it too;
#   - the launcher passes the exit code on;
#   - the main package alone (no platform package) says which platforms exist and how to
#     build from source, and exits 1.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
platform=${PORTOK_PLATFORM:-$(node -p 'process.platform + "-" + process.arch')}
dir=${1:-$root/target/npm}
main="$dir/portok-$version.tgz"
plat="$dir/portok-$platform-$version.tgz"
for f in "$main" "$plat"; do
  [[ -f $f ]] || { echo "check.sh: $f is missing: run bash packaging/npm/build.sh first" >&2; exit 1; }
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export npm_config_cache="$tmp/cache" npm_config_update_notifier=false
fail() { echo "check.sh: $*" >&2; exit 1; }
npmi() { npm install -g --offline --no-audit --no-fund --loglevel=error "$@" >/dev/null; }

npmi --prefix "$tmp/g" "$plat" "$main"
got=$("$tmp/g/bin/portok" --version)
[[ $got == "portok $version" ]] || fail "npm install -g: portok --version said '$got', not 'portok $version'"
echo "ok: npm install -g: $got"

code=0
"$tmp/g/bin/portok" --no-such-flag >/dev/null 2>&1 || code=$?
[[ $code == 2 ]] || fail "the launcher turned exit code 2 (a usage error) into $code"
echo "ok: the launcher passes the exit code on"

mkdir -p "$tmp/x"
got=$(cd "$tmp/x" && npm exec --offline --yes --loglevel=error --package="$plat" --package="$main" -- portok --version)
[[ $got == "portok $version" ]] || fail "npx portok --version said '$got'"
echo "ok: npx: $got"

npmi --prefix "$tmp/alone" "$main"
code=0
said=$("$tmp/alone/bin/portok" --version 2>&1) || code=$?
[[ $code == 1 ]] || fail "without a platform package the launcher exited $code: $said"
grep -q "cargo install portok" <<<"$said" || fail "without a platform package it did not say how to build: $said"
grep -q "linux-x64" <<<"$said" || fail "without a platform package it did not list the platforms: $said"
echo "ok: without a platform package: $(head -1 <<<"$said")"
