"""When a decode call is replayed from a CUDA graph (`slkernels.decode_graphs`): the key, the capture on the second
call of a static cache, eager calls for a growing cache, the bound on remembered keys, a returned tensor of the
caller's own, and `superlinear_attention` replaying a registered backend's calls without its checks. The graph is
stood in for by `graph_standin`; tests/test_triton_interpret.py runs the Triton decode itself through it,
tests/test_triton_gpu.py a real CUDA graph."""

from __future__ import annotations

import os
import warnings

import pytest
import torch
from graph_standin import standin_capture
from slkernels import decode_graphs


@pytest.fixture
def graphs(monkeypatch):
    """GRAPH_DECODE on, a CPU stand-in for capture, an empty key store; returns the list of captures."""
    captures = []
    monkeypatch.setattr(decode_graphs, "GRAPH_DECODE", True)
    monkeypatch.setattr(decode_graphs, "_capture", standin_capture(captures))
    monkeypatch.setattr(decode_graphs, "_eager_only", lambda device: False)
    monkeypatch.setattr(decode_graphs, "_ENTRIES", type(decode_graphs._ENTRIES)())
    return captures


def _step(cache, calls):
    def fn(q, position):
        calls.append(1)
        return q * cache[position].sum()
    return fn


def _call(fn, static, inputs, settings):
    """As `superlinear_attention` calls the module: a captured key replays, any other goes through `replayed`; a call
    without a key runs `fn` itself."""
    key = decode_graphs.key_of(static, inputs, settings)
    if key is None:
        return fn(*inputs)
    entry = decode_graphs.captured(key)
    if entry is not None:
        return decode_graphs.replay(entry, inputs)
    return decode_graphs.replayed(fn, key, inputs)


def test_a_static_cache_is_captured_on_its_second_call_and_replayed_after(graphs):
    cache, calls = torch.randn(10, 4), []
    fn = _step(cache, calls)
    results = []
    for i in range(5):
        q, position = torch.randn(3), torch.tensor(i)
        got = _call(fn, (cache,), (q, position), ("cfg", 0.5))
        assert torch.equal(got, q * cache[i].sum())
        results.append(got)
    assert len(graphs) == 1
    assert len(calls) == 1 + 1 + 4  # eager, the capture, a replay on each call from the second on
    assert len({r.data_ptr() for r in results}) == 5  # each call's tensor is its own, not the graph's buffer


def test_none_inputs_are_part_of_the_key_and_never_copied(graphs):
    """A per-step input given as None (no mask) stays None in the capture and the replays, and a call that gives
    it is another key."""
    cache, calls = torch.randn(10, 4), []

    def fn(q, position, mask):
        calls.append(mask)
        return q * cache[position].sum() + (0 if mask is None else mask.sum())

    for i in range(4):
        q, position = torch.randn(3), torch.tensor(i)
        assert torch.equal(_call(fn, (cache,), (q, position, None), ()), q * cache[i].sum())
    assert len(graphs) == 1 and all(mask is None for mask in calls)
    mask = torch.ones(2)
    q, position = torch.randn(3), torch.tensor(1)
    assert torch.equal(_call(fn, (cache,), (q, position, mask), ()), q * cache[1].sum() + 2)
    assert len(graphs) == 1 and len(decode_graphs._ENTRIES) == 2


def test_a_growing_cache_never_captures_and_the_store_is_bounded(graphs, monkeypatch):
    monkeypatch.setattr(decode_graphs, "MAX_GRAPHS", 3)
    calls = []
    for length in range(5, 12):
        cache = torch.randn(length, 4)  # a dynamic cache: a new tensor each step
        _call(_step(cache, calls), (cache,), (torch.randn(3), torch.tensor(0)), ("cfg", 0.5))
    assert graphs == [] and len(calls) == 7 and len(decode_graphs._ENTRIES) == 3


def test_settings_shapes_and_a_moved_cache_are_other_keys(graphs):
    cache, other, calls = torch.randn(10, 4), torch.randn(10, 4), []
    q, position = torch.randn(3), torch.tensor(2)
    for static, inputs, settings in (((cache,), (q, position), ("a", 1.0)), ((cache,), (q, position), ("a", 2.0)),
                                     ((cache,), (torch.randn(5), position), ("a", 1.0)),
                                     ((cache,), (q, position.to(torch.int32)), ("a", 1.0)),
                                     ((other,), (q, position), ("a", 1.0))):
        _call(_step(static[0], calls), static, inputs, settings)
    assert graphs == [] and len(decode_graphs._ENTRIES) == 5


def test_off_inside_a_capture_recording_gradients_or_with_other_inputs_there_is_no_key(graphs, monkeypatch):
    cache, q, position = torch.randn(10, 4), torch.randn(3), torch.tensor(1)
    assert decode_graphs.key_of((cache,), (q, position), ()) is not None
    assert decode_graphs.key_of((cache,), (q, [1]), ()) is None  # not a tensor: the checks convert or refuse it
    assert decode_graphs.key_of((cache,), ([0.5], position), ()) is None
    assert decode_graphs.key_of((cache,), (q, position.to("meta")), ()) is None  # a per-step tensor elsewhere
    assert decode_graphs.key_of((cache.requires_grad_(),), (q, position), ()) is None
    cache = cache.detach()
    assert decode_graphs.key_of((cache,), (q.requires_grad_(), position), ()) is None
    with torch.no_grad():
        assert decode_graphs.key_of((cache,), (q, position), ()) is not None
    q = q.detach()
    monkeypatch.setattr(decode_graphs, "_eager_only", lambda device: True)
    assert decode_graphs.key_of((cache,), (q, position), ()) is None
    monkeypatch.setattr(decode_graphs, "_eager_only", lambda device: False)
    monkeypatch.setattr(decode_graphs, "GRAPH_DECODE", False)
    assert decode_graphs.key_of((cache,), (q, position), ()) is None
    assert graphs == [] and not decode_graphs._ENTRIES


def test_a_call_that_cannot_be_captured_warns_once_and_stays_eager(graphs, monkeypatch):
    def refuse(fn, inputs):
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(decode_graphs, "_capture", refuse)
    cache, calls = torch.randn(10, 4), []
    fn = _step(cache, calls)
    with pytest.warns(UserWarning, match="could not be captured.*not permitted"):
        for i in range(2):
            _call(fn, (cache,), (torch.randn(3), torch.tensor(i)), ())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the key is not captured again, so nothing warns again
        for i in range(3):
            q = torch.randn(3)
            assert torch.equal(_call(fn, (cache,), (q, torch.tensor(i)), ()), q * cache[i].sum())
    assert len(calls) == 5


def test_cpu_tensors_are_never_captured():
    assert decode_graphs._eager_only(torch.device("cpu"))


def test_the_environment_turns_it_off_for_a_whole_process():
    """The replay is on by default; SLKERNELS_GRAPH_DECODE=0 turns it off from the start (e.g. to time or debug the
    launched step in a whole program), any other value leaves it on."""
    import subprocess
    import sys

    code = "from slkernels import decode_graphs; print(decode_graphs.GRAPH_DECODE)"
    for value, expected in (("1", "True"), ("0", "False"), (None, "True"), ("yes", "True")):
        env = {k: v for k, v in os.environ.items() if k != "SLKERNELS_GRAPH_DECODE"}
        if value is not None:
            env["SLKERNELS_GRAPH_DECODE"] = value
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        assert out.stdout.strip() == expected, (value, out.stderr[-500:])


def test_superlinear_attention_replays_a_replayable_backend_without_its_checks(graphs, monkeypatch):
    """A backend registered with `replayable`: the first call runs it, the second captures it, later calls replay
    it without the checks of shapes (they ran on the first call of the key) but with the read-back checks when asked
    for; every call equals the reference, positions and left padding moving."""
    from slkernels import SuperlinearConfig, SuperlinearInputError, api, superlinear_attention
    from slkernels.reference import reference_attention

    checked = []
    check = api.check_inputs
    monkeypatch.setattr(api, "check_inputs", lambda *args: checked.append(args[8]) or check(*args))
    monkeypatch.setitem(api._BACKENDS, "replayed", (reference_attention, lambda inputs: True))
    monkeypatch.setitem(api._REPLAYABLE, "replayed", lambda inputs: inputs.q.shape[2] == 1)
    cfg = SuperlinearConfig(sw_index=2, num_spans=3, search_power=0.5, span_power=0.5, backward_factor=2.0,
                            forward_factor=1.0)
    torch.manual_seed(0)
    k, v = torch.randn(2, 2, 64, 16), torch.randn(2, 2, 64, 16)
    mask = torch.ones(2, 64, dtype=torch.long)
    for position, padding in ((30, 0), (31, 3), (50, 3), (63, 9)):
        mask[1, :padding] = 0
        q, qs = torch.randn(2, 4, 1, 16), torch.randn(2, 4, 1, 16)
        args = dict(cache_position=torch.tensor([position]), attention_mask=mask)
        got = superlinear_attention(q, k, v, qs, cfg, backend="replayed", **args)
        want = superlinear_attention(q, k, v, qs, cfg, backend="reference", **args)
        assert torch.equal(got, want), position
    assert len(graphs) == 1
    # the "replayed" calls check their inputs (True) on the key's first two calls only; the call they run (False) is
    # run eagerly on the first, captured on the second, then replayed (the stand-in graph runs it again) on the
    # second to fourth; the reference calls check themselves (True) every time
    assert checked.count(True) == 2 + 4 and checked.count(False) == 1 + 1 + 3
    q = torch.randn(2, 4, 1, 16)
    with pytest.raises(SuperlinearInputError, match="cache_position values must lie in"):
        superlinear_attention(q, k, v, q, cfg, backend="replayed", cache_position=torch.tensor([64]),
                              attention_mask=mask)
    mask[0, 5] = 0
    with pytest.raises(SuperlinearInputError, match="only left padding"):
        superlinear_attention(q, k, v, q, cfg, backend="replayed", cache_position=torch.tensor([40]),
                              attention_mask=mask)
    superlinear_attention(q, k, v, q, cfg, backend="replayed", cache_position=torch.tensor([40]),
                          attention_mask=mask, check_values=False)  # replayed unchecked, as the caller asked
    assert len(graphs) == 1


def test_per_step_tensors_of_several_dtypes_are_copied_as_bytes_unless_a_last_dim_is_strided(graphs):
    """One copy for all per-step tensors: raw bytes, exact for any dtype (an int64 position whose bytes would be a
    NaN as bfloat16 included); a tensor whose last dim is strided keeps its dtype (then one copy per dtype)."""
    cache = torch.randn(10, 4)

    def fn(q, position, flags):
        return torch.cat([q.double().flatten(), position.double(), flags.double().flatten()])

    position = torch.tensor([0x7FC1 + (0xFF81 << 16)], dtype=torch.int64)  # words that are NaNs as bfloat16
    for q in (torch.randn(2, 3, dtype=torch.bfloat16), torch.randn(3, 2, dtype=torch.bfloat16).t()):
        got = []
        for step in range(4):
            flags = torch.tensor([[True, False, step % 2 == 0]])
            inputs = (q + step, position + step, flags)
            got.append(_call(fn, (cache,), inputs, ()))
            assert torch.equal(got[-1], fn(*inputs)), step
        entry = decode_graphs._ENTRIES[decode_graphs.key_of((cache,), inputs, ())]
        assert entry.as_bytes == q.is_contiguous()
        assert all(b.dtype == torch.uint8 for b in entry.buffers) == q.is_contiguous()


def test_calls_in_and_out_of_inference_mode_are_other_keys(graphs):
    """Buffers captured under torch.inference_mode can only be written under it: a call outside it is another key,
    not a copy into them that torch refuses."""
    cache, calls = torch.randn(10, 4), []
    fn = _step(cache, calls)
    for mode in (torch.inference_mode, torch.no_grad):
        for i in range(3):
            with mode():
                q = torch.randn(3)
                assert torch.equal(_call(fn, (cache,), (q, torch.tensor(i)), ()), q * cache[i].sum())
    assert len(graphs) == 2 and len(decode_graphs._ENTRIES) == 2


def test_the_least_recently_used_key_is_dropped(graphs, monkeypatch):
    """At most MAX_GRAPHS keys: a new key drops the one used least recently, where a capture, a replay and an eager
    call of a key whose capture failed all count as uses."""
    monkeypatch.setattr(decode_graphs, "MAX_GRAPHS", 2)
    a, b, c = (torch.randn(10, 4) for _ in range(3))
    calls = []

    def use(*steps):
        for cache, i in steps:
            _call(_step(cache, calls), (cache,), (torch.randn(3), torch.tensor(i)), ())

    def kept():
        names = {decode_graphs.key_of((t,), (torch.randn(3), torch.tensor(0)), ()): n for n, t in zip("abc", (a, b, c))}
        return "".join(names[key] for key in decode_graphs._ENTRIES)

    use((a, 0), (b, 0), (a, 1), (c, 0))  # a captured on its second call: b was the least recent
    assert kept() == "ac" and len(graphs) == 1
    use((a, 2), (b, 0))  # a replayed: c was the least recent
    assert kept() == "ab"

    def refuse(fn, inputs):
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(decode_graphs, "_capture", refuse)
    with pytest.warns(UserWarning, match="could not be captured"):
        use((b, 1))  # b's capture fails: b runs eagerly from now on
    use((c, 0), (b, 2), (a, 0))  # c drops a; b's eager call makes c the least recent
    assert kept() == "ba"
