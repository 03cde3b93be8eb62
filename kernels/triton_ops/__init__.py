"""Triton kernels of Superlinear attention (prefill/training forward and backward, decode).

Modules, one job each:
- `common`: launch parameters, interpreter detection, dtype helpers.
- `search`: router scores at the power-law anchors and the running top-k, one program per query row.
- `prefix`: running sums of K for the "span_mean" search key (and of the backward's per-key differences).
- `entries`: turns the selection into "entries" (one key range per query, head and window/span), sorted so
  that a tile of entries covers nearly the same keys and can use the tensor cores (the torch path);
  `span_lists` and `window_lists` build the same lists in one launch each, as the forward does.
- `attend`: the entry kernel (forward of window and spans, the backward's delta and dq passes).
- `attend_bwd`: key-major dk/dv kernel and the gate backward (into q_search and the searched keys).
- `decode`: few query rows against a long cache, no host synchronisation (CUDA-graph capturable).
- `function`: the autograd.Function that ties the passes together.
"""
