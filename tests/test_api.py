"""Configuration and input validation, span selection, packaging and the command line."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from slkernels import (
    SuperlinearConfig,
    SuperlinearConfigError,
    SuperlinearInputError,
    select_spans,
    superlinear_attention,
)
from slkernels.naive import offset

import slconvert
from slconvert.cli import main


def test_config_defaults_are_the_released_setting():
    cfg = SuperlinearConfig()
    assert cfg.to_dict() == dict(
        sw_index=65, num_spans=3, search_power=0.55, span_power=0.55, backward_factor=3.0, forward_factor=1.0,
        search_key="anchor",
    )
    assert SuperlinearConfig.balanced().window == 32 * 32 - 1
    assert SuperlinearConfig.balanced().to_dict() == dict(
        sw_index=31, num_spans=3, search_power=0.5, span_power=0.5, backward_factor=2.0, forward_factor=0.0,
        search_key="anchor",
    )
    assert SuperlinearConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        ({"search_power": 1.0}, "search_power"),
        ({"search_power": 0.0}, "search_power"),
        ({"span_power": 1.5}, "span_power"),
        ({"num_spans": 0}, "num_spans"),
        ({"sw_index": -1}, "sw_index"),
        ({"sw_index": 2.5}, "sw_index"),
        ({"backward_factor": -1.0}, "backward_factor"),
        ({"forward_factor": float("nan")}, "forward_factor"),
    ],
)
def test_bad_config_is_named(kwargs, needle):
    with pytest.raises(SuperlinearConfigError, match=needle):
        SuperlinearConfig(**kwargs)


def test_unknown_config_key_lists_valid_ones():
    with pytest.raises(SuperlinearConfigError, match="valid ones are"):
        SuperlinearConfig.from_dict({"window": 3})


def _qkv(hq=4, hkv=2, lq=10, lkv=10, d=8):
    return torch.randn(1, hq, lq, d), torch.randn(1, hkv, lkv, d), torch.randn(1, hkv, lkv, d), torch.randn(1, hq, lq, d)


@pytest.mark.parametrize(
    "mutate,needle",
    [
        (lambda q, k, v, s: (q[0], k, v, s), "4 dims"),
        (lambda q, k, v, s: (q, k, v, s[:, :, :3]), "q_search must have q's shape"),
        (lambda q, k, v, s: (q, k[:, :1].expand(1, 3, 10, 8), v[:, :1].expand(1, 3, 10, 8), s), "multiple of key/value heads"),
        (lambda q, k, v, s: (q, k[..., :4], v, s), "head_dim"),
        (lambda q, k, v, s: (q, k.double(), v, s), "share one dtype"),
        (lambda q, k, v, s: (q, k, v[:, :, :5], s), "must agree"),
        (lambda q, k, v, s: (q.long(), k, v, s), "dtype"),
    ],
)
def test_bad_shapes_are_named(mutate, needle):
    args = mutate(*_qkv())
    with pytest.raises(SuperlinearInputError, match=needle):
        superlinear_attention(*args, SuperlinearConfig())


def test_select_spans_names_what_its_caller_passed():
    """select_spans passes its search queries as q and its keys as v too; its messages named q and v."""
    q, k, v, s = _qkv()
    cfg = SuperlinearConfig()
    for args, needle in (((s.double(), k), "q_search and k must share one dtype, got torch.float64 and torch.float32"),
                         ((s, torch.randn(2, 2, 10, 8)), "batch sizes differ: q_search 1, k 2$"),
                         ((s, k[..., :4]), "k has head_dim 4 but q_search has 8"),
                         ((s, k[:, :, :5]), "q_search has 10 rows but k only 5; k must hold every position"),
                         (("s", k), "q_search must be a torch.Tensor")):
        with pytest.raises(SuperlinearInputError, match=needle):
            select_spans(*args, cfg)
    with pytest.raises(SuperlinearInputError, match="batch sizes differ: q 1, k 1, v 2"):
        superlinear_attention(q, k, torch.randn(2, 2, 10, 8), s, cfg)
    with pytest.raises(SuperlinearInputError, match="q has 10 rows but k/v only 5; k and v must hold"):
        superlinear_attention(q, k[:, :, :5], v[:, :, :5], s, cfg)


def test_a_backend_that_cannot_run_names_both_head_dims(monkeypatch):
    """A backend may serve q's head dim and not v's: the refusal names both where they differ."""
    q, k, v, s = _qkv()
    serves = lambda inputs: inputs.v.shape[-1] == inputs.q.shape[-1] and inputs.q.dtype == torch.float32  # noqa: E731
    _fresh_registry(monkeypatch, same_dims=(lambda inputs: None, serves))
    with pytest.raises(SuperlinearInputError, match=r"head dim 8 \(v 4\)\); use backend='reference'"):
        superlinear_attention(q, k, v[..., :4], s, SuperlinearConfig(), backend="same_dims")
    with pytest.raises(SuperlinearInputError, match=r"head dim 8\); use backend='reference'"):
        superlinear_attention(q.double(), k.double(), v.double(), s.double(), SuperlinearConfig(), backend="same_dims")


def test_bad_masks_positions_and_backend_are_named():
    q, k, v, s = _qkv()
    cfg = SuperlinearConfig()
    with pytest.raises(SuperlinearInputError, match="only left padding"):
        superlinear_attention(q, k, v, s, cfg, attention_mask=torch.tensor([[1] * 9 + [0]]))
    for value in (0.5, float("nan"), 2):
        with pytest.raises(SuperlinearInputError, match="values other than 0 and 1"):
            superlinear_attention(q, k, v, s, cfg, attention_mask=torch.tensor([[0.0] + [1.0] * 8 + [value]]))
    superlinear_attention(q, k, v, s, cfg, attention_mask=torch.tensor([[False] + [True] * 9]))
    with pytest.raises(SuperlinearInputError, match=r"attention_mask must be \[batch, L_kv\]"):
        superlinear_attention(q, k, v, s, cfg, attention_mask=torch.ones(1, 9))
    with pytest.raises(SuperlinearInputError, match="cache_position values"):
        superlinear_attention(q, k, v, s, cfg, cache_position=torch.arange(5, 15))
    with pytest.raises(SuperlinearInputError, match="q has 10 rows"):
        superlinear_attention(q, k[:, :, :4], v[:, :, :4], s, cfg)
    with pytest.raises(SuperlinearInputError, match="unknown backend"):
        superlinear_attention(q, k, v, s, cfg, backend="cuda-magic")
    with pytest.raises(SuperlinearInputError, match="state must be a slkernels.LayerState"):
        superlinear_attention(q, k, v, s, cfg, state={})
    with pytest.raises(SuperlinearConfigError, match="SuperlinearConfig"):
        superlinear_attention(q, k, v, s, {"sw_index": 3})


@pytest.mark.parametrize("search_key", ["anchor", "span_mean"])
def test_calls_without_query_rows_give_empty_outputs_and_gradients(search_key):
    """A batch of 0 rows ended in a reduction error (reference) or a ZeroDivisionError (kernels); select_spans of no
    query rows in torch.cat's error. The empty output comes before any backend, so every backend gives it."""
    cfg = SuperlinearConfig(sw_index=3, num_spans=2, search_power=0.5, span_power=0.5, search_key=search_key)
    q, k, v, s = (t.requires_grad_() for t in _qkv(lq=24, lkv=24, d=16))
    for args, shape in (((q[:0], k[:0], v[:0], s[:0]), (0, 4, 24, 16)), ((q[:, :, :0], k, v, s[:, :, :0]), (1, 4, 0, 16))):
        out = superlinear_attention(*args, cfg, backend="reference")
        assert out.shape == shape and out.dtype == q.dtype
        out.sum().backward()
        assert q.grad is not None and not q.grad.any() and not k.grad.any()
    assert select_spans(s[:, :, :0].detach(), k.detach(), cfg).anchor.shape == (1, 4, 0, 2)


def test_degenerate_sizes_are_named():
    q, k, v, s = _qkv()
    with pytest.raises(SuperlinearInputError, match="head_dim 0"):
        superlinear_attention(q[..., :0], k[..., :0], v[..., :0], s[..., :0], SuperlinearConfig())
    for rows in (0, -1, 1.5, True):
        with pytest.raises(SuperlinearInputError, match=f"block_rows must be a positive integer, got {rows!r}"):
            select_spans(s, k, SuperlinearConfig(), block_rows=rows)


def test_select_spans_agrees_with_the_spec():
    cfg = SuperlinearConfig(sw_index=2, num_spans=3, search_power=0.5, span_power=0.5, backward_factor=2.0, forward_factor=1.0)
    torch.manual_seed(3)
    q, k, v, s = _qkv(lq=120, lkv=120)
    sel = select_spans(s, k, cfg)
    w = cfg.window
    for h, r in [(0, 119), (3, 60), (1, w + 1), (2, w)]:
        cands = []
        i = cfg.sw_index + 1
        while r + 1 - offset(i, 0.5) >= 0:
            cands.append(r + 1 - offset(i, 0.5))
            i += 1
        scores = {a: float(s[0, h, r] @ k[0, h // 2, a]) for a in cands}
        best = sorted(cands, key=lambda a: -scores[a])[:3]
        got = [int(a) for a in sel.anchor[0, h, r] if a >= 0]
        assert got == best
        if best:
            gate = torch.softmax(torch.tensor([scores[a] for a in best]), 0)
            torch.testing.assert_close(sel.gate[0, h, r, : len(best)], gate)
    assert int(sel.window_hi[0, 50]) == 50 and int(sel.window_lo[0, 50]) == 50 - w + 1
    # The mask covers exactly the window plus the chosen spans.
    mask = sel.mask(120)
    assert mask[0, 0, 119, 119] and not mask[0, 0, 119, :].all()


def test_equal_scores_rank_the_nearer_anchor_first():
    """docs/semantics.md: equal scores rank the nearer anchor first. A zero search query scores every candidate 0,
    so each row selects its k nearest anchors q - W, q + 1 - o(sw + 2), ... with the gate 1/k on each; the output is
    then the mean of the k joint softmaxes over those spans and the window, computed here by hand."""
    cfg = SuperlinearConfig(sw_index=1, num_spans=2, search_power=0.5, span_power=0.5, backward_factor=1.0,
                            forward_factor=0.0)  # W = 3, anchors q + 1 - i^2 for i = 2, 3, ...
    torch.manual_seed(5)
    q, k, v, _ = _qkv(hq=2, hkv=1, lq=400, lkv=400)  # 19 candidates: an unstable sort reorders ties
    s = torch.zeros_like(q)
    sel = select_spans(s, k, cfg)
    got = superlinear_attention(q, k, v, s, cfg, backend="reference")
    for r in (10, 150, 399):
        t = r + 1
        assert sel.anchor[0, :, r].tolist() == [[r + 1 - 4, r + 1 - 9]] * 2
        torch.testing.assert_close(sel.gate[0, :, r], torch.full((2, 2), 0.5))
        back = math.ceil(math.sqrt(t))
        window = list(range(r - 2, r + 1))
        want = 0
        for a in (r + 1 - 4, r + 1 - 9):
            keys = list(range(max(a - back, 0), min(a, r - 3) + 1)) + window
            weights = torch.softmax((k[0, 0, keys] @ q[0, 0, r]) / math.sqrt(8), dim=0)
            want = want + 0.5 * weights @ v[0, 0, keys]
        torch.testing.assert_close(got[0, 0, r], want, atol=1e-5, rtol=1e-5)


def test_select_spans_windows_of_padding_and_first_real_rows():
    """window = [max(q - W + 1, s0), q] for every real row (the first real one reads itself), and an empty window
    (lo > hi) for padding rows."""
    cfg = SuperlinearConfig(sw_index=2, num_spans=1, search_power=0.5, span_power=0.5)  # W = 8
    torch.manual_seed(4)
    _, k, _, s = _qkv(hq=2, hkv=1, lq=30, lkv=30)
    k, s = k.expand(2, -1, -1, -1), s.expand(2, -1, -1, -1)
    mask = torch.ones(2, 30, dtype=torch.long)
    mask[1, :6] = 0
    sel = select_spans(s, k, cfg, attention_mask=mask)
    for b, s0 in ((0, 0), (1, 6)):
        for r in range(30):
            lo, hi = int(sel.window_lo[b, r]), int(sel.window_hi[b, r])
            if r < s0:
                assert lo > hi
            else:
                assert (lo, hi) == (max(r - 7, s0), r)
    assert sel.mask(30)[1, 0, 6].tolist() == [False] * 6 + [True] + [False] * 23


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_select_spans_scores_16_bit_inputs_in_float32(dtype):
    """Search scores are float32 dot products for 16-bit inputs (docs/semantics.md): the gate is the softmax of the
    exact scores of the rounded inputs (float64 here), not of scores rounded to the input dtype (1e-2 off)."""
    cfg = SuperlinearConfig(sw_index=2, num_spans=3, search_power=0.5, span_power=0.5, backward_factor=2.0,
                            forward_factor=1.0)
    torch.manual_seed(6)
    _, k, _, s = _qkv(lq=120, lkv=120, d=16)
    k, s = k.to(dtype), (s * 3).to(dtype)
    sel = select_spans(s, k, cfg)
    for h, r in [(0, 119), (3, 90), (1, 60)]:
        cands = [r + 1 - offset(i, 0.5) for i in range(cfg.sw_index + 1, 12) if r + 1 - offset(i, 0.5) >= 0]
        scores = {a: float(s[0, h, r].double() @ k[0, h // 2, a].double()) for a in cands}
        best = sorted(cands, key=lambda a: -scores[a])[:3]
        assert [int(a) for a in sel.anchor[0, h, r]] == best
        gate = torch.softmax(torch.tensor([scores[a] for a in best], dtype=torch.float64), 0).float()
        torch.testing.assert_close(sel.gate[0, h, r], gate, atol=2e-6, rtol=1e-5)


def test_cli_help_and_version():
    runner = CliRunner()
    result = runner.invoke(main, ["--version"])
    assert result.exit_code == 0 and slconvert.__version__ in result.output
    result = runner.invoke(main, ["--help"])
    assert result.exit_code == 0 and "Superlinear" in result.output


def test_console_script_and_no_bare_kernels_module(tmp_path):
    """The installed entry point runs, and nothing of ours is importable as `kernels` (a name transformers probes)."""
    exe = Path(sys.executable).with_name("slconvert")
    out = subprocess.run([str(exe), "--version"], capture_output=True, text=True, cwd=tmp_path, check=True)
    assert "slconvert" in out.stdout
    probe = (
        "import importlib.util, os, slkernels, transformers.utils.import_utils as iu;"
        "spec = importlib.util.find_spec('kernels');"
        "ours = os.path.dirname(slkernels.__file__);"
        "print('OURS' if spec and spec.origin and os.path.dirname(spec.origin) == ours else 'ok', iu.is_kernels_available())"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path, env=env, check=True)
    assert out.stdout.split()[0] == "ok", out.stdout


def test_a_checkout_root_on_the_path_does_not_shadow_the_installed_kernels_package():
    """`python -m slconvert.cli` run from a checkout puts its root first on sys.path, where the directory `kernels`
    sits; `import kernels` must still give Hugging Face's package (transformers imports it when installed), or where
    that is absent an empty module that transformers reads as absent, never our modules."""
    root = Path(__file__).resolve().parents[1]
    probe = (
        "import os, sys\n"
        "import kernels\n"
        f"print('placeholder' if os.path.dirname(os.path.abspath(kernels.__file__)) == {str(root / 'kernels')!r} "
        "else 'installed', 'slkernels' in sys.modules, hasattr(kernels, 'superlinear_attention'),"
        " [m for m, mod in list(sys.modules.items()) if m.startswith('kernels.') and "
        f"(getattr(mod, '__file__', None) or '').startswith({str(root / 'kernels')!r})])\n"
        "import transformers.modeling_utils, transformers.utils.import_utils as iu\n"
        "from slkernels import superlinear_attention\n"
        "print(iu.is_kernels_available() == (kernels.__file__ != os.path.join(sys.modules['slkernels'].__path__[0], "
        "'__init__.py')))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=root, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    first, last = out.stdout.splitlines()[0], out.stdout.splitlines()[-1]
    assert first in ("placeholder False False []", "installed False False []"), out.stdout
    assert last == "True", out.stdout


def test_every_package_is_packaged():
    """A wheel must carry every subpackage: pyproject lists them explicitly (kernels/ maps to slkernels)."""
    import tomllib

    root = Path(__file__).resolve().parents[1]
    listed = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = set()
    for top, name in (("slconvert", "slconvert"), ("kernels", "slkernels")):
        for init in (root / top).rglob("__init__.py"):
            rel = init.parent.relative_to(root / top)
            found.add(".".join([name, *rel.parts]))
    assert found == listed


def _fresh_registry(monkeypatch, **backends) -> None:
    """slkernels.api as before its first call: nothing loaded, no warning given, the reference plus `backends`."""
    from slkernels import api

    for name, value in (("_LOADED", False), ("_IMPORT_ERROR", None), ("_AUTO_ORDER", []), ("_WARNED", set()),
                        ("_BACKENDS", {"reference": api._BACKENDS["reference"], **backends})):
        monkeypatch.setattr(api, name, value)


def test_the_fallback_warning_names_why_the_triton_backend_did_not_import(monkeypatch):
    """The backends register when first needed; where the Triton one fails to import, the warning that `auto` gives
    on falling back to the reference names the import error."""
    import slkernels
    from slkernels import api
    from slkernels.inputs import check_inputs

    monkeypatch.delattr(slkernels, "triton_backend", raising=False)
    monkeypatch.setitem(sys.modules, "slkernels.triton_backend", None)  # its import now raises
    _fresh_registry(monkeypatch)
    assert api.available_backends() == ["reference"]
    assert api._IMPORT_ERROR.startswith(("ImportError", "ModuleNotFoundError"))
    q, k, v, s = _qkv()
    with pytest.warns(UserWarning, match=r"the Triton backend did not import \((ImportError|ModuleNotFoundError): "
                                         r"import of slkernels\.triton_backend halted"):
        api._warn_reference_fallback(check_inputs(q, k, v, s, SuperlinearConfig(), None, None, None))


def test_a_backend_registered_under_a_name_before_the_first_call_keeps_it(monkeypatch):
    """The lazy registration of the Triton backend never replaces one the caller registered as "triton" before."""
    pytest.importorskip("slkernels.triton_backend")
    from slkernels import api

    mine = (lambda inputs: None, lambda inputs: False)
    _fresh_registry(monkeypatch, triton=mine)
    assert api.available_backends() == ["reference", "triton"]
    assert api._BACKENDS["triton"] is mine and api._LOADED
    _fresh_registry(monkeypatch)
    api.available_backends()
    assert api._BACKENDS["triton"][0].__name__ == "triton_attention"  # the same call registers the real one


def test_auto_backend_on_cpu_is_the_reference():
    from slkernels.api import resolve_backend
    from slkernels.inputs import check_inputs

    q, k, v, s = _qkv()
    expected = "triton" if os.environ.get("TRITON_INTERPRET") == "1" else "reference"
    assert resolve_backend(check_inputs(q, k, v, s, SuperlinearConfig(), None, None, None)) == expected


def test_registering_a_backend_again_replaces_its_replay_rule_and_auto_false_keeps_it_out_of_auto(monkeypatch):
    """`register_backend` under a name already taken replaces all it said before: registered again without
    `replayable`, its calls are never replayed. With auto=False a backend serves only by name."""
    from slkernels import api

    _fresh_registry(monkeypatch)
    monkeypatch.setattr(api, "_REPLAYABLE", {})
    monkeypatch.setattr(api, "_LOADED", True)  # no Triton registration in between
    fn, always = (lambda inputs: None), (lambda inputs: True)
    api.register_backend("mine", fn, always, replayable=always)
    assert "mine" in api._REPLAYABLE and api._AUTO_ORDER == ["mine"]
    api.register_backend("mine", fn, always)
    assert "mine" not in api._REPLAYABLE and api._AUTO_ORDER == ["mine"]
    api.register_backend("named_only", fn, always, auto=False)
    assert api._AUTO_ORDER == ["mine"] and "named_only" in api.available_backends()


def test_a_cpu_call_falls_back_to_the_reference_without_a_warning(monkeypatch):
    """Only a CUDA call that no kernel serves is warned about; on the CPU the reference is the expected backend."""
    from slkernels import api

    monkeypatch.setattr(api, "_WARNED", set())
    api.available_backends()  # the kernel backends load first, outside the check
    q, k, v, s = _qkv()
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        superlinear_attention(q, k, v, s, SuperlinearConfig(sw_index=1, search_power=0.5))


def test_the_fallback_warning_is_given_once_per_reason(monkeypatch):
    """The fallback warning is given once per (dtype, head dims, backends): a decode loop is not flooded."""
    from slkernels import api
    from slkernels.inputs import check_inputs

    _fresh_registry(monkeypatch)
    monkeypatch.setattr(api, "_LOADED", True)
    q, k, v, s = _qkv()
    cfg = SuperlinearConfig(sw_index=1, search_power=0.5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            api._warn_reference_fallback(check_inputs(q, k, v, s, cfg, None, None, None))
        api._warn_reference_fallback(check_inputs(q.double(), k.double(), v.double(), s.double(), cfg, None, None, None))
    assert len(caught) == 2 and "torch.float64" in str(caught[1].message)


def test_an_enclosing_autocast_does_not_lower_the_references_precision():
    """Mixed-precision training runs the layers under a bfloat16 autocast: the float32 reference keeps its float32
    arithmetic inside it (bfloat16 logits would be off by about 1e-2), so its result is the float64 brute force's
    to float32 rounding."""
    from slkernels.naive import naive_superlinear_attention

    cfg = SuperlinearConfig(sw_index=1, num_spans=2, search_power=0.5, span_power=0.5, backward_factor=2.0,
                            forward_factor=1.0)
    gen = torch.Generator().manual_seed(0)
    q, k, v, s = (torch.randn(1, 2, 40, 8, generator=gen) for _ in range(4))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = superlinear_attention(q, k[:, :1], v[:, :1], s, cfg, backend="reference")
    assert got.dtype == torch.float32
    want = naive_superlinear_attention(q, k[:, :1], v[:, :1], s, cfg)
    assert (got.double() - want).abs().max() < 1e-5


def test_config_limits_and_integral_floats():
    """Integral floats (JSON numbers such as 65.0) are read as integers, a bool is no integer, num_spans stops at
    MAX_SPANS, and the search key is one of two names."""
    cfg = SuperlinearConfig(sw_index=65.0, num_spans=3.0)
    assert cfg == SuperlinearConfig() and type(cfg.sw_index) is int and type(cfg.num_spans) is int
    for kwargs, message in (
        ({"num_spans": True}, "num_spans=True is out of range: it must be an integer"),
        ({"num_spans": 4097}, "num_spans=4097 is out of range: use an integer from 1 to 4096"),
        ({"search_key": "mean"}, "search_key='mean' is out of range: use one of anchor, span_mean"),
    ):
        with pytest.raises(SuperlinearConfigError) as err:
            SuperlinearConfig(**kwargs)
        assert str(err.value).startswith(message)
    assert SuperlinearConfig(num_spans=4096).num_spans == 4096


def test_input_messages_name_every_tensor_and_the_rule():
    """Each refusal names the tensors concerned and the rule: v's dtype among three tensors (listed with commas), no
    key/value heads, a negative position, positions as bools, a scale of zero."""
    q, k, v, s = _qkv()
    cfg = SuperlinearConfig()
    for kwargs, needle in (
        (dict(v=v.double()), r"^q, k, v must share one dtype, got torch.float32, torch.float32, torch.float64$"),
        (dict(k=k[:, :0], v=v[:, :0]), r"^query heads \(4\) must be a multiple of key/value heads \(0\)"),
        (dict(cache_position=torch.arange(-1, 9)), r"^cache_position values must lie in \[0, 9\] \(the key axis\), "
                                                    r"got \[-1, 8\]$"),
        (dict(cache_position=torch.ones(10, dtype=torch.bool)), r"^cache_position must hold integers, got torch.bool$"),
        (dict(scale=0.0), r"^scale must be a positive finite number, got 0.0$"),
    ):
        args = dict(q=q, k=k, v=v, q_search=s, config=cfg) | kwargs
        with pytest.raises(SuperlinearInputError, match=needle):
            superlinear_attention(**args)


def test_positions_as_one_row_and_checks_left_to_the_caller():
    """cache_position may come as [1, L_q] (as transformers passes it); `check_values=False` skips the checks that
    read values back, and a call without a mask shares one s0 tensor of zeros per batch size and device."""
    from slkernels.inputs import check_inputs, first_real_token

    q, k, v, s = _qkv(lq=4)
    cfg = SuperlinearConfig(sw_index=1, num_spans=1, search_power=0.5, span_power=0.5)
    flat = superlinear_attention(q, k, v, s, cfg, cache_position=torch.arange(6, 10), backend="reference")
    row = superlinear_attention(q, k, v, s, cfg, cache_position=torch.arange(6, 10)[None], backend="reference")
    assert torch.equal(row, flat)
    unchecked = check_inputs(q, k, v, s, cfg, torch.tensor([7, 8, 9, 10]), None, None, check_values=False)
    assert unchecked.cache_position.tolist() == [7, 8, 9, 10]
    first, again = (check_inputs(q, k, v, s, cfg, None, None, None).first_real for _ in range(2))
    assert first is again and first.tolist() == [0]
    two = check_inputs(*(t.expand(2, -1, -1, -1) for t in (q, k, v, s)), cfg, None, None, None).first_real
    assert two.tolist() == [0, 0]
    # s0 per row of a left-padded mask: the first real key, or L_kv for a row of padding only
    assert first_real_token(torch.tensor([[0, 0, 1, 1], [0, 0, 0, 0], [1, 1, 1, 1]])).tolist() == [2, 4, 0]


def test_selection_mask_holds_whole_spans_from_anchor_zero_on():
    """`Selection.mask`: every key of a live slot's [span_lo, span_hi] (both ends included; an anchor at key 0 is a
    live slot) and of the window; an empty slot (anchor -1) holds none."""
    from slkernels.selection import Selection

    slots = lambda *values: torch.tensor([[[values]]])  # noqa: E731 - [B=1, H=1, L_q=1, k=3]
    sel = Selection(anchor=slots(5, 0, -1), span_lo=slots(2, 0, 0), span_hi=slots(4, 0, -1),
                    gate=slots(0.5, 0.5, 0.0), window_lo=torch.tensor([[8]]), window_hi=torch.tensor([[9]]))
    assert torch.nonzero(sel.mask(10)[0, 0, 0]).flatten().tolist() == [0, 2, 3, 4, 8, 9]


def test_select_spans_scores_float64_inputs_in_float64():
    """docs/semantics.md: the search score is float64 for float64 inputs. Two anchors whose keys differ by 1e-12
    score apart in float64 (the farther one wins) and tie in float32 (the nearer one would win)."""
    cfg = SuperlinearConfig(sw_index=1, num_spans=1, search_power=0.5, span_power=0.5)  # row 20: anchors 17, 12, 5
    k = torch.zeros(1, 1, 21, 4, dtype=torch.float64)
    k[0, 0, 17, 0], k[0, 0, 12, 0] = 1.0, 1.0 + 1e-12
    s = torch.zeros(1, 1, 21, 4, dtype=torch.float64)
    s[0, 0, 20, 0] = 1.0
    sel = select_spans(s, k, cfg)
    assert sel.anchor[0, 0, 20].tolist() == [12]
    assert select_spans(s.float(), k.float(), cfg).anchor[0, 0, 20].tolist() == [17]
