#!/usr/bin/env bash
# bash packaging/release.sh: the static Linux binary (x86_64-unknown-linux-musl: no shared
# libraries, runs on any x86_64 Linux) and its SHA-256, into target/release-artifacts/:
#   portok-VERSION-x86_64-unknown-linux-musl.tar.gz   (portok, README.md, LICENSE)
#   portok-VERSION-x86_64-unknown-linux-musl.tar.gz.sha256
# Needs the target and a musl C compiler for ring (rustup target add x86_64-unknown-linux-musl;
# apt-get install -y musl-tools); RELEASE_INSTALL=1 installs them.
# PROFILE=check-musl builds the quick profile CI uses to prove the build (not for release).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
target=x86_64-unknown-linux-musl
profile=${PROFILE:-release}
if ! rustup target list --installed | grep -qx "$target"; then
  [[ ${RELEASE_INSTALL:-0} == 1 ]] || { echo "release.sh: rustup target add $target (or RELEASE_INSTALL=1)" >&2; exit 1; }
  timeout 600 rustup target add "$target"
fi
if ! command -v musl-gcc >/dev/null; then
  [[ ${RELEASE_INSTALL:-0} == 1 ]] || { echo "release.sh: apt-get install -y musl-tools (or RELEASE_INSTALL=1)" >&2; exit 1; }
  timeout 600 apt-get update -qq && timeout 900 apt-get install -y -qq musl-tools >/dev/null
fi
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
cargo build --locked --bin portok --target "$target" --profile "$profile"
dir=$profile; [[ $profile == dev ]] && dir=debug
bin="${CARGO_TARGET_DIR:-$root/target}/$target/$dir/portok"
# Static, and it runs.
if command -v file >/dev/null; then
  file "$bin" | grep -Eq "statically linked|static-pie linked" || { echo "release.sh: $bin is not statically linked: $(file "$bin")" >&2; exit 1; }
fi
got=$("$bin" --version)
[[ $got == "portok $version" ]] || { echo "release.sh: $bin --version said '$got'" >&2; exit 1; }
if [[ $profile != release ]]; then
  echo "release.sh: the $profile build is static and runs ($got); artifacts come from the release profile only"
  exit 0
fi
out="$root/target/release-artifacts"
mkdir -p "$out"
name="portok-$version-$target"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/$name"
objcopy --strip-debug "$bin" "$stage/$name/portok" 2>/dev/null || cp "$bin" "$stage/$name/portok"
cp README.md LICENSE "$stage/$name/"
tar -C "$stage" -czf "$out/$name.tar.gz" "$name"
(cd "$out" && sha256sum "$name.tar.gz" > "$name.tar.gz.sha256")
echo "$out/$name.tar.gz"
cat "$out/$name.tar.gz.sha256"
