#!/usr/bin/env bash
# bash packaging/npm/build.sh: the npm packages, in the esbuild/Biome pattern, into target/npm/:
#   portok-VERSION.tgz                the main package: a tiny Node launcher (bin/portok.js) and
#                                     optionalDependencies on every platform package
#   portok-PLATFORM-VERSION.tgz       this platform's package (os, cpu, the binary)
# VERSION is Cargo.toml's. The platforms are packaging/npm/platforms.json's.
#
# Knobs (env):
#   PORTOK_BIN=PATH     pack this binary instead of building one (CI reuses its release build)
#   PORTOK_TARGET=T     build for this Rust target (default: this machine's)
#   PORTOK_PLATFORM=P   the npm platform it is for, e.g. linux-arm64 (default: this machine's)
#   OUT=DIR             where the tarballs go (default: target/npm)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
here=packaging/npm
command -v node >/dev/null && command -v npm >/dev/null || {
  echo "build.sh: node and npm are needed (apt-get install -y nodejs npm)" >&2; exit 1; }
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
[[ -n $version ]] || { echo "build.sh: no version in Cargo.toml" >&2; exit 1; }
platform=${PORTOK_PLATFORM:-$(node -p 'process.platform + "-" + process.arch')}
exe=$(node -p "(require('./$here/platforms.json')['$platform'] || {}).exe || ''")
[[ -n $exe ]] || {
  echo "build.sh: $platform is not in $here/platforms.json ($(node -p "Object.keys(require('./$here/platforms.json')).join(', ')"))" >&2
  exit 1
}
out=${OUT:-$root/target/npm}
bin=${PORTOK_BIN:-}
if [[ -z $bin ]]; then
  if [[ -n ${PORTOK_TARGET:-} ]]; then
    cargo build --release --locked --bin portok --target "$PORTOK_TARGET"
    bin="${CARGO_TARGET_DIR:-$root/target}/$PORTOK_TARGET/release/$exe"
  else
    cargo build --release --locked --bin portok
    bin="${CARGO_TARGET_DIR:-$root/target}/release/$exe"
  fi
fi
[[ -x $bin ]] || { echo "build.sh: $bin is not an executable" >&2; exit 1; }

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$out"

# The platform package: the binary, without its debug info (the release profile keeps some
# for profiling; users do not need it).
plat="$stage/portok-$platform"
mkdir -p "$plat/bin"
if command -v objcopy >/dev/null && [[ $exe != *.exe ]]; then
  objcopy --strip-debug "$bin" "$plat/bin/$exe"
else
  cp "$bin" "$plat/bin/$exe"
fi
chmod 755 "$plat/bin/$exe"
VERSION=$version PLATFORM=$platform node -e '
  const p = require(process.argv[1])[process.env.PLATFORM];
  const pkg = {
    name: "portok-" + process.env.PLATFORM,
    version: process.env.VERSION,
    description: "The portok binary for " + process.env.PLATFORM + " (installed by the portok package)",
    license: "MIT",
    repository: { type: "git", url: "git+https://github.com/portok-dev/portok.git" },
    os: [p.os],
    cpu: [p.cpu],
    files: ["bin/" + p.exe],
    preferUnplugged: true,
  };
  console.log(JSON.stringify(pkg, null, 2));
' "$root/$here/platforms.json" > "$plat/package.json"

# The main package: the launcher, the platform list, the README.
main="$stage/portok"
mkdir -p "$main/bin"
cp "$here/portok/bin/portok.js" "$main/bin/portok.js"
cp "$here/platforms.json" "$main/platforms.json"
cp README.md LICENSE "$main/"
VERSION=$version node -e '
  const platforms = require(process.argv[1]);
  const optional = {};
  for (const key of Object.keys(platforms)) optional["portok-" + key] = process.env.VERSION;
  const pkg = {
    name: "portok",
    version: process.env.VERSION,
    description: "A fast local-development router: NAME.localhost on one loopback port, HTTPS, zero-downtime redeploys",
    license: "MIT",
    repository: { type: "git", url: "git+https://github.com/portok-dev/portok.git" },
    keywords: ["localhost", "proxy", "https", "dev-server", "reverse-proxy"],
    bin: { portok: "bin/portok.js" },
    files: ["bin/portok.js", "platforms.json", "README.md", "LICENSE"],
    engines: { node: ">=18" },
    optionalDependencies: optional,
  };
  console.log(JSON.stringify(pkg, null, 2));
' "$root/$here/platforms.json" > "$main/package.json"

(cd "$out" && npm pack --silent "$plat" >/dev/null && npm pack --silent "$main" >/dev/null)
for t in "portok-$platform-$version.tgz" "portok-$version.tgz"; do
  [[ -f $out/$t ]] || { echo "build.sh: npm pack did not write $out/$t" >&2; exit 1; }
  echo "$out/$t"
done
