# Sourced by the GPU check scripts: make this checkout importable without installing it (the GPU machines
# have no network), as `slkernels` and `slconvert` through links in a folder put first on PYTHONPATH.
#   checkout_on_path ROOT [DIR]      (DIR: where the links go; default a fresh temporary folder)
checkout_on_path() {
  local root=$1 dir=${2:-$(mktemp -d)}
  mkdir -p "$dir"
  ln -sfn "$root/kernels" "$dir/slkernels"
  ln -sfn "$root/slconvert" "$dir/slconvert"
  export PYTHONPATH="$dir${PYTHONPATH:+:$PYTHONPATH}"
}
