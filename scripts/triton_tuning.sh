# Sourced by the GPU check scripts: keep Triton's autotuning results between machines.
#
# fla-core's kernels (the fast Mamba-2 path) are autotuned on first use: Triton compiles and times every
# candidate configuration of every kernel, for each dtype and head shape, which takes minutes before the first
# step runs. Triton stores the winners on disk (`<kernel>.autotune.json` in its cache folder, keyed by the
# Triton version, the GPU, the kernel source and the tuning key), and finds them again on the next run. These
# two functions carry only those small files to a fresh machine (not the compiled kernels, which are large and
# quick to rebuild once the configuration is known):
#   tuning_restore DIR       copy DIR's results into Triton's cache folder (TRITON_CACHE_DIR, exported)
#   tuning_save DIR          copy the cache folder's results into DIR (merged with what DIR holds)
# TRITON_PRINT_AUTOTUNING=1 (set here unless already set) logs each kernel that still gets tuned, and how long
# it took.
export TRITON_CACHE_DIR=${TRITON_CACHE_DIR:-$HOME/.triton/cache}
export TRITON_PRINT_AUTOTUNING=${TRITON_PRINT_AUTOTUNING:-1}

tuning_restore() {
  local dir=$1
  mkdir -p "$TRITON_CACHE_DIR"
  if [ -d "$dir" ]; then
    cp -r "$dir"/. "$TRITON_CACHE_DIR"/
    echo "restored $(find "$dir" -name '*.autotune.json' | wc -l) Triton tuning results from $dir"
  fi
}

tuning_save() {
  local dir=$1
  mkdir -p "$dir"
  (cd "$TRITON_CACHE_DIR" 2>/dev/null && find . -name '*.autotune.json' -exec cp --parents {} "$dir"/ \;)
  echo "saved $(find "$dir" -name '*.autotune.json' | wc -l) Triton tuning results to $dir"
}
