"""scripts/int8_copy.py: the int8 copy of a checkpoint and the float32 checkpoint rebuilt from it."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
import torch
from module_file import load_module
from safetensors.torch import load, load_file

ROOT = Path(__file__).resolve().parents[1]
TEACHER = ROOT / "slconvert" / "assets" / "tiny-teacher"


@pytest.fixture(scope="module")
def int8_copy():
    return load_module(ROOT / "scripts" / "int8_copy.py")


def test_the_rebuilt_teacher_is_within_half_a_step_of_each_weight_and_predicts_alike(int8_copy, tmp_path):
    """Round trip on the shipped tiny teacher: every quantized weight within scale / 2, the rest bit-equal, the
    copy under 0.3 of the weights' size, the same config, and logits that give the same greedy tokens."""
    from transformers import AutoModelForCausalLM

    copy = tmp_path / "copy"
    int8_copy.main(["pack", str(TEACHER), str(copy)])
    int8_copy.main(["unpack", str(copy), str(tmp_path / "model")])
    original = {k: v for f in sorted(TEACHER.glob("*.safetensors")) for k, v in load_file(f).items()}
    rebuilt = load_file(tmp_path / "model" / "model.safetensors")
    stored = load(gzip.decompress((copy / int8_copy.WEIGHTS).read_bytes()))
    assert rebuilt.keys() == original.keys()
    quantized = 0
    for name, tensor in original.items():
        if tensor.is_floating_point() and tensor.dim() >= 2:
            quantized += 1
            assert stored[name].dtype == torch.int8
            step = stored[name + int8_copy.SCALE_SUFFIX].reshape(*tensor.shape[:-1], 1)
            assert ((rebuilt[name] - tensor.float()).abs() <= step / 2 + 1e-7).all(), name
        else:
            assert torch.equal(rebuilt[name], tensor), name
    assert quantized and (copy / int8_copy.WEIGHTS).stat().st_size < 0.3 * sum(
        f.stat().st_size for f in TEACHER.glob("*.safetensors"))
    assert (tmp_path / "model" / "config.json").read_text() == (TEACHER / "config.json").read_text()

    ids = torch.arange(3, 200).reshape(1, -1) % 1000
    with torch.no_grad():
        want = AutoModelForCausalLM.from_pretrained(TEACHER, dtype=torch.float32)(input_ids=ids).logits
        got = AutoModelForCausalLM.from_pretrained(tmp_path / "model", dtype=torch.float32)(input_ids=ids).logits
    # an expert choice near a tie may flip at a position, so the bound is on the mean and the greedy tokens
    assert (got - want).abs().mean() < 0.05 * want.std()
    assert (got.argmax(-1) == want.argmax(-1)).float().mean() > 0.95


def test_a_folder_without_a_checkpoint_or_copy_is_one_error_line(int8_copy, tmp_path):
    with pytest.raises(SystemExit, match="is not a checkpoint folder"):
        int8_copy.main(["pack", str(tmp_path), str(tmp_path / "c")])
    with pytest.raises(SystemExit, match="holds no int8 copy"):
        int8_copy.main(["unpack", str(tmp_path), str(tmp_path / "m")])
