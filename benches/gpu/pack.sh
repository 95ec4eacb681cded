#!/usr/bin/env bash
# Packs what the GPU measurement needs, on the development machine (it has .NET and the network; the GPU machine has
# neither): a self-contained linux-x64 build of the CLI (.NET runtime included, no SDK needed there) as one
# archive, and the Debian packages of the Vulkan loader, in folders git ignores (.publish/gpu, .gl) that the
# device tool carries. The archive must stay within 60 MiB.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
out="$root/.publish/gpu"
rm -rf "$out"
mkdir -p "$out"
dotnet publish src/RLHFSpec.Compute.Cli/RLHFSpec.Compute.Cli.csproj -c Release -r linux-x64 --self-contained true \
  -p:PublishTrimmed=false -p:DebugType=none --nologo -v quiet -o "$out/rlhfspec" >&2
tar -C "$out" -cJf "$out/rlhfspec.tar.xz" rlhfspec
rm -rf "$out/rlhfspec"
size=$(stat -c %s "$out/rlhfspec.tar.xz")
echo "pack: $out/rlhfspec.tar.xz $((size / 1024 / 1024)) MiB"
if [ "$size" -gt $((60 * 1024 * 1024)) ]; then echo "pack: error: the archive exceeds 60 MiB" >&2; exit 1; fi

# The Vulkan loader (libvulkan.so.1) as Debian packages for amd64 (.gl is in .gitignore), unpacked there only if the machine lacks it.
if ! ls "$root"/.gl/libvulkan1_*.deb >/dev/null 2>&1; then
  mkdir -p .gl /tmp/amd64/partial
  o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
  apt-get $o update -q >/dev/null
  (cd .gl && apt-get $o download -q libvulkan1 >/dev/null)
fi
ls -l .gl/*.deb
