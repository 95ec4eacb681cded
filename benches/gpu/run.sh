#!/usr/bin/env bash
# The GPU measurement in one command (at most 8 minutes), from the repository root of a copy of this tree, with
# .publish/gpu/rlhfspec.tar.xz and .gl/ made by benches/gpu/pack.sh. Needs no .NET and no network.
#   benches/gpu/run.sh [MODEL_DIR] [PEAK_TFLOPS] [gpu|lavapipe]
# MODEL_DIR: the shape timed (default benches/gpu/qwen2.5-0.5b-shape: Qwen2.5-0.5B's config, random weights).
# PEAK_TFLOPS: the device's fp32 (non-tensor) peak for the matmul fraction (H100 SXM: 67; H200: 67; 0 = none).
# gpu (default): bench model --quick (batch 1, 16, 256) and the medium set's generation bench; lavapipe: only the
# batch-1 regime check and a small generation run, which is what a CPU driver finishes in minutes.
# Results go to $OUT (the device tool's) or ./gpu-results.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
model="${1:-benches/gpu/qwen2.5-0.5b-shape}"
peak="${2:-0}"
mode="${3:-gpu}"
out="${OUT:-$root/gpu-results}"
mkdir -p "$out"
log="$out/run.log"
exec > >(tee "$log") 2>&1
start=$(date +%s)

# The Vulkan loader: the carried Debian packages when the machine has none (dpkg -x into /, then ldconfig).
if ! ldconfig -p | grep -q 'libvulkan.so.1'; then
  for f in .gl/*.deb; do [ -e "$f" ] && dpkg -x "$f" /; done
  ldconfig
fi
# The NVIDIA driver's ICD manifest where containers put it, when the loader's default places have none.
if [ -z "${VK_DRIVER_FILES:-}" ] && ! ls /usr/share/vulkan/icd.d/*.json /etc/vulkan/icd.d/*.json >/dev/null 2>&1; then
  for icd in /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json /usr/share/vulkan/icd.d/nvidia_icd.json; do
    [ -f "$icd" ] && export VK_DRIVER_FILES="$icd" && break
  done
fi

bin="$root/.publish/gpu/rlhfspec/rlhfspec"
if [ ! -x "$bin" ]; then
  tar -C "$root/.publish/gpu" -xJf "$root/.publish/gpu/rlhfspec.tar.xz" || { echo "run: no build: run benches/gpu/pack.sh first"; exit 1; }
fi
export DOTNET_CLI_TELEMETRY_OPTOUT=1

step() { echo; echo "=== $* ($(( $(date +%s) - start )) s)"; }
step "devices"
"$bin" devices
step "selftest on the Vulkan device"
"$bin" selftest --device vulkan
step "dense kernels on $model: matvec bandwidth vs copy bandwidth, matmul vs peak"
"$bin" bench dense --model "$model" --device vulkan --peak-tflops "$peak" --seconds 0.3 --markdown "$out/dense.md"
if [ "$mode" = gpu ]; then
  step "bench model on $model, --dense vulkan (decode tokens/s at batch 1, 16, 256)"
  timeout 240 "$bin" bench model --model "$model" --device vulkan --dense vulkan --quick --markdown "$out/model.md"
else
  step "bench model on $model, --dense vulkan, batch-1 regime check only"
  timeout 240 "$bin" bench model --model "$model" --device vulkan --dense vulkan --regime --markdown "$out/model.md"
fi
if [ -d "$root/models/medium" ]; then
  step "bench generation on the medium set"
  if [ "$mode" = gpu ]; then gen=(--num-prompts 8 --samples-per-prompt 4 --max-new-tokens 128 --batch-sizes 1 16 256 --sweep-tokens 32); else gen=(--num-prompts 2 --samples-per-prompt 2 --max-new-tokens 32 --strategies suffix:4 --batch-sizes 0); fi
  timeout 150 "$bin" bench generation --set medium --device vulkan --dense vulkan "${gen[@]}" --markdown "$out/generation.md"
else
  step "bench generation skipped: models/medium does not exist (pretrain --set medium makes it)"
fi
step "done"
