# Sourced by the GPU check scripts: make this checkout and its optional packages importable without installing
# anything from the network (the GPU machines have none).
#   checkout_on_path ROOT [DIR]   `slkernels` and `slconvert` through links in DIR (default a fresh temporary
#                                 folder), put first on PYTHONPATH
#   importable_here ROOT          with $PY (default python3): fla-core from the wheels in ROOT/.whl/ (installed with
#                                 --target into $SITE, default /tmp/site, put on PYTHONPATH) when it is not
#                                 importable, and the checkout on the path when slconvert is not installed; returns
#                                 1 when fla-core is still missing. The wheels are fetched on a machine with network:
#                                   python3 -m pip download --no-deps --only-binary=:all: -d .whl fla-core==0.6.0
checkout_on_path() {
  local root=$1 dir=${2:-$(mktemp -d)}
  mkdir -p "$dir"
  ln -sfn "$root/kernels" "$dir/slkernels"
  ln -sfn "$root/slconvert" "$dir/slconvert"
  export PYTHONPATH="$dir${PYTHONPATH:+:$PYTHONPATH}"
}

importable_here() {
  local root=$1 py=${PY:-python3} site=${SITE:-/tmp/site} fla=0
  if ! $py -c "import fla" 2>/dev/null; then
    if compgen -G "$root/.whl/*.whl" >/dev/null; then
      $py -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "$root"/.whl/*.whl
      export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
    else
      fla=1
    fi
  fi
  if ! $py -c "import slconvert, slkernels" 2>/dev/null; then  # not installed: import it from this checkout
    checkout_on_path "$root"
  fi
  return $fla
}
