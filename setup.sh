#!/usr/bin/env bash
# The two set-up commands (see README.md):
#   ./setup.sh main   installs what is missing, builds, and runs the main job (selftest, then rlhfspec train)
#   ./setup.sh test   installs what is missing, builds, and runs the whole test suite
# A fresh Debian 12 machine needs only the .NET SDK; this installs glslc and Mesa's Vulkan driver (lavapipe).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$root"
mode="${1:-main}"

packages=(mesa-vulkan-drivers libvulkan1 glslc)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

case "$mode" in
  main)
    dotnet build RLHFSpec.Compute.sln -c Release --nologo -v quiet -clp:ErrorsOnly
    # Every kernel against its reference on every device, then the RLHF run on the default task and models
    # (pretrained on first use). Extra arguments go to `rlhfspec train`.
    ./rlhfspec selftest
    shift || true
    exec ./rlhfspec train "$@"
    ;;
  test)
    dotnet build RLHFSpec.Compute.sln -c Release --nologo -v quiet -clp:ErrorsOnly
    log="$(mktemp)"
    status=0
    # The Vulkan tests run on lavapipe here; with it installed they must run, not skip.
    RLHFSPEC_REQUIRE_VULKAN=1 dotnet test tests/RLHFSpec.Compute.Tests -c Release --no-build --nologo 2>&1 | tee "$log" || status=$?
    summary="$(grep -E "^(Passed|Failed)!" "$log" | tail -n 1 || true)"
    rm -f "$log"
    if [ -n "$summary" ]; then
      failed="$(sed -E 's/.*Failed: *([0-9]+).*/\1/' <<<"$summary")"
      passed="$(sed -E 's/.*Passed: *([0-9]+).*/\1/' <<<"$summary")"
      skipped="$(sed -E 's/.*Skipped: *([0-9]+).*/\1/' <<<"$summary")"
      echo "($skipped skipped)"
      echo "$passed passed, $failed failed"
    else
      echo "0 passed, 1 failed"
      [ "$status" -eq 0 ] && status=1
    fi
    exit "$status"
    ;;
  *)
    echo "usage: ./setup.sh main|test" >&2
    exit 2
    ;;
esac
