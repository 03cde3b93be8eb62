"""`slconvert bench --model`: the whole-model benchmark on the CPU, on the shipped tiny teacher converted with
small Superlinear settings; and scripts/build_nano_shape.py."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from cli_helpers import convert_cli
from click.testing import CliRunner
from module_file import load_module

from slconvert.assets import TINY_TEACHER
from slconvert.benchmark import model as mb
from slconvert.benchmark.model_report import TABLE_HEADER, format_card
from slconvert.cli import main
from slconvert.evaluation.models import cache_keyword

ROOT = Path(__file__).resolve().parents[1]


def _messages(result) -> str:
    """stdout and stderr as the user sees them (click's `output` holds both)."""
    return result.output or ""


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> Path:
    return convert_cli(TINY_TEACHER, tmp_path_factory.mktemp("bench") / "converted")


@pytest.fixture(scope="module")
def cli_run(converted, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench-out")
    result = CliRunner().invoke(main, ["bench", "--model", str(converted), "--lengths", "32,64", "--chunk", "32",
                                       "--decode-tokens", "1", "--profile-decode", "2", "--device", "cpu",
                                       "--out", str(out)])
    assert result.exit_code == 0, _messages(result)
    return result, out


@pytest.fixture(scope="module")
def model(converted):
    return mb.load_for_bench(converted, "cpu")


def test_bench_model_writes_json_png_and_card_with_both_attentions(cli_run, converted):
    result, out = cli_run
    data = json.loads((out / "model_bench.json").read_text())
    assert data["complete"] is True
    env = data["environment"]
    assert env["gpu"].startswith("CPU") and env["torch"] == torch.__version__
    assert {"transformers", "triton", "python", "slconvert"} <= set(env)
    shape = data["model"]
    assert shape["model_type"] == "nemotron_h" and shape["layers"] == 4 and shape["pattern"] == "MAEA"
    assert shape["converted_layers"] == [1, 3] and shape["window"] == 15 and shape["parameters"] > 0
    assert data["attention_check"] == {"superlinear": {"superlinear_calls_per_forward": 2, "expected": 2},
                                       "dense": {"superlinear_calls_per_forward": 0, "expected": 0}}
    rows = {(r["attention"], r["length"]): r for r in data["rows"]}
    assert set(rows) == {(a, n) for a in ("superlinear", "dense") for n in (32, 64)}
    for (_, length), row in rows.items():
        assert row["status"] == "ok"
        prefill, decode = row["prefill"], row["decode"]
        assert prefill["status"] == "ok" and prefill["chunks"] == length // 32
        assert prefill["tokens_per_s"] == pytest.approx(length / prefill["seconds"])
        assert decode["status"] == "ok" and decode["tokens"] == 1 and decode["tokens_per_s"] > 0
        assert prefill["peak_gib"] is None  # measured on a GPU only
        assert row["decode_compiled"]["status"].startswith("not run: no CUDA device")
        prof = row["decode_profile"]
        assert prof["steps"] == 2 and prof["wall_ms"] > 0 and prof["device_busy_ms"] is None
        assert 0 < sum(op["ms"] for op in prof["top_host_ops"]) <= prof["wall_ms"]
        assert prof["kernels"] == 0 and prof["top_kernels"] == []  # no device on the CPU
    ratios = {r["length"]: r for r in data["ratios"]}
    for length in (32, 64):
        sl, dense = rows[("superlinear", length)], rows[("dense", length)]
        assert ratios[length]["prefill_speed"] == pytest.approx(
            sl["prefill"]["tokens_per_s"] / dense["prefill"]["tokens_per_s"])
        assert ratios[length]["decode_compiled_speed"] is None
    assert (out / "model_bench.png").read_bytes()[:4] == b"\x89PNG"
    card = (out / "model_bench.md").read_text()
    assert TABLE_HEADER in card and card.count("| Superlinear / dense |") == 2
    assert "compiled decode (every row): not run" in card
    assert "Eager decode under the profiler (per step, mean of 2 steps):" in card and card.count("kernels, ") == 4
    assert TABLE_HEADER in result.output and "wrote " in result.output


def test_lengths_past_the_declared_context_get_one_note(cli_run, converted, capsys):
    """Timing past the context is allowed (speed only), but said: the tiny teacher declares 8K."""
    from slconvert.commands.bench import _note_lengths_past_context

    assert "note:" not in cli_run[0].output  # 32 and 64 are inside it
    _note_lengths_past_context(converted, [64, 8192, 16384, 1 << 20])
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"note: 16K, 1M exceed the 8K tokens {converted}/config.json declares; those rows time speed only "
                   "(the model never saw such lengths)"]


def test_card_says_where_the_compiled_decode_ran_the_attention(cli_run):
    _, out = cli_run
    result = json.loads((out / "model_bench.json").read_text())
    assert "Compiled decode: the Superlinear call ran" not in format_card(result)  # not run: nothing to say
    result["rows"][0]["decode_compiled"] = {"status": "ok", "tokens": 1, "seconds": 0.1, "tokens_per_s": 10.0,
                                            "ms_per_token": 100.0, "peak_gib": None, "attention": "in the graph"}
    assert "Compiled decode: the Superlinear call ran in the graph." in format_card(result)


def test_compiled_decode_on_a_gpu_gathers_float32_experts_and_gives_them_back(model):
    """transformers' `grouped_mm` experts under torch.compile read host offsets outside bfloat16, which a CUDA graph
    cannot capture: on a CUDA device the compiled decode runs them as `batched_mm`, with the same outputs, and hands
    the model back as it was; on the CPU, or in bfloat16, nothing changes."""
    ids = torch.arange(4, 40)[None]
    with torch.no_grad():
        before = model(ids).logits
        cuda = mb._Device("cpu")
        cuda.cuda = True  # the decision only, no CUDA work
        with mb.compiled_decode_setting(model, cuda, in_graph=True) as experts:
            assert experts == model.config._experts_implementation == "batched_mm"
            torch.testing.assert_close(model(ids).logits, before, rtol=1e-4, atol=1e-4)
        assert model.config._experts_implementation == "grouped_mm"
        with mb.compiled_decode_setting(model, mb._Device("cpu"), in_graph=True) as experts:
            assert experts is None and model.config._experts_implementation == "grouped_mm"
        bf16 = copy.deepcopy(model).to(torch.bfloat16)  # a copy: the module's model keeps its float32 weights
        with mb.compiled_decode_setting(bf16, cuda, in_graph=True) as experts:
            assert experts is None and bf16.config._experts_implementation == "grouped_mm"


def test_step_profile_counts_a_known_step():
    """Each step runs one matrix product and reads one scalar back: the profile counts both per step."""
    from slconvert.benchmark.step_profile import profile_steps

    layer = torch.nn.Linear(8, 8)

    def step(token, position):
        logits = layer(torch.ones(1, 1, 8))
        float(logits.sum().detach())  # a host read of a device value: a synchronisation on a GPU
        return logits

    with torch.no_grad():
        summary, token, position = profile_steps(step, torch.zeros(1, 1, dtype=torch.long), 7, 3, torch.device("cpu"))
    assert summary["steps"] == 3 and position == 10 and token.shape == (1, 1)
    assert summary["scalar_reads"] == 1.0 and summary["kernels"] == 0 and summary["device_busy_ms"] is None
    ops = {op["op"]: op["calls"] for op in summary["top_host_ops"]}
    assert ops.get("aten::addmm") == 1.0
    assert 0 < sum(op["ms"] for op in summary["top_host_ops"]) <= summary["wall_ms"]


def test_step_profile_feeds_each_step_the_greedy_token_of_the_last_position():
    """A step may return logits for several positions (a prefill's shape): the next step gets the argmax of the
    last position's logits, not of the first."""
    from slconvert.benchmark.step_profile import profile_steps

    seen = []

    def step(token, position):
        seen.append((int(token), position))
        logits = torch.zeros(1, 2, 5)
        logits[0, 0, 1] = 1.0  # the first position prefers token 1
        logits[0, 1, (position % 3) + 2] = 1.0  # the last one token 2, 3 or 4
        return logits

    summary, token, position = profile_steps(step, torch.zeros(1, 1, dtype=torch.long), 4, 3, torch.device("cpu"))
    assert seen == [(0, 4), (3, 5), (4, 6)]
    assert token.tolist() == [[2]] and position == 7


def test_step_profile_lists_the_top_host_ops_most_expensive_first():
    """With more distinct host operations a step than TOP_OPS, the summary keeps exactly TOP_OPS of them, in
    decreasing host time."""
    from slconvert.benchmark.step_profile import TOP_OPS, profile_steps

    x = torch.rand(64, 64) + 0.5
    ops = (torch.sin, torch.cos, torch.exp, torch.log, torch.tanh, torch.sigmoid, torch.sqrt, torch.abs, torch.neg,
           torch.relu, torch.floor, torch.ceil, torch.round, torch.reciprocal, torch.square, torch.erf)
    assert len(ops) > TOP_OPS

    def step(token, position):
        for op in ops:
            op(x)
        return torch.zeros(1, 1, 4)

    summary, _, _ = profile_steps(step, torch.zeros(1, 1, dtype=torch.long), 0, 2, torch.device("cpu"))
    times = [op["ms"] for op in summary["top_host_ops"]]
    assert len(times) == TOP_OPS and times == sorted(times, reverse=True)


def test_dense_switch_runs_stock_sdpa_and_no_superlinear_call(model, monkeypatch):
    """Dense mode calls slconvert's Superlinear kernel entry never and gives the source model's logits."""
    from transformers import AutoModelForCausalLM

    from slconvert import attention

    calls = []
    real = attention.superlinear_attention

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(attention, "superlinear_attention", counting)
    ids = torch.arange(4, 68)[None]  # 64 tokens: most rows lie beyond the window (W = 15)
    with torch.no_grad():
        sparse = model(input_ids=ids).logits
        assert len(calls) == 2
        mb.use_attention(model, "dense")
        try:
            assert model.config._attn_implementation == "sdpa"
            dense = model(input_ids=ids).logits
            assert len(calls) == 2
        finally:
            mb.use_attention(model, "superlinear")
        again = model(input_ids=ids).logits
        source = AutoModelForCausalLM.from_pretrained(TINY_TEACHER, attn_implementation="sdpa").eval()
        reference = source(input_ids=ids).logits
    assert len(calls) == 4
    torch.testing.assert_close(dense, reference, rtol=1e-4, atol=1e-4)
    assert (sparse - dense).abs().max() > 1e-2
    torch.testing.assert_close(again, sparse)


@pytest.mark.parametrize("variant", ["superlinear", "dense"])
def test_static_copy_decodes_like_the_dynamic_cache(model, variant):
    """The compiled decode's cache path (StaticCache filled from the prefill, no cache_position), run uncompiled,
    gives the eager decode's logits."""
    dev = mb._Device("cpu")
    ids = torch.arange(4, 52)[None]
    mb.use_attention(model, variant)
    try:
        with torch.no_grad():
            eager_cache, token, _ = mb._prefill(model, ids, 16, dev, lambda _t: None)
            static_cache, _, _ = mb._prefill(model, ids, 16, dev, lambda _t: None)
            static = mb.static_copy(model, static_cache, 60)
            eager_step = mb._eager_step(model, eager_cache)
            for position in range(48, 51):
                expected = eager_step(token, position)
                got = model(input_ids=token, use_cache=True, **{cache_keyword(model): static}).logits  # positions: mask
                torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
                token = expected[:, -1:].argmax(-1)
    finally:
        mb.use_attention(model, "superlinear")


def test_compile_failure_is_a_row_not_a_crash(model, converted, monkeypatch):
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    from slconvert.attention import superlinear_attention_forward

    def no_compiler(forward, mode):
        raise RuntimeError("no C++ compiler found\nmore detail")

    monkeypatch.setattr(mb, "compile_forward", no_compiler)
    cfg = mb.ModelBenchSettings(str(converted), lengths=[32], chunk=32, decode_tokens=1, compile=True, dense=False,
                                device="cpu")
    result = mb.run_model_benchmark(cfg, model=model)
    (row,) = result["rows"]
    assert row["prefill"]["status"] == "ok" and row["decode"]["status"] == "ok"
    assert row["decode_compiled"] == {"status": "unsupported: RuntimeError: no C++ compiler found"}
    assert "compiled decode (every row): unsupported: RuntimeError: no C++ compiler found" in format_card(result)
    assert ALL_ATTENTION_FUNCTIONS["superlinear"] is superlinear_attention_forward


def test_dense_out_of_memory_is_recorded_and_longer_lengths_skipped(model, converted, monkeypatch):
    real = mb._prefill

    def prefill(model_, ids, chunk, dev, note):
        if model_.config._attn_implementation == "sdpa" and ids.shape[1] >= 64:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 32.00 GiB")
        return real(model_, ids, chunk, dev, note)

    monkeypatch.setattr(mb, "_prefill", prefill)
    cfg = mb.ModelBenchSettings(str(converted), lengths=[32, 64, 96], chunk=32, decode_tokens=1, device="cpu")
    result = mb.run_model_benchmark(cfg, model=model)
    rows = {(r["attention"], r["length"]): r for r in result["rows"]}
    assert all(rows[("superlinear", n)]["status"] == "ok" for n in (32, 64, 96))
    assert rows[("dense", 32)]["status"] == "ok"
    assert rows[("dense", 64)]["status"] == "out of memory"
    assert rows[("dense", 64)]["prefill"] == {"status": "out of memory"}
    assert rows[("dense", 96)]["status"] == "skipped: out of memory at 64"
    ratios = {r["length"]: r for r in result["ratios"]}
    assert ratios[32]["prefill_speed"] > 0 and ratios[64]["prefill_speed"] is None
    card = format_card(result)
    assert "| 64 | dense SDPA | out of memory |" in card and "| 96 | dense SDPA | skipped |" in card
    assert model.config._attn_implementation == "superlinear"


@pytest.mark.parametrize("args, message", [
    (["--model", "/no/such/checkpoint"], "does not exist"),
    (["--model", "{empty}"], "has no config.json"),
    (["--model", str(TINY_TEACHER)], "is not a Superlinear checkpoint"),
    (["--model", "{converted}", "--lengths", "64,abc"], "'abc' is not a length"),
    (["--model", "{converted}", "--chunk", "0"], "--chunk: 0 must be positive; write e.g. 32K"),
    (["--model", "{converted}", "--chunk", "32x"], "--chunk: '32x' is not a length; write e.g. 32K"),
    (["--model", "{converted}", "--chunk", "32K,64K"], "--chunk: '32K,64K' is not one length; write e.g. 32K"),
    (["--model", "{converted}", "--decode-tokens", "0"], "--decode-tokens: 0 must be at least 1"),
    (["--model", "{converted}", "--profile-decode", "0"], "--profile-decode: 0 must be at least 1"),
    (["--profile-decode", "2"], "--profile-decode applies to the whole-model benchmark; add --model PATH"),
    (["--model", "{converted}", "--device", "gpu0"], "--device gpu0 is not a device"),
    (["--model", "{converted}", "--dtype", "int8"], "unknown dtype 'int8'"),
    (["--model", "{converted}", "--quick"], "--quick applies to the one-layer benchmark"),
    (["--model", "{converted}", "--search-key", "span_mean"], "--search-key applies to the one-layer benchmark"),
    (["--chunk", "32"], "--chunk applies to the whole-model benchmark; add --model PATH"),
])
def test_bad_input_is_one_error_line(args, message, converted, tmp_path):
    (tmp_path / "empty").mkdir()
    args = [a.format(empty=tmp_path / "empty", converted=converted) for a in args]
    result = CliRunner().invoke(main, ["bench", *args, "--out", str(tmp_path / "out")])
    text = _messages(result)
    assert result.exit_code == 2, text
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], text
    assert text.strip() == errors[0], text  # nothing before it either (a source model's length note was)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without a GPU")
def test_bench_model_on_cuda_without_a_gpu_is_one_error_line(converted, tmp_path):
    result = CliRunner().invoke(main, ["bench", "--model", str(converted), "--device", "cuda", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "error: --device cuda: no CUDA device is visible" in _messages(result)


def test_readme_shows_the_card_header():
    assert TABLE_HEADER in (ROOT / "README.md").read_text()


# --- scripts/build_nano_shape.py ------------------------------------------------------------------------------

def _nano_script():
    return load_module(ROOT / "scripts" / "build_nano_shape.py")


def test_nano_shape_config_on_the_meta_device():
    """The full shape, without materializing 63 GB: layer kinds, sizes, 31.6B parameters with 128 experts."""
    from transformers import AutoModelForCausalLM

    nano = _nano_script()
    config = nano.nano_config()
    kinds = config.layers_block_type
    assert len(kinds) == config.num_hidden_layers == 52
    assert (kinds.count("linear_attention"), kinds.count("moe"), kinds.count("full_attention")) == (23, 23, 6)
    assert [i for i, k in enumerate(kinds) if k == "full_attention"] == [5, 12, 19, 26, 33, 42]
    assert (config.hidden_size, config.vocab_size, config.n_routed_experts, config.num_experts_per_tok) == (
        2688, 131072, 128, 6)
    assert (config.num_attention_heads, config.num_key_value_heads, config.head_dim) == (32, 2, 128)
    assert (config.mamba_num_heads, config.mamba_head_dim, config.ssm_state_size, config.n_groups) == (64, 64, 128, 8)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    params = sum(p.numel() for p in model.parameters())
    assert 31.5e9 < params < 31.7e9
    with torch.device("meta"):
        fewer = AutoModelForCausalLM.from_config(nano.nano_config(16), dtype=torch.bfloat16)
    missing = 23 * (128 - 16) * nano.routed_expert_parameters(config)
    assert sum(p.numel() for p in fewer.parameters()) + missing == params


def test_nano_builder_small_build_and_conversion(tmp_path, capsys):
    """The script end to end at a reduced width on the CPU: checkpoint, tokenizer, released conversion."""
    from slkernels import SuperlinearConfig

    from slconvert.loading import read_block

    nano = _nano_script()
    out, conv = tmp_path / "nano", tmp_path / "nano-sl"
    args = [str(out), "--experts", "6", "--hidden", "64", "--vocab", "512", "--layers", "8", "--device", "cpu",
            "--convert", str(conv)]
    assert nano.main(args) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["n_routed_experts"] == 6 and config["num_experts_per_tok"] == 6
    assert config["layers_block_type"][5] == "full_attention" and len(config["layers_block_type"]) == 8
    assert config["num_attention_heads"] == 32 and config["head_dim"] == 128 and config["dtype"] == "bfloat16"
    assert (out / "tokenizer.json").is_file() and (out / "generation_config.json").is_file()
    block = read_block(conv)
    assert block["layers"] == [5] and block["params"] == SuperlinearConfig.released().to_dict()
    assert "built " in capsys.readouterr().out
    assert nano.main(args) == 0
    assert capsys.readouterr().out.splitlines() == [f"reusing {out}", f"reusing {conv}"]


def test_nano_builder_refuses_bad_input(tmp_path, capsys):
    nano = _nano_script()
    with pytest.raises(SystemExit) as err:
        nano.main([str(tmp_path / "n"), "--experts", "2", "--device", "cpu"])
    assert err.value.code == 2
    assert "error: --experts 2: at least 6" in capsys.readouterr().err


def test_pipeline_check_builds_its_source_with_the_script():
    script = (ROOT / "scripts" / "pipeline_gpu_check.sh").read_text()
    assert 'scripts/build_nano_shape.py "$WORK/source" --experts "$EXPERTS"' in script
    assert "MEMEM" not in script  # the shape lives in one place


def _compiled_decode_against_eager(model, device: str, variant: str, in_graph: bool, monkeypatch, steps: int):
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    import slconvert.attention as attention
    from slconvert.attention import superlinear_attention_forward

    if in_graph and variant == "dense":
        pytest.skip("the dense variant makes no Superlinear call")
    monkeypatch.setattr(attention, "ATTENTION_OP", in_graph)
    dev = mb._Device(device)
    ids = torch.arange(4, 52, device=device)[None]
    mb.use_attention(model, variant)
    try:
        with torch.no_grad(), mb.compiled_decode_setting(model, dev, in_graph):
            eager_cache, token, _ = mb._prefill(model, ids, 16, dev, lambda _t: None)
            static_cache, _, _ = mb._prefill(model, ids, 16, dev, lambda _t: None)
            compiled = mb._compiled_step(model, mb.static_copy(model, static_cache, 48 + steps + 4), dev)
            eager = mb._eager_step(model, eager_cache)
            for position in range(48, 48 + steps):
                expected = eager(token, position)
                torch.testing.assert_close(compiled(token, position), expected, rtol=1e-3, atol=1e-3)
                token = expected[:, -1:].argmax(-1)
    finally:
        torch.compiler.reset()
        mb.use_attention(model, "superlinear")
    assert ALL_ATTENTION_FUNCTIONS["superlinear"] is superlinear_attention_forward


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["superlinear", "dense"])
@pytest.mark.parametrize("in_graph", [False, True], ids=["attention-between-graphs", "attention-in-graph"])
def test_compiled_decode_matches_eager_decode(model, variant, in_graph, monkeypatch):
    """torch.compile on the CPU (inductor, no CUDA graphs): the compiled decode's logits are the eager ones, with
    the Superlinear call between the compiled graphs or inside them as one operation."""
    _compiled_decode_against_eager(model, "cpu", variant, in_graph, monkeypatch, steps=4)


@pytest.mark.gpu
@pytest.mark.parametrize("variant", ["superlinear", "dense"])
@pytest.mark.parametrize("in_graph", [False, True], ids=["attention-between-graphs", "attention-in-graph"])
def test_compiled_decode_with_cuda_graphs_matches_eager_decode(converted, variant, in_graph, monkeypatch):
    """On a GPU the compiled step replays CUDA graphs (the third call on): eight steps, so that several are replays
    whose positions differ from the recorded one, give the eager decode's logits."""
    model = mb.load_for_bench(converted, "cuda")
    _compiled_decode_against_eager(model, "cuda", variant, in_graph, monkeypatch, steps=8)


# --- scripts/build_nano_shape.py --bench: built and converted in memory ------------------------------------------

SMALL_NANO = ["--experts", "6", "--hidden", "64", "--vocab", "512", "--device", "cpu"]


def test_in_memory_conversion_is_the_conversion_of_the_saved_checkpoint(tmp_path):
    """The --bench path (build, convert_in_memory) gives the model that `slconvert convert` + `slconvert.load`
    give from the saved checkpoint: same weights and routers, same superlinear block apart from the source's path
    and hashes and the list of the files written, same attention function, same logits; and saving it writes the routers under the block's names."""
    from safetensors import safe_open

    from slconvert import load
    from slconvert.loading import read_block

    nano = _nano_script()
    source, converted = tmp_path / "nano", tmp_path / "nano-sl"
    assert nano.main([str(source), *SMALL_NANO, "--layers", "13", "--convert", str(converted)]) == 0
    loaded = load(converted)
    live = nano.build_model(experts=6, hidden=64, vocab=512, layers=13, device="cpu")
    block = nano.convert_released_in_memory(live)

    on_disk = read_block(converted)
    assert block["layers"] == on_disk["layers"] == [5, 12]
    assert block["source"] == {"path": None, "model_type": "nemotron_h", "sha256": {}}
    assert on_disk.pop("files") == ["README.md", "config.json", "generation_config.json", "model.safetensors",
                                    "tokenizer.json", "tokenizer_config.json"]  # what the written one wrote
    assert {**block, "source": None} == {**on_disk, "source": None}
    assert on_disk["source"]["model_type"] == "nemotron_h"
    assert live.config.superlinear == block
    assert live.config._attn_implementation == loaded.config._attn_implementation == "superlinear"

    expected = loaded.state_dict()
    got = live.state_dict()
    assert sorted(got) == sorted(expected)
    routers = [name for name in got if "superlinear_router" in name]
    assert len(routers) == 2
    for name, tensor in got.items():
        assert tensor.dtype == expected[name].dtype and torch.equal(tensor, expected[name]), name
    alpha = block["router"]["alpha"]["5"]
    assert torch.equal(got[routers[0]], (alpha * torch.eye(128)).expand(32, 128, 128).to(torch.bfloat16))

    ids = torch.arange(4, 28)[None]
    with torch.no_grad():
        torch.testing.assert_close(live(input_ids=ids).logits, loaded(input_ids=ids).logits, rtol=0, atol=0)
    assert mb.converted_layer_calls(live, "cpu") == mb.converted_layer_calls(loaded, "cpu") == 2

    live.save_pretrained(tmp_path / "saved")
    with safe_open(tmp_path / "saved" / "model.safetensors", "pt") as saved:
        assert set(block["router"]["tensors"].values()) <= set(saved.keys())
    reloaded = load(tmp_path / "saved")
    assert torch.equal(reloaded.state_dict()[routers[1]], got[routers[1]])


@pytest.mark.parametrize("search_key", ["anchor", "span_mean"])
def test_bench_in_memory_writes_only_the_results(search_key, tmp_path, capsys):
    nano = _nano_script()
    out = tmp_path / "bench"
    args = ["--bench", str(out), *SMALL_NANO, "--layers", "8", "--lengths", "32", "--chunk", "32", "--decode-tokens",
            "1", "--no-dense", "--search-key", search_key]
    assert nano.main(args) == 0
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["bench", "model_bench.json", "model_bench.md",
                                                          "model_bench.png"]
    data = json.loads((out / "model_bench.json").read_text())
    model = data["model"]
    assert model["path"] is None and model["name"] == "nano-shape-6e-h64-v512-8l"
    assert "no checkpoint was written" in model["origin"]
    assert model["converted_layers"] == [5] and model["window"] == 2032 and model["routed_experts"] == 6
    assert data["settings"]["model"] is None and data["settings"]["dtype"] == "bfloat16"
    assert data["attention_check"] == {"superlinear": {"superlinear_calls_per_forward": 1, "expected": 1}}
    (row,) = data["rows"]
    assert row["status"] == "ok" and row["prefill"]["status"] == "ok" and row["decode"]["status"] == "ok"
    card = (out / "model_bench.md").read_text()
    assert card.startswith("## Whole-model benchmark: nano-shape-6e-h64-v512-8l")
    assert "no checkpoint was written." in card
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("GPU memory needed (estimate): ") and "KV cache at 32" in lines[0]
    assert lines[1] == "memory not checked on cpu"
    assert lines[3] == f"converted layers [5] in memory (W = 2032, released setting, search key {search_key})"
    assert f"the {search_key} search key" in model["origin"]
    assert model["superlinear_params"]["search_key"] == search_key
    assert f"search key {search_key})" in card


def test_nano_memory_estimate(monkeypatch):
    """Weights as counted on the meta device (31.6B bf16 parameters and the routers), K and V of the 6 attention
    layers at the longest length, one chunk's working memory."""
    nano = _nano_script()
    config = nano.nano_config()
    estimate = nano.memory_estimate(config, "bfloat16", [32768, 1 << 20], 32768)
    gib = 1 << 30
    assert 58.5 * gib < estimate["weights"] < 59.2 * gib
    assert estimate["kv_cache"] == 6 * 2 * 2 * 128 * (1 << 20) * 2
    assert estimate["chunk"] == 2 * 32768 * 6 * (2 * 2688 * 2 + 4 * 2688 + 2 * 1856 * 2)
    assert estimate["total"] == estimate["weights"] + estimate["kv_cache"] + estimate["chunk"]
    assert nano.memory_estimate(config, "bfloat16", [64], 32768)["chunk"] == 2 * 64 * 6 * 28928
    line = nano.describe_estimate(estimate, [32768, 1 << 20], 32768)
    assert line == ("GPU memory needed (estimate): 75.4 GiB = 58.8 GiB weights + 6.0 GiB KV cache at 1M + "
                    "10.6 GiB for one 32K-token prefill chunk")
    # the span-mean key: every converted layer keeps its keys' running sums, about 3.5 times its K cache
    import slconvert.attention

    monkeypatch.setattr(slconvert.attention, "KEEP_STATE", True)
    mean = nano.memory_estimate(config, "bfloat16", [32768, 1 << 20], 32768, "span_mean")
    assert 3.3 * estimate["kv_cache"] / 2 < mean["kept_sums"] < 3.7 * estimate["kv_cache"] / 2
    assert mean["total"] == estimate["total"] + mean["kept_sums"]
    assert "GiB kept span-mean sums + " in nano.describe_estimate(mean, [32768, 1 << 20], 32768)


def test_bench_in_memory_refuses_a_gpu_with_too_little_free_memory(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (40 << 30, 80 << 30))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Test GPU")
    nano = _nano_script()
    with pytest.raises(SystemExit) as err:
        nano.main(["--bench", str(tmp_path / "out"), "--device", "cuda"])
    assert err.value.code == 2
    captured = capsys.readouterr()
    assert captured.out.startswith("GPU memory needed (estimate): 75.4 GiB")
    assert captured.err.splitlines() == ["error: the benchmark needs about 75.4 GiB of GPU memory and cuda (Test GPU) "
                                         "has 40.0 GiB free of 80.0 GiB; pass fewer --experts, shorter --lengths or "
                                         "a smaller --chunk"]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args, message", [
    ([], "give OUT (the checkpoint to write) or --bench OUT_DIR"),
    (["{tmp}/ckpt", "--bench", "{tmp}/b"], "OUT write a checkpoint; --bench writes none"),
    (["--bench", "{tmp}/b", "--convert", "{tmp}/c", "--force"], "--convert, --force write a checkpoint"),
    (["{tmp}/ckpt", "--lengths", "32K", "--no-dense"], "--lengths, --no-dense apply to --bench OUT_DIR"),
    (["--bench", "{tmp}/b", "--lengths", "32,abc"], "--lengths: 'abc' is not a length"),
    (["--bench", "{tmp}/b", "--chunk", "0"], "--chunk: 0 must be positive"),
    (["--bench", "{tmp}/b", "--layers", "5"], "the first 5 layers hold no attention layer to convert"),
    (["--bench", "{tmp}/b", "--dtype", "int8"], "unknown dtype 'int8'"),
    (["{tmp}/ckpt", "--search-key", "span_mean"], "--search-key span_mean applies to --convert CONVERTED or --bench"),
])
def test_nano_bench_bad_input_is_one_error_line(args, message, tmp_path, capsys):
    nano = _nano_script()
    with pytest.raises(SystemExit) as err:
        nano.main([a.format(tmp=tmp_path) for a in args] + ["--device", "cpu"])
    assert err.value.code == 2
    captured = capsys.readouterr()
    errors = captured.err.splitlines()
    assert len(errors) == 1 and errors[0].startswith("error: ") and message in errors[0], captured.err
    assert list(tmp_path.iterdir()) == []


def test_readme_recommends_the_in_memory_bench():
    readme = (ROOT / "README.md").read_text()
    assert "python scripts/build_nano_shape.py --bench bench-output/nano-shape" in readme


def test_decode_row_is_the_median_step_and_tokens_over_the_total_time():
    """Three steps of 1, 2 and 6 ms: 3 tokens in 9 ms (333.3 tokens/s), 2 ms a token (the median; the mean is 3)."""
    row = mb._decode_row([0.001, 0.002, 0.006], 1.5)
    assert row["status"] == "ok" and row["tokens"] == 3 and row["peak_gib"] == 1.5
    assert row["seconds"] == pytest.approx(0.009) and row["tokens_per_s"] == pytest.approx(1000 / 3)
    assert row["ms_per_token"] == pytest.approx(2.0)
    assert mb._decode_row([], None) == {"status": "ok", "tokens": 0, "seconds": 0, "tokens_per_s": None,
                                        "ms_per_token": None, "peak_gib": None}


def test_ratios_are_converted_over_dense_per_length_and_phase():
    """Above 1: the converted model is faster (tokens/s) or needs more memory (peak GiB); a length without its dense
    row has no ratio, a phase without a number a None."""
    def row(attention, length, speed, peak):
        return {"attention": attention, "length": length, "prefill": {"tokens_per_s": speed, "peak_gib": peak},
                "decode": {"tokens_per_s": speed / 10, "peak_gib": None}, "decode_compiled": {"status": "not run"}}

    rows = [row("superlinear", 64, 300.0, 3.0), row("dense", 64, 100.0, 4.0), row("superlinear", 32, 50.0, 1.0)]
    [entry] = mb.ratios(rows)
    assert entry == {"length": 64, "prefill_speed": 3.0, "prefill_memory": 0.75, "decode_speed": pytest.approx(3.0),
                     "decode_memory": None, "decode_compiled_speed": None, "decode_compiled_memory": None}


def test_out_of_memory_is_read_from_the_error_type_or_message():
    """Running out of memory is a result (the row says so), any other error is not."""
    assert mb._is_oom(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert mb._is_oom(RuntimeError("CUDA error: out of memory"))  # raised by kernels as a plain RuntimeError
    assert not mb._is_oom(RuntimeError("shape mismatch")) and not mb._is_oom(ValueError("out of memory"))


def test_token_ids_skip_the_special_ids_of_the_vocabulary():
    """Random ids lie in [4, vocab) past the special ids of slconvert's tokenizers; a vocabulary of 8 or fewer uses
    every id."""
    import types

    for vocab, low in ((512, 4), (8, 0)):
        fake = types.SimpleNamespace(config=types.SimpleNamespace(vocab_size=vocab))
        cfg = mb.ModelBenchSettings(lengths=[64], device="cpu")
        ids = mb._Runner(cfg, fake, mb._Device("cpu"), None).ids(4000)
        assert ids.shape == (1, 4000) and int(ids.min()) == low and int(ids.max()) == vocab - 1


def test_compiled_decode_not_run_says_why(model):
    """The compiled decode off: by --no-compile, or by default on a machine without CUDA."""
    cfg = mb.ModelBenchSettings(lengths=[64], compile=False, device="cpu")
    for asked, reason in ((False, "--no-compile"), (None, "no CUDA device; pass --compile to try it on the CPU")):
        runner = mb._Runner(cfg, model, mb._Device("cpu"), None, compile_asked=asked)
        assert runner.compiled(None, None, 64, "superlinear") == {"status": f"not run: {reason}"}


def test_an_attention_switch_that_did_not_take_effect_stops_the_run(model, monkeypatch):
    """One forward counts the Superlinear calls before a variant is timed: none where two are expected stops it."""
    from slconvert.errors import SlconvertError

    monkeypatch.setattr(mb, "converted_layer_calls", lambda model, device: 0)
    cfg = mb.ModelBenchSettings(lengths=[16], chunk=16, decode_tokens=1, compile=False, device="cpu")
    with pytest.raises(SlconvertError, match=r"^superlinear attention made 0 Superlinear call\(s\) in one forward, "
                                             r"expected 2; the attention switch did not take effect$"):
        mb.bench_model(model, cfg, name="tiny")


def test_eager_decode_out_of_memory_skips_the_compiled_decode_and_longer_lengths(model, monkeypatch):
    """An eager decode that runs out of memory marks its row, skips its compiled decode and the longer lengths."""
    def decode(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")

    monkeypatch.setattr(mb, "_decode", decode)  # the warm-up's decode too: its out of memory is not an error
    cfg = mb.ModelBenchSettings(lengths=[16, 32], chunk=16, decode_tokens=1, compile=False, dense=False, device="cpu")
    first, second = mb.bench_model(model, cfg, name="tiny")["rows"]
    assert first["status"] == "out of memory" and first["prefill"]["status"] == "ok"
    assert first["decode"] == {"status": "out of memory"}
    assert first["decode_compiled"] == {"status": "skipped: the eager decode ran out of memory"}
    assert second["status"] == "skipped: out of memory at 16"


def test_compiled_decode_row_of_a_forward_left_uncompiled(model, monkeypatch):
    """The compiled decode's phase with `compile_forward` giving the forward back as it is (no compiler needed):
    its static cache holds the prefill, the warm-up steps and the timed ones; the row counts the timed tokens and
    says where the Superlinear call ran, for the converted model only. A prefill of 48 tokens in chunks of 32 is two
    chunks."""
    from slconvert import attention

    monkeypatch.setattr(attention, "ATTENTION_OP", True)
    monkeypatch.setattr(mb, "compile_forward", lambda forward, mode: forward)
    cfg = mb.ModelBenchSettings(lengths=[48], chunk=32, decode_tokens=2, compile=True, device="cpu")
    rows = {r["attention"]: r for r in mb.bench_model(model, cfg, name="tiny")["rows"]}
    for variant, row in rows.items():
        assert row["status"] == "ok" and row["prefill"]["chunks"] == 2
        compiled = row["decode_compiled"]
        assert compiled["status"] == "ok" and compiled["tokens"] == 2, compiled
        assert compiled.get("attention") == (None if variant == "dense" else "in the graph")
    assert set(rows) == {"superlinear", "dense"}


def _card_result(**changes) -> dict:
    """A whole-model result written by hand: the shape of the Nano model, two lengths of the converted model."""
    def phase(speed):
        return {"status": "ok", "tokens_per_s": speed, "peak_gib": None}

    rows = [{"attention": "superlinear", "length": 32768, "status": "ok", "prefill": phase(12345.6),
             "decode": phase(12.5), "decode_compiled": phase(50.0)},
            {"attention": "superlinear", "length": 131072, "status": "ok", "prefill": phase(9000.0),
             "decode": phase(10.0), "decode_compiled": {"status": "not run: --no-compile"}}]
    model = {"name": "nano", "path": None, "origin": "converted checkpoint", "model_type": "nemotron_h", "layers": 52,
             "pattern": None, "hidden_size": 2688, "attention_heads": 32, "kv_heads": 2, "head_dim": 128,
             "routed_experts": None, "vocab_size": 131072, "parameters": 31_600_000_000, "dtypes": ["bfloat16"],
             "converted_layers": [5], "dense_attention_layers": [], "window": 2032,
             "superlinear_params": {"num_spans": 3, "search_key": "anchor"}, "weights_gib": None}
    result = {"environment": {"gpu": "Test GPU", "torch": "t", "transformers": "x", "triton": "y"},
              "model": model, "settings": {"chunk": 32768, "decode_tokens": 8}, "rows": rows, "ratios": [],
              "complete": True}
    for key, value in changes.items():
        result["model" if key in model else key] = {**model, key: value} if key in model else value
    return result


def test_card_of_a_known_result():
    """Throughput with thousands separators from 100 tokens/s up, a parameter count in billions (millions below one
    billion), a note naming the one row whose compiled decode did not run, and the incomplete line only for a run
    that stopped early."""
    card = format_card(_card_result())
    assert ("Model: nemotron_h, 52 layers; hidden 2688; 32 query / 2 KV heads of 128; vocabulary 131072; 31.60B "
            "parameters (bfloat16); converted attention layers [5] (W = 2032, k = 3, search key anchor).") in card
    assert "| 32K | Superlinear | 12,346 | 12.50 | 50.00 | - | - |" in card
    assert "| 128K | Superlinear | 9,000 | 10.00 | not run | - | - |" in card
    assert "- compiled decode, Superlinear, 128K: not run: --no-compile" in card and "every row" not in card
    assert "incomplete" not in card
    assert "(incomplete: the run stopped before the last length)" in format_card(_card_result(complete=False))
    assert "; 2.5M parameters (bfloat16);" in format_card(_card_result(parameters=2_500_000))


def test_a_sweep_that_fails_on_dense_attention_gives_the_model_back_on_superlinear_attention(model, monkeypatch):
    """`bench_model` switches the caller's live model to stock SDPA for the dense rows; an error there (here the
    attention check of the dense variant) must not leave it on dense attention."""
    from slconvert.attention import ATTENTION_NAME
    from slconvert.errors import SlconvertError

    real = mb.converted_layer_calls
    monkeypatch.setattr(mb, "converted_layer_calls", lambda m, device: real(m, device) or 5)  # dense: 5, not 0
    cfg = mb.ModelBenchSettings(lengths=[16], chunk=16, decode_tokens=1, compile=False, device="cpu")
    with pytest.raises(SlconvertError, match=r"^dense attention made 5 Superlinear call"):
        mb.bench_model(model, cfg, name="tiny")
    assert model.config._attn_implementation == ATTENTION_NAME
