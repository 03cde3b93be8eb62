"""The converted checkpoint on disk: sharding, streaming, config block, card, dtype, layer choice, router init,
atomicity, plain-transformers loading, and the peak memory of a conversion."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from cli_helpers import convert_cli
from safetensors import safe_open
from slkernels import SuperlinearConfig, select_spans

import slconvert
from slconvert.attention import capture_attention
from slconvert.checkpoint import SafetensorsWriter, directory_digest, sha256_file
from slconvert.router import routers
from slconvert.tiny import build_tiny_model

_convert = convert_cli


def _tensors(directory: Path) -> dict[str, torch.Tensor]:
    found = {}
    for path in sorted(directory.glob("*.safetensors")):
        with safe_open(str(path), "pt") as handle:
            for name in handle.keys():
                found[name] = handle.get_tensor(name)
    return found


@pytest.fixture(scope="module")
def sharded_pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("sharded")
    source = build_tiny_model("qwen3_next", root / "source", max_shard_size="60KB")
    digest = directory_digest(source)
    out = root / "out"
    _convert(source, out)
    return source, out, digest


def test_sharded_output_layout_and_config_block(sharded_pair):
    source, out, digest = sharded_pair
    source_index = json.loads((source / "model.safetensors.index.json").read_text())
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = sorted(set(source_index["weight_map"].values()))
    assert len(shards) >= 3
    assert sorted(set(index["weight_map"].values())) == shards
    for shard in shards:
        assert (out / shard).is_file()
    # Every source tensor is carried over bit-exactly, in the same shard; routers sit beside their q_proj.
    before, after = _tensors(source), _tensors(out)
    for name, tensor in before.items():
        assert torch.equal(after[name], tensor), name
        assert index["weight_map"][name] == source_index["weight_map"][name]
    added = sorted(set(after) - set(before))
    assert added == ["model.layers.1.self_attn.superlinear_router.weight", "model.layers.3.self_attn.superlinear_router.weight"]
    for name in added:
        q_name = name.replace("superlinear_router", "q_proj")
        assert index["weight_map"][name] == source_index["weight_map"][q_name]
        with safe_open(str(out / index["weight_map"][name]), "pt") as handle:
            assert name in handle.keys()
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in after.values())

    config = json.loads((out / "config.json").read_text())
    block = config["superlinear"]
    assert block["params"] == SuperlinearConfig(sw_index=3, search_power=0.5, span_power=0.5).to_dict()
    assert block["window"] == 15 and block["layers"] == [1, 3]
    assert block["router"]["parameterization"] == "per_head_query_map" and block["router"]["init"] == "host_logits"
    assert block["router"]["alpha"] == {"1": 16**-0.5, "3": 16**-0.5}  # the host's softmax scale, head_dim 16
    # The block lists exactly the names written into OUT (what a later `convert --force` may replace): the index too.
    assert block["files"] == sorted(p.name for p in out.iterdir())
    assert "model.safetensors.index.json" in block["files"]
    assert block["slconvert_version"] == slconvert.__version__
    assert block["source"]["path"] == str(source.resolve())
    assert block["source"]["sha256"] == {shard: sha256_file(source / shard) for shard in shards}
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        assert (out / name).read_bytes() == (source / name).read_bytes()
    card = (out / "README.md").read_text()
    assert "slconvert.load" in card and "layers 1, 3" in card and "sw_index" in card
    assert directory_digest(source) == digest
    assert not [p for p in out.parent.iterdir() if ".partial-" in p.name]


def test_sharded_output_loads_and_matches_dense_prefix(sharded_pair):
    from transformers import AutoModelForCausalLM

    source, out, _ = sharded_pair
    model = slconvert.load(out)
    dense = AutoModelForCausalLM.from_pretrained(source).eval()
    tokens = torch.randint(4, 384, (1, 16))
    with torch.no_grad():
        torch.testing.assert_close(model(tokens).logits, dense(tokens).logits, rtol=0, atol=1e-5)


def test_plain_transformers_loading_gives_the_dense_model(sharded_pair):
    from transformers import AutoModelForCausalLM

    source, out, _ = sharded_pair
    plain, info = AutoModelForCausalLM.from_pretrained(out, output_loading_info=True)
    assert sorted(info["unexpected_keys"]) and all("superlinear_router" in k for k in info["unexpected_keys"])
    assert not info["missing_keys"]
    dense = AutoModelForCausalLM.from_pretrained(source)
    tokens = torch.randint(4, 384, (1, 40))
    with torch.no_grad():
        assert torch.equal(plain.eval()(tokens).logits, dense.eval()(tokens).logits)
    assert not routers(plain)


def test_dtype_cast_and_layer_choice(tmp_path):
    source = build_tiny_model("jamba", tmp_path / "source", layers=6)  # attention at 1, 3, 5
    out = tmp_path / "out"
    _convert(source, out, "--dtype", "bfloat16", "--layers", "1,3,5", "--keep-dense", "-1")
    config = json.loads((out / "config.json").read_text())
    assert config["dtype"] == "bfloat16"
    assert config["superlinear"]["layers"] == [1, 3] and config["superlinear"]["dense_attention_layers"] == [5]
    tensors = _tensors(out)
    assert all(t.dtype == torch.bfloat16 for t in tensors.values() if t.is_floating_point())
    assert sorted(n for n in tensors if "superlinear_router" in n) == [
        "model.layers.1.self_attn.superlinear_router.weight",
        "model.layers.3.self_attn.superlinear_router.weight",
    ]
    model = slconvert.load(out, dtype="float32")
    assert sorted(routers(model)) == [1, 3]
    assert not hasattr(model.get_submodule("model.layers.5.self_attn"), "superlinear_router")
    with capture_attention(model) as records, torch.no_grad():
        model(torch.randint(4, 384, (1, 30)))
    assert sorted(r["layer_idx"] for r in records) == [1, 3]


def test_router_init_host_logits_selects_the_host_attention_top_anchors(tmp_path):
    source = build_tiny_model("granitemoehybrid", tmp_path / "source")  # scale = attention_multiplier 0.3
    out = tmp_path / "out"
    _convert(source, out, "--num-spans", "2")
    model = slconvert.load(out)
    # Every setting of the command line comes back with the loaded layers (the SMALL options and --num-spans 2).
    given = SuperlinearConfig(sw_index=3, search_power=0.5, span_power=0.5, num_spans=2)
    assert [router.config for router in routers(model).values()] == [given, given]
    for router in routers(model).values():
        eye = torch.eye(router.head_dim).expand_as(router.weight)
        torch.testing.assert_close(router.weight, 0.3 * eye)
    with capture_attention(model) as records, torch.no_grad():
        model(torch.randint(4, 384, (2, 60)))
    assert len(records) == 2
    for record in records:
        q, k, config = record["q"], record["k"], record["config"]
        torch.testing.assert_close(record["q_search"], record["scale"] * q)
        chosen = select_spans(record["q_search"], k, config).anchor  # [B, H, L, k]
        # Brute force: the host's own logits at every candidate anchor, top-k per query.
        group = q.shape[1] // k.shape[1]
        logits = torch.einsum("bhld,bhmd->bhlm", q, k.repeat_interleave(group, dim=1)) * record["scale"]
        window = config.window
        for row in range(window + 1, q.shape[2]):
            offsets, i = [], config.sw_index + 1
            while (off := int(i ** (1 / config.search_power) + 1e-9)) <= row + 1:
                offsets.append(off)
                i += 1
            anchors = torch.tensor([row + 1 - o for o in offsets])
            top = logits[:, :, row, anchors].topk(min(config.num_spans, len(offsets)), dim=-1).indices
            expected = anchors[top].sort(dim=-1).values
            got = chosen[:, :, row, : expected.shape[-1]].sort(dim=-1).values
            assert torch.equal(got, expected), row


def test_router_init_random_is_seeded(tmp_path):
    source = build_tiny_model("bamba", tmp_path / "source")
    weights = {}
    for name, seed in (("a", "1"), ("b", "1"), ("c", "2")):
        _convert(source, tmp_path / name, "--router-init", "random", "--seed", seed)
        weights[name] = {k: v for k, v in _tensors(tmp_path / name).items() if "superlinear_router" in k}
    assert weights["a"].keys() == weights["b"].keys() == weights["c"].keys()
    for key in weights["a"]:
        assert torch.equal(weights["a"][key], weights["b"][key])
        assert not torch.equal(weights["a"][key], weights["c"][key])
        assert not torch.allclose(weights["a"][key], torch.eye(16).expand_as(weights["a"][key]) * 0.25)
    # Seeded per layer: the two converted layers of one conversion start from different routers.
    first, second = sorted(weights["a"])
    assert not torch.equal(weights["a"][first], weights["a"][second])
    block = json.loads((tmp_path / "c" / "config.json").read_text())["superlinear"]
    assert block["router"]["init"] == "random" and block["router"]["seed"] == 2
    model = slconvert.load(tmp_path / "c")
    with torch.no_grad():
        assert torch.isfinite(model(torch.randint(4, 384, (1, 50))).logits).all()
    # The routers on disk are the ones the in-memory conversion gives (README: the same routers with the same
    # initial weights), element for element: none is stored transposed or under another layer's seed.
    from transformers import AutoModelForCausalLM

    from slconvert.benchmark.model import convert_in_memory

    live = AutoModelForCausalLM.from_pretrained(source)
    convert_in_memory(live, SuperlinearConfig(), router_init="random", seed=2)
    assert sorted(routers(live)) == sorted(routers(model))
    for layer, router in routers(model).items():
        assert torch.equal(router.weight, routers(live)[layer].weight), layer


def test_interrupted_conversion_leaves_no_partial_checkpoint(tmp_path, monkeypatch):
    from slconvert.surgery import convert, plan_conversion

    source = build_tiny_model("minimax", tmp_path / "source")
    plan = plan_conversion(source, SuperlinearConfig(sw_index=3, search_power=0.5))

    def interrupted(self, progress=None):
        (self.path).write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(SafetensorsWriter, "write", interrupted)
    with pytest.raises(KeyboardInterrupt):
        convert(plan, tmp_path / "out", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["source"]


PEAK_SCRIPT = textwrap.dedent(
    """
    import json, re, sys
    from pathlib import Path
    from slconvert.surgery import convert, plan_conversion
    from slconvert.surgery.convert import check_dtype
    from slkernels import SuperlinearConfig

    def status(key):
        return int(re.search(key + r":\\s+(\\d+)", Path("/proc/self/status").read_text()).group(1)) * 1024

    source, out, dtype = sys.argv[1], sys.argv[2], sys.argv[3]
    plan = plan_conversion(source, SuperlinearConfig(), dtype=check_dtype(dtype))
    Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark
    base = status("VmRSS")
    convert(plan, out, progress=False)
    print(json.dumps({"base": base, "peak": status("VmHWM"), "largest": plan.weights.largest_file_bytes}))
    """
)


@pytest.mark.parametrize("dtype", [pytest.param("auto", marks=pytest.mark.slow), "bfloat16"])  # "auto": `make test-slow`
def test_peak_memory_stays_below_twice_the_largest_shard(tmp_path, dtype):
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("needs Linux /proc to measure the memory high-water mark")
    source = build_tiny_model("nemotron_h", tmp_path / "source", hidden=256, vocab=12288, max_shard_size="4MB")
    shards = list(source.glob("*.safetensors"))
    assert len(shards) >= 3
    result = subprocess.run(
        [sys.executable, "-c", PEAK_SCRIPT, str(source), str(tmp_path / "out"), dtype],
        capture_output=True, text=True, check=True,
    )
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    growth = figures["peak"] - figures["base"]
    print(f"dtype={dtype}: largest shard {figures['largest'] / 2**20:.1f} MiB, "
          f"peak RSS growth while converting {growth / 2**20:.1f} MiB")
    assert figures["largest"] > 10 * 2**20
    assert growth < 2 * figures["largest"]


def test_nemotron_h_in_memory_layout_is_found_on_disk(tmp_path):
    """A NemotronH checkpoint saved with in-memory names (model.layers.N.mixer, not backbone.*) converts too."""
    from transformers import AutoModelForCausalLM

    source = build_tiny_model("nemotron_h", tmp_path / "original")
    dense = AutoModelForCausalLM.from_pretrained(source).eval()
    dense.save_pretrained(tmp_path / "memory_layout", save_original_format=False)
    _convert(tmp_path / "memory_layout", tmp_path / "out")
    names = set(_tensors(tmp_path / "out"))
    assert "model.layers.1.mixer.superlinear_router.weight" in names
    assert not any(name.startswith("backbone.") for name in names)
    model = slconvert.load(tmp_path / "out")
    tokens = torch.randint(4, 384, (1, 16))
    with torch.no_grad():
        torch.testing.assert_close(model(tokens).logits, dense(tokens).logits, rtol=0, atol=1e-5)


def test_model_card_names_the_dense_layers_lengths_and_shards_in_order():
    """The card states the attended keys at 128K = 131,072 and 1M = 1,048,576 tokens (binary K and M, as `inspect`
    does), says "none" when no attention layer stays dense, and lists the source hashes sorted by file name."""
    from types import SimpleNamespace

    from slconvert.model_card import model_card

    params = SuperlinearConfig(sw_index=3, search_power=0.5, span_power=0.5)
    plan = SimpleNamespace(source=SimpleNamespace(arch=SimpleNamespace(model_type="nemotron_h")), params=params,
                           dtype=None)
    block = {"params": params.to_dict(), "window": params.window, "layers": [1, 3], "dense_attention_layers": [],
             "slconvert_version": slconvert.__version__,
             "source": {"path": "/src", "sha256": {"b.safetensors": "22", "a.safetensors": "11"}},
             "router": {"parameterization": "per_head_query_map", "attribute": "router", "init": "host_logits",
                        "seed": None}}
    card = model_card(plan, block)
    assert "(dense 131,072)" in card and "(dense 1,048,576)" in card
    assert "attention layers kept dense: none." in card
    assert card.index("`a.safetensors`: `11`") < card.index("`b.safetensors`: `22`")
