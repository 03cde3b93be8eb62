"""The "superlinear" attention function inside real models: masks, left padding, capture, routers, generic decoders."""

from __future__ import annotations

import json

import pytest
import torch
from cli_helpers import convert_cli
from dispatch_ops import OpCounter
from slkernels import SuperlinearConfig

import slconvert
from slconvert.attention import capture_attention, padding_mask, query_positions, superlinear_mask
from slconvert.errors import SlconvertError
from slconvert.fast_mamba import runs_fla_on_any_device
from slconvert.router import SuperlinearRouter, config_by_key, initial_router_weight, routers
from slconvert.tiny import TINY_ARCHITECTURES, build_tiny_model

_convert = convert_cli


@pytest.fixture(scope="module")
def bamba(tmp_path_factory):
    root = tmp_path_factory.mktemp("attention")
    return slconvert.load(_convert(build_tiny_model("bamba", root / "source"), root / "out"))


def _converted_layers(model) -> list:
    """The attention modules of `model` that hold a Superlinear router, in layer order."""
    import slconvert.attention as attention

    found = [m for m in model.modules() if getattr(m, attention.ROUTER_ATTRIBUTE, None) is not None]
    return sorted(found, key=lambda m: getattr(m, attention.ROUTER_ATTRIBUTE).layer_idx)


def test_padding_mask_from_4d_bool_float_and_2d():
    causal = torch.ones(5, 5, dtype=torch.bool).tril()
    mask = causal[None, None].repeat(2, 1, 1, 1)
    mask[0, :, :, :2] = False  # row 0 starts at key 2
    assert padding_mask(None, 5) is None
    assert padding_mask(causal[None, None].repeat(2, 1, 1, 1), 5) is None
    assert padding_mask(mask, 5).tolist() == [[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]]
    additive = torch.zeros(2, 1, 5, 5).masked_fill(~mask, torch.finfo(torch.float32).min)
    assert padding_mask(additive, 5).tolist() == [[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]]
    assert padding_mask(torch.tensor([[0, 1, 1], [1, 1, 1]]), 3).tolist() == [[0, 1, 1], [1, 1, 1]]
    with pytest.raises(SlconvertError, match="unexpected attention mask"):
        padding_mask(torch.ones(2, 3, 4), 4)


def test_a_mask_with_a_gap_is_refused_and_right_padding_serves_its_real_rows(bamba):
    """The kernels take left padding only; a mask hiding keys after a row's first real token (a gap, or right padding
    that generation has gone past) was read as no padding at all, and the converted layers attended to those keys."""
    length = 40
    tokens = torch.randint(4, 384, (2, length))
    right = torch.ones_like(tokens)
    right[1, 32:] = 0
    with torch.no_grad():  # right padding in one forward: no real query reaches a padded key
        batched = bamba(tokens, attention_mask=right).logits
        alone = bamba(tokens[1:, :32]).logits
    torch.testing.assert_close(batched[1, :32], alone[0], rtol=0, atol=1e-4)
    refused = "hides keys after a row's first real token .* pad on the left"
    with pytest.raises(SlconvertError, match=refused):
        bamba.generate(tokens, attention_mask=right, max_new_tokens=2, do_sample=False)
    gap = torch.ones_like(tokens)
    gap[1, 30:38] = 0
    with pytest.raises(SlconvertError, match=refused), torch.no_grad():
        bamba(tokens, attention_mask=gap)
    causal = torch.ones(5, 5, dtype=torch.bool).tril()[None, None].repeat(2, 1, 1, 1)
    causal[1, :, 4, 2] = False  # the last query row of row 1 does not see key 2
    with pytest.raises(SlconvertError, match=refused):
        padding_mask(causal, 5)


def test_left_padded_batch_matches_unpadded_rows(bamba):
    length, pad = 40, 7
    tokens = torch.randint(4, 384, (2, length))
    mask = torch.ones_like(tokens)
    tokens[0, :pad], mask[0, :pad] = 0, 0
    with torch.no_grad():
        batched = bamba(tokens, attention_mask=mask).logits
        alone = bamba(tokens[:1, pad:]).logits
        full = bamba(tokens[1:]).logits
    assert torch.isfinite(batched).all()
    torch.testing.assert_close(batched[0, pad:], alone[0], rtol=0, atol=1e-4)
    torch.testing.assert_close(batched[1], full[0], rtol=0, atol=1e-4)
    generated = bamba.generate(tokens, attention_mask=mask, max_new_tokens=3, do_sample=False)
    assert generated.shape == (2, length + 3)


def test_mask_of_a_fully_converted_model_is_2d_and_gives_the_same_logits(bamba, monkeypatch):
    """No [B, 1, L_q, L_kv] mask is built for converted layers (chunked prefill would build one per chunk), and
    the logits of a left-padded batch, prefilled in chunks through the cache, equal those under sdpa_mask."""
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    assert bamba.config.superlinear["dense_attention_layers"] == []
    tokens = torch.randint(4, 384, (2, 48))
    mask = torch.ones_like(tokens)
    tokens[0, :5], mask[0, :5] = 0, 0
    seen = []

    def chunked(mask_fn):
        monkeypatch.setitem(ALL_MASK_ATTENTION_FUNCTIONS._global_mapping, "superlinear",
                            lambda *a, **k: seen.append(mask_fn(*a, **k)) or seen[-1])
        with torch.no_grad():
            first = bamba(tokens[:, :30], attention_mask=mask[:, :30], use_cache=True)
            rest = bamba(tokens[:, 30:], attention_mask=mask, past_key_values=first.past_key_values, use_cache=True)
        return torch.cat([first.logits, rest.logits], dim=1)

    ours = chunked(superlinear_mask)
    assert seen and all(m is None or m.dim() == 2 for m in seen)
    assert any(m is not None and m[0, :5].sum() == 0 for m in seen)  # row 0's padding reaches the layers
    seen.clear()
    stock = chunked(sdpa_mask)
    assert any(m is not None and m.dim() == 4 for m in seen)
    torch.testing.assert_close(ours, stock, rtol=0, atol=0)


def test_converted_layers_read_nothing_back_per_layer(bamba, monkeypatch):
    """In a padded decode step, the attention function of a converted layer reads no value back to the host
    (each read is a synchronisation, per layer and generated token): the padding was found once by the mask
    function, and the kernels' value checks are skipped."""
    import slconvert.attention as attention

    seen = []
    monkeypatch.setattr(attention, "superlinear_attention",
                        lambda *a, **k: seen.append(k) or torch.zeros_like(a[0]))  # the call, not the kernels
    module = _converted_layers(bamba)[0]
    q = torch.randn(2, 4, 1, 16)
    k, v = torch.randn(2, 2, 12, 16), torch.randn(2, 2, 12, 16)
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[0, :3] = 0
    with OpCounter() as ops:
        attention.superlinear_attention_forward(module, q, k, v, mask, cache_position=torch.tensor([11]))
    assert ops.host_reads() == {} and seen[0]["check_values"] is False
    assert seen[0]["attention_mask"].tolist() == mask.tolist()


def test_converted_layers_use_the_host_softmax_scale(bamba):
    """A host passes its own softmax scale (`scaling`, e.g. Granite's attention multiplier); the converted layer's
    token attention uses it, not 1/sqrt(D): while t <= W + 1 that is dense causal attention at that scale, and past
    it the brute force of docs/semantics.md at that scale."""
    from slkernels.naive import dense_causal, naive_superlinear_attention

    import slconvert.attention as attention

    module = _converted_layers(bamba)[0]
    router = getattr(module, attention.ROUTER_ATTRIBUTE)
    gen = torch.Generator().manual_seed(0)
    q, k, v = torch.randn(1, 4, 40, 16, generator=gen), torch.randn(1, 2, 40, 16, generator=gen), torch.randn(
        1, 2, 40, 16, generator=gen)
    short = router.config.window + 1
    with torch.no_grad():
        out, _ = attention.superlinear_attention_forward(module, q[:, :, :short], k[:, :, :short], v[:, :, :short],
                                                         None, scaling=0.05)
        want = dense_causal(q[:, :, :short], k[:, :, :short], v[:, :, :short], scale=0.05)
        torch.testing.assert_close(out.double(), want.transpose(1, 2), atol=1e-5, rtol=1e-5)
        out, _ = attention.superlinear_attention_forward(module, q, k, v, None, scaling=0.05)
        want = naive_superlinear_attention(q, k, v, router(q), router.config, scale=0.05)
        torch.testing.assert_close(out.double(), want.transpose(1, 2), atol=1e-5, rtol=1e-5)


def test_the_host_query_trains_through_the_router(bamba):
    """q_search = router(q), and the gate is differentiable in q_search (docs/semantics.md), so the host's query
    projection learns from the router's choice too: the query's gradient holds the gate's part, which it would lose
    if the router read a detached query."""
    from slkernels import superlinear_attention

    import slconvert.attention as attention

    module = _converted_layers(bamba)[0]
    router = getattr(module, attention.ROUTER_ATTRIBUTE)
    gen = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, h, 48, 16, generator=gen, dtype=torch.float64) for h in (4, 2, 2))
    weights = torch.randn(1, 48, 4, 16, generator=gen, dtype=torch.float64)
    assert router.config.window + 1 < 48  # rows past the window: their spans and gates depend on q_search

    def query_grad(layer) -> torch.Tensor:
        query = q.clone().requires_grad_()
        (layer(query) * weights).sum().backward()
        return query.grad

    original = router.weight.data
    router.weight.data = original.double()
    try:
        through = query_grad(lambda x: attention.superlinear_attention_forward(module, x, k, v, None, scaling=0.25)[0])
        detached = query_grad(lambda x: superlinear_attention(x, k, v, router(x.detach()), router.config,
                                                              scale=0.25).transpose(1, 2))
        whole = query_grad(lambda x: superlinear_attention(x, k, v, router(x), router.config,
                                                           scale=0.25).transpose(1, 2))
    finally:
        router.weight.data = original
    torch.testing.assert_close(through, whole)
    assert (through - detached).abs().max() > 1e-3


def test_mask_with_layers_kept_dense_is_transformers_own():
    class Config:
        superlinear = {"dense_attention_layers": [3]}

    kept = superlinear_mask(batch_size=1, q_length=4, kv_length=6, kv_offset=0,
                            attention_mask=torch.tensor([[0, 1, 1, 1, 1, 1]], dtype=torch.bool), config=Config())
    assert kept.shape == (1, 1, 4, 6)
    Config.superlinear = {"dense_attention_layers": []}
    mask = torch.tensor([[0, 0, 1, 1]], dtype=torch.bool)
    assert superlinear_mask(batch_size=1, q_length=2, kv_length=6, q_offset=2, attention_mask=mask,
                            config=Config()).tolist() == [[0, 0, 1, 1, 0, 0]]  # a static cache's empty slots: 0
    assert superlinear_mask(batch_size=2, q_length=1, kv_length=6, q_offset=torch.tensor(2),
                            config=Config()).tolist() == [[1, 1, 1, 0, 0, 0]] * 2  # its offset is a tensor
    assert superlinear_mask(batch_size=1, q_length=2, kv_length=4, q_offset=2, config=Config(),
                            attention_mask=torch.ones(1, 4, dtype=torch.bool)) is None
    assert superlinear_mask(batch_size=1, q_length=1, kv_length=4, q_offset=2,
                            config=Config()).tolist() == [[1, 1, 1, 0]]  # one slot left: still 0


def test_query_positions_come_from_the_caller_the_mask_or_the_cache_length():
    static = torch.tensor([[0, 1, 1, 1, 0, 0, 0, 0]]) != 0  # a static cache of 8 slots, rows 2 and 3 this call
    assert query_positions(static, 2, 8, "cpu").tolist() == [2, 3]
    causal = torch.ones(8, 8, dtype=torch.bool).tril()[None, None, 2:4]  # a 4-D mask: its last row ends at 3
    assert query_positions(causal[:, 0, -1], 2, 8, "cpu").tolist() == [2, 3]
    assert query_positions(static, 1, 8, "cpu", given=torch.tensor([6])).tolist() == [6]  # a cache_position wins
    assert query_positions(None, 2, 8, "cpu").tolist() == [6, 7]  # no mask: the cache holds exactly the keys seen
    assert query_positions(torch.ones(1, 8, dtype=torch.bool), 2, 8, "cpu").tolist() == [6, 7]


def test_padding_mask_of_edge_rows():
    """A 2-D mask longer than the layer's keys is read from its start (key 0 on); a batch row that shows no key at
    all is all padding (zeros), and is no gap to refuse."""
    assert padding_mask(torch.tensor([[0, 1, 1, 1, 0, 0]]), 4).tolist() == [[0, 1, 1, 1]]
    assert padding_mask(torch.tensor([[0, 0, 0], [1, 1, 1]]), 3).tolist() == [[0, 0, 0], [1, 1, 1]]


def test_query_positions_at_the_edges_of_the_key_axis():
    """A given cache_position is taken only while it lies on the key axis (below L_kv); a static cache whose visible
    keys end at L_q - 1 (the first prefill of L_q tokens) puts its rows at 0 .. L_q - 1."""
    assert query_positions(None, 1, 8, "cpu", given=torch.tensor([7])).tolist() == [7]
    assert query_positions(None, 1, 8, "cpu", given=torch.tensor([8])).tolist() == [7]  # off the axis: the last key
    first_prefill = torch.tensor([[1, 1, 0, 0, 0, 0, 0, 0]]) != 0
    assert query_positions(first_prefill, 2, 8, "cpu").tolist() == [0, 1]


def test_superlinear_mask_of_a_block_without_dense_layers_and_of_a_static_cache():
    """A superlinear config block without "dense_attention_layers" is not known to convert every layer: its layers
    get transformers' 4-D mask. Under a fully converted model, a static cache's slots not yet written are 0 in the
    2-D mask whatever the mask given covers, and its written keys past a shorter mask are real."""
    class Config:
        superlinear = {}

    assert superlinear_mask(batch_size=1, q_length=2, kv_length=4, attention_mask=torch.ones(1, 4, dtype=torch.bool),
                            config=Config(), allow_is_causal_skip=False).shape == (1, 1, 2, 4)
    Config.superlinear = {"dense_attention_layers": []}
    assert superlinear_mask(batch_size=1, q_length=2, kv_length=6, q_offset=2, config=Config(),
                            attention_mask=torch.tensor([[0, 1]], dtype=torch.bool)).tolist() == [[0, 1, 1, 1, 0, 0]]
    # a mask as long as the static cache: its slots past the written keys are still 0
    assert superlinear_mask(batch_size=1, q_length=2, kv_length=6, q_offset=2, config=Config(),
                            attention_mask=torch.ones(1, 6, dtype=torch.bool)).tolist() == [[1, 1, 1, 1, 0, 0]]


def test_a_converted_layer_with_logit_soft_capping_or_a_sliding_window_is_refused():
    """Superlinear attention models neither a sliding window nor soft-capped logits: a converted layer asked for
    either is refused by name, never run without it."""
    from slconvert.attention import superlinear_attention_forward

    module = torch.nn.Module()
    module.superlinear_router = SuperlinearRouter(2, 4, SuperlinearConfig(sw_index=1, search_power=0.5), layer_idx=3)
    q = torch.randn(1, 2, 3, 4)
    for extra in ({"softcap": 30.0}, {"sliding_window": 4}):
        with pytest.raises(SlconvertError, match="layer 3 uses a sliding window or logit soft-capping"):
            superlinear_attention_forward(module, q, q, q, None, scaling=0.5, **extra)
    out, _ = superlinear_attention_forward(module, q, q, q, None, scaling=0.5)
    assert out.shape == (1, 3, 2, 4)


def _left_padded_pair() -> tuple[torch.Tensor, torch.Tensor]:
    """Two rows of 60 tokens and their mask; row 0 is left-padded by 5."""
    tokens = torch.randint(4, 384, (2, 60), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(tokens)
    tokens[0, :5], mask[0, :5] = 0, 0
    return tokens, mask


def _greedy(model, rows, mask, new_tokens: int, **cache):
    """Greedy generation with each step's logits."""
    return model.generate(rows, attention_mask=mask, max_new_tokens=new_tokens, do_sample=False, output_logits=True,
                          return_dict_in_generate=True, **cache)


@pytest.mark.parametrize(("model_type", "keep_dense"),
                         [(name, False) for name in TINY_ARCHITECTURES] + [("bamba", True)])
def test_generate_with_a_static_cache_gives_the_dynamic_cache_tokens(tmp_path, model_type, keep_dense):
    """transformers passes no `cache_position` to the layers, and a static cache hands them every slot: the query
    rows' positions come from the mask (2-D from `superlinear_mask`, or 4-D when a layer is kept dense), so greedy
    tokens through a static cache are those through a dynamic one, with a left-padded row too, in every
    architecture."""
    extra = ("--keep-dense", "1") if keep_dense else ()
    model = slconvert.load(_convert(build_tiny_model(model_type, tmp_path / "source"), tmp_path / "out", *extra))
    assert (model.config.superlinear["dense_attention_layers"] != []) == keep_dense
    tokens, mask = _left_padded_pair()
    if runs_fla_on_any_device(model):
        if not torch.cuda.is_available():
            pytest.skip("transformers runs this model's Gated DeltaNet layers on fla's Triton kernels, CPU or not")
        model, tokens, mask = model.to("cuda"), tokens.to("cuda"), mask.to("cuda")
    for rows, row_mask in ((tokens, mask), (tokens[1:], None)):  # a padded batch; a row alone (no mask needed)
        runs = [_greedy(model, rows, row_mask, 8, **cache) for cache in ({}, {"cache_implementation": "static"})]
        assert torch.equal(runs[1].sequences, runs[0].sequences)
        torch.testing.assert_close(torch.stack(runs[1].logits), torch.stack(runs[0].logits), rtol=1e-4, atol=1e-4)


def test_a_gated_deltanet_model_on_the_cpu_with_fla_installed_is_warned_about(tmp_path, monkeypatch):
    """transformers runs Gated DeltaNet layers on fla's kernels whenever fla is importable, CPU tensors included:
    loading such a model onto the CPU then says so in one warning; a Mamba-2 model, whose kernels slconvert answers
    per device, loads without it, and nothing is said where fla is absent."""
    import warnings

    import slconvert.fast_mamba as fm

    converted = {name: _convert(build_tiny_model(name, tmp_path / name), tmp_path / f"{name}-out")
                 for name in ("qwen3_next", "nemotron_h")}
    monkeypatch.setattr(fm, "_fla_importable", lambda: True)
    with pytest.warns(UserWarning, match="Gated DeltaNet layers of this qwen3_next model.*CUDA device.*uninstall"):
        slconvert.load(converted["qwen3_next"])
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*Gated DeltaNet")
        slconvert.load(converted["nemotron_h"])
        monkeypatch.setattr(fm, "_fla_importable", lambda: False)
        slconvert.load(converted["qwen3_next"])


def test_a_cache_that_reports_too_few_keys_still_decodes_a_padded_batch(tmp_path):
    """MiniMax's cache reports its first layer's length to the mask function, and that layer is a linear-attention
    one that holds no keys: in decode the 2-D mask then covers more keys than the cache reported, and it is taken as
    the truth. A left-padded batch generates each row's own tokens and logits, through either cache."""
    model = slconvert.load(_convert(build_tiny_model("minimax", tmp_path / "source"), tmp_path / "out"))
    tokens, mask = _left_padded_pair()
    for cache in ({}, {"cache_implementation": "static"}):
        batched = _greedy(model, tokens, mask, 6, **cache)
        for row, first in ((0, 5), (1, 0)):
            alone = _greedy(model, tokens[row:row + 1, first:], None, 6, **cache)
            assert torch.equal(batched.sequences[row, 60:], alone.sequences[0, 60 - first:])
            torch.testing.assert_close(torch.stack(batched.logits)[:, row], torch.stack(alone.logits)[:, 0],
                                       rtol=0, atol=1e-4)
    # with a layer kept dense the layers get transformers' 4-D mask, built for that one key: a clear error, not
    # spans taken at the wrong positions
    kept = slconvert.load(_convert(tmp_path / "source", tmp_path / "kept", "--keep-dense", "1"))
    with pytest.raises(SlconvertError, match="layer 3: the attention mask covers 1 keys but the layer holds 61"):
        kept.generate(tokens, attention_mask=mask, max_new_tokens=2, do_sample=False)


def test_capture_records_converted_layers_only_while_active(bamba):
    tokens = torch.randint(4, 384, (2, 24))
    mask = torch.ones_like(tokens)
    mask[1, :3] = 0
    with capture_attention(bamba) as records, torch.no_grad():
        bamba(tokens, attention_mask=mask)
    assert [r["layer_idx"] for r in records] == [1, 3]
    for record in records:
        assert set(record) == {"layer_idx", "q", "k", "v", "q_search", "config", "scale", "attention_mask", "cache_position"}
        assert record["q"].shape == (2, 4, 24, 16) and record["k"].shape == (2, 2, 24, 16)
        assert record["attention_mask"].tolist()[1][:4] == [0, 0, 0, 1]
        assert record["cache_position"].tolist() == list(range(24))
        assert isinstance(record["config"], SuperlinearConfig) and record["config"].window == 15
        assert not record["q_search"].requires_grad
    with torch.no_grad():
        bamba(tokens)
    assert len(records) == 2
    # One decode step through the cache: one query row at the last key position.
    with capture_attention(bamba) as steps:
        bamba.generate(tokens[:1], max_new_tokens=2, do_sample=False)
    decode = [r for r in steps if r["q"].shape[2] == 1]
    assert decode and all(int(r["cache_position"][0]) == r["k"].shape[2] - 1 for r in decode)


def test_router_module_and_initial_weights():
    config = SuperlinearConfig(sw_index=3, search_power=0.5)
    router = SuperlinearRouter(4, 8, config, layer_idx=2)
    query = torch.randn(1, 4, 5, 8)
    torch.testing.assert_close(router(query), query)  # identity until loaded
    # q_search = q @ weight[h] (the query a row vector): q = e_0 and weight = [[0, 1], [0, 0]] give e_1, not 0
    small = SuperlinearRouter(1, 2, config, layer_idx=0)
    with torch.no_grad():
        small.weight.copy_(torch.tensor([[[0.0, 1.0], [0.0, 0.0]]]))
    assert small(torch.tensor([[[[1.0, 0.0]]]])).tolist() == [[[[0.0, 1.0]]]]
    with pytest.raises(SlconvertError, match="expects 4 heads of 8"):
        router(torch.randn(1, 2, 5, 8))
    host = initial_router_weight(4, 8, init="host_logits", alpha=0.5)
    assert torch.equal(host, 0.5 * torch.eye(8).expand(4, 8, 8))
    first = initial_router_weight(4, 8, init="random", seed=3, layer=1)
    assert torch.equal(first, initial_router_weight(4, 8, init="random", seed=3, layer=1))
    assert not torch.equal(first, initial_router_weight(4, 8, init="random", seed=3, layer=2))
    # "random" draws alpha * N(0, 1/D): standard deviation alpha / sqrt(D) = 2 / 8 (8 * 64 * 64 draws)
    wide = initial_router_weight(8, 64, init="random", alpha=2.0, seed=0)
    assert float(wide.std()) == pytest.approx(0.25, rel=0.03) and abs(float(wide.mean())) < 0.01
    with pytest.raises(SlconvertError, match="unknown router init"):
        initial_router_weight(4, 8, init="zeros")
    # the string a compiled graph passes to the attention operation names this config, and only an equal one
    assert isinstance(router.config_key, str) and config_by_key(router.config_key) == config
    assert SuperlinearRouter(4, 8, SuperlinearConfig(sw_index=3, search_power=0.5), 0).config_key == router.config_key
    assert SuperlinearRouter(4, 8, SuperlinearConfig(sw_index=4, search_power=0.5), 0).config_key != router.config_key


def test_random_router_weights_differ_for_every_seed_and_layer():
    """Each (seed, layer) pair draws its own weights: neither seed 1 at layer 0 and seed 0 at layer 1, nor any other
    two pairs of small seeds and layers, share a draw."""
    pairs = [(seed, layer) for seed in range(3) for layer in range(3)]
    drawn = [initial_router_weight(1, 4, init="random", seed=seed, layer=layer) for seed, layer in pairs]
    for i in range(len(pairs)):
        for j in range(i):
            assert not torch.equal(drawn[i], drawn[j]), (pairs[i], pairs[j])


def test_router_weights_take_the_dtype_asked_for():
    """The starting weight and the router's parameter are in the dtype asked for (float32 by default), whatever the
    float64 arithmetic that draws them."""
    assert initial_router_weight(2, 4).dtype == torch.float32
    assert initial_router_weight(2, 4, init="random", dtype=torch.bfloat16).dtype == torch.bfloat16
    config = SuperlinearConfig(sw_index=3, search_power=0.5)
    assert SuperlinearRouter(2, 4, config, layer_idx=0).weight.dtype == torch.float32
    router = SuperlinearRouter(2, 4, config, layer_idx=0, dtype=torch.bfloat16)
    assert router.weight.dtype == torch.bfloat16
    assert torch.equal(router.weight.float(), torch.eye(4).expand(2, 4, 4))


def test_a_query_of_another_head_dim_is_refused_by_name():
    """A query whose head dim is not the router's (a checkpoint whose router does not match its config) is refused
    with the layer and both shapes named, not left to fail inside the matmul."""
    router = SuperlinearRouter(4, 8, SuperlinearConfig(sw_index=3, search_power=0.5), layer_idx=5)
    with pytest.raises(SlconvertError, match=r"router of layer 5 expects 4 heads of 8, got query of shape \[1, 4, 5, 6\]"):
        router(torch.randn(1, 4, 5, 6))


def test_routers_are_listed_by_layer_index():
    """`routers(model)` maps each converted layer's index to its router in increasing index order, whatever the
    order of the modules."""
    config = SuperlinearConfig(sw_index=3, search_power=0.5)
    model = torch.nn.ModuleList([SuperlinearRouter(1, 2, config, layer_idx=i) for i in (7, 2, 5)])
    found = routers(model)
    assert list(found) == [2, 5, 7]
    assert [r.layer_idx for r in found.values()] == [2, 5, 7] and found[7] is model[0]


def test_a_copy_of_a_router_never_copies_what_its_state_keeps():
    """A deep copy of a router gets a fresh, empty state of its own: the kept arrays (3.4 times the layer's
    K cache) are never copied along."""
    import copy

    class Uncopyable:
        def __deepcopy__(self, memo):
            raise AssertionError("the kept sums were copied")

        def __reduce__(self):
            raise AssertionError("the kept sums were pickled")

    router = SuperlinearRouter(2, 4, SuperlinearConfig(sw_index=3, search_power=0.5), layer_idx=0)
    router.state.key_sums = Uncopyable()
    twin = copy.deepcopy(router)
    assert twin.state is not router.state and twin.state.key_sums is None and twin.state_key != router.state_key
    assert torch.equal(twin.weight, router.weight)


def test_routers_are_trainable_alone(bamba):
    """Freezing everything but the routers still gives them gradients (the routers-only warm-up)."""
    found = routers(bamba)
    for parameter in bamba.parameters():
        parameter.requires_grad_(False)
    for router in found.values():
        router.weight.requires_grad_(True)
        router.weight.grad = None
    tokens = torch.randint(4, 384, (1, 48))
    try:
        bamba(tokens, labels=tokens).loss.backward()
        assert all(r.weight.grad is not None and r.weight.grad.abs().sum() > 0 for r in found.values())
    finally:
        for parameter in bamba.parameters():
            parameter.requires_grad_(True)
            parameter.grad = None


@pytest.mark.parametrize("family", ["llama", "qwen3"])
def test_generic_decoder_converts(family, tmp_path):
    """A model type with no row of its own goes through the generic description, verified on disk."""
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen3Config

    common = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=16, vocab_size=384, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    config = LlamaConfig(**common) if family == "llama" else Qwen3Config(**common)
    torch.manual_seed(0)
    dense = AutoModelForCausalLM.from_config(config).eval()
    dense.save_pretrained(tmp_path / "source")
    model = slconvert.load(_convert(tmp_path / "source", tmp_path / "out"))
    assert sorted(routers(model)) == [0, 1]
    short, long = torch.randint(4, 384, (1, 16)), torch.randint(4, 384, (1, 40))
    with torch.no_grad():
        torch.testing.assert_close(model(short).logits, dense(short).logits, rtol=0, atol=1e-5)
        assert (model(long).logits - dense(long).logits).abs().max() > 1e-4


def test_multimodal_qwen3_5_moe_checkpoint_converts_its_language_model(tmp_path):
    """Real Qwen3.5 checkpoints are multimodal: language model under model.language_model, vision kept as is."""
    from transformers import CONFIG_MAPPING, AutoModelForCausalLM, AutoModelForImageTextToText

    from slconvert.tiny import tiny_config

    vision = dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64, patch_size=4,
                  temporal_patch_size=1, spatial_merge_size=1)
    config = CONFIG_MAPPING["qwen3_5_moe"](text_config=tiny_config("qwen3_5_moe_text").to_dict(), vision_config=vision)
    torch.manual_seed(0)
    AutoModelForImageTextToText.from_config(config).save_pretrained(tmp_path / "source")
    out = _convert(tmp_path / "source", tmp_path / "out")
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), "pt") as handle:
        names = list(handle.keys())
    assert "model.language_model.layers.1.self_attn.superlinear_router.weight" in names
    assert any(name.startswith("model.visual.") for name in names)
    model = slconvert.load(out)
    dense = AutoModelForCausalLM.from_pretrained(tmp_path / "source").eval()
    assert sorted(routers(model)) == [1, 3]
    short = torch.randint(4, 384, (1, 16))
    with torch.no_grad():
        torch.testing.assert_close(model(short).logits, dense(short).logits, rtol=0, atol=1e-5)
    model.save_pretrained(tmp_path / "saved")
    reloaded = slconvert.load(tmp_path / "saved")
    long = torch.randint(4, 384, (1, 40))
    with torch.no_grad():
        assert torch.equal(model(long).logits, reloaded(long).logits)


@pytest.mark.gpu
def test_converted_model_on_cuda_matches_cpu(tmp_path):
    out = _convert(build_tiny_model("nemotron_h", tmp_path / "source"), tmp_path / "out")
    cpu = slconvert.load(out)
    gpu = slconvert.load(out, device="cuda")
    assert all(r.weight.device.type == "cuda" for r in routers(gpu).values())
    tokens = torch.randint(4, 384, (2, 48))
    mask = torch.ones_like(tokens)
    mask[0, :5] = 0
    with torch.no_grad():
        expected = cpu(tokens, attention_mask=mask).logits
        got = gpu(tokens.cuda(), attention_mask=mask.cuda()).logits.cpu()
    torch.testing.assert_close(got, expected, rtol=1e-3, atol=1e-3)
    generated = gpu.generate(tokens[1:].cuda(), max_new_tokens=4, do_sample=False)
    assert generated.shape == (1, 52)
    half = slconvert.load(out, device="cuda", dtype=torch.bfloat16)
    with torch.no_grad():
        assert torch.isfinite(half(tokens.cuda(), attention_mask=mask.cuda()).logits).all()


def _decode_call(model):
    """One converted layer's attention function on a one-token decode over 40 cached keys, and its inputs."""
    from slconvert.attention import superlinear_attention_forward

    layer = next(m for m in model.modules() if getattr(m, "superlinear_router", None) is not None)
    config = layer.superlinear_router.config
    heads, kv_heads = model.config.num_attention_heads, model.config.num_key_value_heads
    dim = model.config.hidden_size // heads if not getattr(model.config, "head_dim", None) else model.config.head_dim
    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, heads, 1, dim, generator=g)
    k, v = (torch.randn(1, kv_heads, 40, dim, generator=g) for _ in range(2))
    pos = torch.tensor([39])

    def call(q, k, v, pos):
        return superlinear_attention_forward(layer, q, k, v, None, scaling=dim ** -0.5, cache_position=pos)[0]

    assert config.window < 39  # the decode row reaches past the window: spans are searched
    return call, (q, k, v, pos)


def test_compiled_inference_holds_the_call_as_one_operation(bamba, monkeypatch):
    """With ATTENTION_OP on, a decode step compiles as one graph (fullgraph: no break in the kernels' host code)
    and returns the eager result; with it off the same compile breaks the graph, so the operation is what holds it.
    The graph is traced by Dynamo and run through AOT autograd with the operation's fake implementation
    ("aot_eager"): what a compiler backend is handed, without building C++ on the CPU (20-30 s here)."""
    import slconvert.attention as attention

    call, inputs = _decode_call(bamba)
    with torch.no_grad():
        expected = call(*inputs)
        monkeypatch.setattr(attention, "ATTENTION_OP", True)
        torch.compiler.reset()
        try:
            got = torch.compile(call, fullgraph=True, dynamic=False, backend="aot_eager")(*inputs)
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
            monkeypatch.setattr(attention, "ATTENTION_OP", False)
            torch.compiler.reset()
            with pytest.raises(Exception, match="(?i)graph break|item|data-dependent|Unsupported"):
                torch.compile(call, fullgraph=True, dynamic=False, backend="aot_eager")(*inputs)
        finally:
            torch.compiler.reset()
    with torch.enable_grad():  # training never takes the operation (it has no backward)
        monkeypatch.setattr(attention, "ATTENTION_OP", True)
        q = inputs[0].clone().requires_grad_(True)
        call(q, *inputs[1:]).sum().backward()
        monkeypatch.setattr(attention, "ATTENTION_OP", False)
        plain = inputs[0].clone().requires_grad_(True)
        call(plain, *inputs[1:]).sum().backward()
    assert q.grad is not None and q.grad.abs().max() > 0
    torch.testing.assert_close(q.grad, plain.grad, rtol=0, atol=0)  # the path without the operation, to the bit


def test_each_converted_layer_passes_its_own_state_to_calls_through_a_cache(bamba, monkeypatch):
    """A converted layer's calls through a cache (a decode step: more keys than queries) share its router's
    LayerState (one per layer, its own in a copy); a forward without a cache passes none (its sums would never be
    reused), nor does a DataParallel replica or any call with KEEP_STATE off. Moving the router drops what it kept,
    and `clear_kept_state` drops it for the whole model."""
    import copy

    import slconvert.attention as attention
    from slconvert.router import state_by_key

    seen = []
    real = attention.superlinear_attention

    def spy(*args, state=None, **kwargs):
        seen.append(state)
        return real(*args, state=state, **kwargs)

    monkeypatch.setattr(attention, "superlinear_attention", spy)
    layers = [getattr(m, attention.ROUTER_ATTRIBUTE) for m in _converted_layers(bamba)]
    tokens = torch.randint(4, 200, (1, 24))

    def step() -> list:
        seen.clear()
        cache = bamba(tokens, use_cache=True).past_key_values
        assert seen == [None] * len(layers)  # the prefill holds every key it attends: nothing to keep for it
        seen.clear()
        bamba(tokens[:, -1:], past_key_values=cache, use_cache=True)
        return list(seen)

    with torch.no_grad():
        assert step() == [router.state for router in layers] and len({id(s) for s in seen}) == len(layers)
        assert all(state_by_key(router.state_key) is router.state for router in layers)
        twin = copy.deepcopy(layers[0])
        assert twin.state is not layers[0].state and state_by_key(twin.state_key) is twin.state
        layers[0]._is_replica = True  # what DataParallel marks its per-device copies with
        try:
            assert step() == [None] + [router.state for router in layers[1:]]
        finally:
            del layers[0]._is_replica
        monkeypatch.setattr(attention, "KEEP_STATE", False)
        assert step() == [None] * len(layers)


def test_which_calls_keep_state():
    """`_keeps_state`, what both the eager and the compiled path ask: calls through a cache (more keys than queries),
    with KEEP_STATE on, from a router that is not a DataParallel replica."""
    from slconvert.attention import _keeps_state

    router = SuperlinearRouter(4, 16, SuperlinearConfig(sw_index=2, num_spans=3), layer_idx=0)
    assert _keeps_state(router, 1, 40) and _keeps_state(router, 40, 300)
    assert not _keeps_state(router, 40, 40)
    router._is_replica = True
    assert not _keeps_state(router, 1, 40)


def test_moving_a_router_to_another_device_or_clearing_the_model_drops_what_its_state_keeps(bamba):
    """A move to another device drops the kept arrays (and the graphs' holds: those graphs cannot replay on the new
    device); a dtype change or a move that keeps the device keeps them, since a compiled graph may still replay over
    them. `clear_kept_state` drops every layer's and counts the bytes, held-for-graph arrays included."""
    from slkernels.triton_ops.prefix import BLOCK, KeySums, _tiling

    import slconvert.attention as attention

    def keep(router) -> int:
        router.state.key_sums = sums = KeySums()
        sums._reserve(2, 16, 300, _tiling(16, BLOCK), torch.device("cpu"))
        router.state._graphed.append(router.state.held())
        old = KeySums()
        old._reserve(2, 16, 100, _tiling(16, BLOCK), torch.device("cpu"))
        router.state._graphed.append(old.tensors())  # an earlier graph's arrays
        return sum(t.numel() * t.element_size() for kept in router.state._graphed for t in kept)

    router = SuperlinearRouter(4, 16, SuperlinearConfig(sw_index=2, num_spans=3), layer_idx=0)
    keep(router)
    router.to(torch.float64)
    router.to("cpu")
    assert router.state.held() and len(router.state._graphed) == 2
    router.to("meta")
    assert router.state.held() == () and not router.state._graphed
    layer = next(iter(routers(bamba).values()))
    held = keep(layer)
    assert attention.clear_kept_state(bamba) == held
    assert layer.state.held() == () and not layer.state._graphed


def test_a_compiled_call_never_makes_the_state_arrays_and_keeps_those_it_uses(monkeypatch):
    """`graph_state`: none for a span-mean call whose keys the state's arrays do not fit (the call would make them
    inside a CUDA graph's memory pool; it warns once that the sums are rebuilt), the state where they fit, whose
    arrays a call being recorded into a CUDA graph then holds past a reallocation (a call not being recorded holds
    nothing); the anchor key keeps nothing, so its state is always usable."""
    import warnings

    from slkernels import state as state_module
    from slkernels.triton_ops.prefix import BLOCK, KeySums, _tiling

    import slconvert.attention as attention
    from slconvert.attention import graph_state

    monkeypatch.setattr(state_module, "KEEP_MIN_KEYS", 0)
    mean = SuperlinearConfig(sw_index=2, num_spans=3, search_key="span_mean")
    router = SuperlinearRouter(4, 16, mean, layer_idx=0)
    keys = torch.zeros(1, 2, 300, 16, device="meta")  # not the CPU: a device where the Triton kernels would run
    with pytest.warns(UserWarning, match="builds the span-mean running sums itself"):
        assert graph_state(router.state_key, mean, keys) is None and router.state.key_sums is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per layer
        assert graph_state(router.state_key, mean, keys) is None
    assert graph_state(None, mean, keys) is None
    anchor = SuperlinearConfig(sw_index=2, num_spans=3)
    assert graph_state(router.state_key, anchor, keys) is router.state
    router.state.key_sums = sums = KeySums()
    sums._reserve(2, 16, 300, _tiling(16, BLOCK), keys.device)  # what the eager prefill makes
    assert graph_state(router.state_key, mean, keys) is router.state and not router.state._graphed
    monkeypatch.setattr(attention, "_recording", lambda key: True)
    assert graph_state(router.state_key, mean, keys) is router.state
    recorded = sums.pairs
    assert graph_state(router.state_key, mean, torch.zeros(1, 2, 5000, 16, device="meta")) is None  # outgrows them
    sums._reserve(2, 16, 5000, _tiling(16, BLOCK), keys.device)  # an eager call on a longer cache remakes them
    assert sums.pairs is not recorded
    assert [held[0] for held in router.state._graphed] == [recorded]  # a recorded graph's arrays stay alive
    router.state.clear()
    assert router.state.held() == () and not router.state._graphed


@pytest.mark.gpu
def test_generate_with_a_static_cache_and_the_span_mean_key_compiles_with_kept_sums(tmp_path, monkeypatch):
    """Compiled static-cache generation with the span-mean key: the eager prefill makes every layer's kept sums,
    the compiled steps extend them (no arrays made inside the graphs), and the greedy tokens are the dynamic
    cache's, with the state and without it."""
    from slkernels import state as state_module

    import slconvert.attention as attention

    monkeypatch.setattr(attention, "ATTENTION_OP", True)
    monkeypatch.setattr(state_module, "KEEP_MIN_KEYS", 0)  # a short cache: keep its sums all the same
    out = _convert(build_tiny_model("nemotron_h", tmp_path / "source"), tmp_path / "out", "--search-key", "span_mean")
    model = slconvert.load(out, device="cuda")
    tokens = torch.randint(4, 384, (1, 200), device="cuda")
    states = [router.state for router in routers(model).values()]
    try:
        monkeypatch.setattr(attention, "KEEP_STATE", False)
        eager = model.generate(tokens, max_new_tokens=12, do_sample=False)
        plain = model.generate(tokens, max_new_tokens=12, do_sample=False, cache_implementation="static")
        assert all(state.held() == () for state in states)
        torch.compiler.reset()
        monkeypatch.setattr(attention, "KEEP_STATE", True)
        kept = model.generate(tokens, max_new_tokens=12, do_sample=False, cache_implementation="static")
    finally:
        torch.compiler.reset()
    assert torch.equal(plain, eager) and torch.equal(kept, eager)
    assert all(state.held() and len(state._graphed) == 1 for state in states)


@pytest.mark.gpu
def test_generate_with_a_static_cache_compiles_through_the_operation(tmp_path, monkeypatch):
    """transformers' generate compiles the forward on a GPU when the cache is static: with ATTENTION_OP on, its
    greedy tokens are the dynamic cache's (eager) tokens."""
    import slconvert.attention as attention

    monkeypatch.setattr(attention, "ATTENTION_OP", True)
    out = _convert(build_tiny_model("nemotron_h", tmp_path / "source"), tmp_path / "out")
    model = slconvert.load(out, device="cuda")
    tokens = torch.randint(4, 384, (1, 200), device="cuda")
    try:
        eager = model.generate(tokens, max_new_tokens=12, do_sample=False)
        compiled = model.generate(tokens, max_new_tokens=12, do_sample=False, cache_implementation="static")
    finally:
        torch.compiler.reset()
    assert torch.equal(compiled, eager)


@pytest.mark.gpu
def test_eager_generate_on_a_static_cache_replays_its_decode_steps_from_graphs(tmp_path, monkeypatch):
    """transformers' generate on a static cache, not compiled: with the decode steps replayed from CUDA graphs
    (decode_graphs.GRAPH_DECODE) its greedy tokens are those of the plain eager decode, and each converted layer's
    step was captured (one graph per layer)."""
    from collections import OrderedDict

    from slkernels import decode_graphs

    out = _convert(build_tiny_model("nemotron_h", tmp_path / "source"), tmp_path / "out")
    model = slconvert.load(out, device="cuda")
    tokens = torch.randint(4, 384, (1, 200), device="cuda")
    generate = dict(max_new_tokens=12, do_sample=False, cache_implementation="static", disable_compile=True)
    monkeypatch.setattr(decode_graphs, "GRAPH_DECODE", False)
    plain = model.generate(tokens, **generate)
    monkeypatch.setattr(decode_graphs, "GRAPH_DECODE", True)
    monkeypatch.setattr(decode_graphs, "_ENTRIES", OrderedDict())
    replayed = model.generate(tokens, **generate)
    assert torch.equal(replayed, plain)
    layers = len(json.loads((out / "config.json").read_text())["superlinear"]["layers"])
    assert sum(entry.graph is not None for entry in decode_graphs._ENTRIES.values()) == layers


def test_the_layers_of_one_forward_derive_the_mask_and_positions_once(bamba, monkeypatch):
    """Every converted layer of a forward gets the same mask tensor: the first derives the kernels' mask and the
    query positions from it, the later layers take them (a dozen small operations per layer and decode step saved);
    a new mask, the same one changed in place, or the next forward (a layer at or below the last that took them) is
    derived again, and the derived tensors go with the mask."""
    import gc

    import slconvert.attention as attention

    derived = []
    left_padding = attention._left_padding
    monkeypatch.setattr(attention, "_left_padding", lambda *a, **k: derived.append(1) or left_padding(*a, **k))
    calls = []
    real = attention.superlinear_attention
    monkeypatch.setattr(attention, "superlinear_attention", lambda *a, **k: calls.append(k) or real(*a, **k))
    first, later = _converted_layers(bamba)
    q = torch.randn(2, 4, 1, 16)
    k, v = torch.randn(2, 2, 12, 16), torch.randn(2, 2, 12, 16)
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[0, :3] = 0
    with torch.no_grad():
        outs = [attention.superlinear_attention_forward(m, q, k, v, mask)[0] for m in (first, later)]
        assert len(derived) == 1
        assert calls[1]["attention_mask"] is calls[0]["attention_mask"]
        assert calls[0]["cache_position"].tolist() == [11]
        again = attention.superlinear_attention_forward(first, q, k, v, mask)[0]  # the next forward: derived again
        assert len(derived) == 2 and torch.equal(again, outs[0])
        mask[0, 3] = 0  # changed in place: derived again
        changed = attention.superlinear_attention_forward(later, q, k, v, mask)[0]
        assert len(derived) == 3 and calls[-1]["attention_mask"][0, :4].tolist() == [0, 0, 0, 0]
        assert not torch.equal(changed, outs[1])
        attention.superlinear_attention_forward(later, q, k, v, mask.clone())  # another tensor: derived again
        assert len(derived) == 4
    calls.clear()
    del mask
    gc.collect()
    assert attention._DERIVED == []  # gone with the last mask


def test_the_next_forward_of_a_lone_converted_layer_derives_the_mask_again(bamba):
    """A model with one converted layer calls it once per forward: the next forward's call (the layer that last
    took them, not one above it) derives the mask and positions again from a mask written in place without a
    version change (as a CUDA-graph replay writes it)."""
    import slconvert.attention as attention

    first, _ = _converted_layers(bamba)
    q = torch.randn(1, 4, 1, 16)
    k, v = torch.randn(1, 2, 12, 16), torch.randn(1, 2, 12, 16)
    mask = torch.ones(1, 12, dtype=torch.long)
    with torch.no_grad():
        attention.superlinear_attention_forward(first, q, k, v, mask)
        version = mask._version
        mask.data[0, 10:] = 0  # the query row is now key 9
        assert mask._version == version
        again = attention.superlinear_attention_forward(first, q, k, v, mask)[0]
        expected = attention.superlinear_attention_forward(first, q, k, v, mask.clone())[0]
    assert torch.equal(again, expected)


def test_a_mask_written_without_a_version_change_is_read_again_by_the_next_forward(bamba):
    """torch.compile's CUDA-graph mode hands a forward's compiled graphs' outputs back as the same tensor objects at
    every replay, written by the replay without a version change; the mask transformers builds is such an output
    when the Superlinear call runs between the compiled graphs. The next forward's first layer must read it again:
    here the mask object stays, its contents move the query row from key 11 to key 9 (`.data` writes bypass the
    version counter, as a replay does)."""
    import slconvert.attention as attention

    first, later = _converted_layers(bamba)
    q = torch.randn(1, 4, 1, 16)
    k, v = torch.randn(1, 2, 12, 16), torch.randn(1, 2, 12, 16)
    mask = torch.ones(1, 12, dtype=torch.long)
    expected = {}
    for end in (11, 9):
        fresh = torch.ones(1, 12, dtype=torch.long)
        fresh[0, end + 1:] = 0  # a static cache's slots not yet written
        with torch.no_grad():
            expected[end] = [attention.superlinear_attention_forward(m, q, k, v, fresh.clone())[0]
                             for m in (first, later)]
    with torch.no_grad():
        for end in (11, 9):
            version = mask._version
            mask.data[0] = 1
            mask.data[0, end + 1:] = 0
            assert mask._version == version
            outs = [attention.superlinear_attention_forward(m, q, k, v, mask)[0] for m in (first, later)]
            assert all(torch.equal(o, e) for o, e in zip(outs, expected[end]))
