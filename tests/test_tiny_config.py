"""The tiny configs put softmax attention exactly where the layer pattern says, for every architecture."""

import pytest

from slconvert.architectures import architecture_for, layer_map
from slconvert.errors import SlconvertError
from slconvert.tiny import TINY_ARCHITECTURES, tiny_config

# model_type -> (its default pattern, the letter of its other layer kind); falcon_h1's every layer holds attention.
_DEFAULTS = {
    "nemotron_h": "MAEA", "jamba": "MAMA", "granitemoehybrid": "MAMA", "qwen3_next": "LALA",
    "qwen3_5_moe_text": "LALA", "qwen3_5_text": "LALA", "bamba": "MAMA", "falcon_h1": "HH", "lfm2": "CACA",
    "lfm2_moe": "CACA", "minimax": "LALA", "olmo_hybrid": "LALA",
}


def _attention_map(model_type, **kwargs) -> str:
    config = tiny_config(model_type, **kwargs)
    return "".join("A" if layer.is_attention else "." for layer in layer_map(architecture_for(model_type), config))


def test_every_tiny_architecture_is_listed_here():
    assert set(_DEFAULTS) == set(TINY_ARCHITECTURES)


@pytest.mark.parametrize("model_type", [m for m in TINY_ARCHITECTURES if m != "falcon_h1"])
@pytest.mark.parametrize("pattern", ["XXAXXA", "AXXAXX", "XAXAXA", "XXXXA", "XAXXAXXA"])
def test_a_pattern_string_places_attention_at_its_a_layers(model_type, pattern):
    # a periodic pattern (jamba's config holds a period and an offset, so an offset of 0 is a different model)
    other = next(c for c in _DEFAULTS[model_type] if c != "A")
    spelled = pattern.replace("X", other)
    assert _attention_map(model_type, layers=spelled) == pattern.replace("X", ".")


@pytest.mark.parametrize("model_type", [m for m in TINY_ARCHITECTURES if m != "falcon_h1"])
@pytest.mark.parametrize("layers", [2, 3, 5, 6, 9])
def test_a_layer_count_repeats_the_default_pattern_from_its_start(model_type, layers):
    expected = (_DEFAULTS[model_type] * 3)[:layers]
    assert _attention_map(model_type, layers=layers) == "".join("A" if c == "A" else "." for c in expected)


@pytest.mark.parametrize("layers", [1, 3])
def test_falcon_h1_holds_attention_in_every_layer(layers):
    assert _attention_map("falcon_h1", layers=layers) == "A" * layers


@pytest.mark.parametrize("hidden", [32, 48, 128])
def test_hidden_sizes_that_are_multiples_of_16_from_32_are_accepted(hidden):
    assert tiny_config("bamba", hidden=hidden).hidden_size == hidden


@pytest.mark.parametrize("hidden", [16, 0, 40, 33])
def test_other_hidden_sizes_are_refused_with_the_rule(hidden):
    with pytest.raises(SlconvertError, match=rf"hidden={hidden} must be a multiple of 16 and >= 32"):
        tiny_config("bamba", hidden=hidden)


@pytest.mark.parametrize("model_type, pattern", [("bamba", "MAXA"), ("qwen3_next", "MAMA"), ("falcon_h1", "HA"),
                                                 ("lfm2", ""), ("nemotron_h", "MAEa")])
def test_a_pattern_with_letters_of_another_architecture_is_refused_with_the_letters(model_type, pattern):
    with pytest.raises(SlconvertError, match=rf"layers='{pattern}': a {model_type} pattern is made of "):
        tiny_config(model_type, layers=pattern)


@pytest.mark.parametrize("pattern", ["MAAM", "MAMMAA", "MMMAMA", "MMMM", "M"])
def test_a_jamba_pattern_its_period_and_offset_cannot_spell_is_refused(pattern):
    with pytest.raises(SlconvertError, match="a jamba pattern must hold attention every k layers"):
        tiny_config("jamba", layers=pattern)
