"""The config schema: defaults per method, strict keys, round trip, budget strings."""

from __future__ import annotations

import pytest

from peft_ir.errors import PeftIRError
from peft_ir.tuning import METHODS, TuningConfig, parse_share


def test_registry_lists_every_method_of_the_design() -> None:
    assert list(METHODS) == [
        "full", "bitfit", "adapter", "parallel", "prefix", "lora", "mam", "iaa-s", "iaa-l", "iaa-m"
    ]


@pytest.mark.parametrize("method", list(METHODS))
def test_round_trip_through_dict(method: str) -> None:
    config = TuningConfig(method=method, seed=7)
    again = TuningConfig.from_dict(config.to_dict())
    assert again == config
    assert again.to_dict() == config.to_dict()


def test_method_defaults_are_the_half_percent_reference_sizes() -> None:
    assert TuningConfig(method="adapter").r == 16
    assert TuningConfig(method="prefix").prefix_len == 32
    lora = TuningConfig(method="lora")
    assert (lora.lora_r, lora.lora_alpha, lora.target_modules) == (16, 32.0, None)
    iaa = TuningConfig(method="iaa-l")
    assert (iaa.r, iaa.ar, iaa.aside) == (12, 12, "layer")
    assert TuningConfig(method="iaa-s").aside == "sublayer"
    assert TuningConfig(method="iaa-m").aside == "model"
    assert TuningConfig(method="bitfit").r is None


def test_unknown_keys_are_rejected_by_name() -> None:
    with pytest.raises(PeftIRError, match="bottleneck"):
        TuningConfig.from_dict({"method": "adapter", "bottleneck": 8})


def test_unknown_method_is_rejected() -> None:
    with pytest.raises(PeftIRError, match="unknown tuning method 'houlsby'"):
        TuningConfig(method="houlsby")


def test_a_size_the_method_ignores_is_an_error() -> None:
    with pytest.raises(PeftIRError, match="r does not apply to method lora"):
        TuningConfig(method="lora", r=8)
    with pytest.raises(PeftIRError, match="prefix_len does not apply"):
        TuningConfig(method="adapter", prefix_len=4)


def test_aside_on_other_methods_and_fixed_for_iaa() -> None:
    config = TuningConfig(method="lora", aside="layer", ar=8)
    assert config.used_fields()[-1] == "ar" and config.ar == 8
    assert TuningConfig(method="prefix", aside="model").ar == 12
    with pytest.raises(PeftIRError, match="always places"):
        TuningConfig(method="iaa-l", aside="model")
    with pytest.raises(PeftIRError, match="takes no aside"):
        TuningConfig(method="full", aside="layer")
    with pytest.raises(PeftIRError, match="aside must be one of"):
        TuningConfig(method="lora", aside="everywhere")
    with pytest.raises(PeftIRError, match="ar does not apply"):
        TuningConfig(method="lora", ar=8)


@pytest.mark.parametrize("bad", [{"r": 0}, {"r": 2.5}, {"r": True}, {"activation": "softmax"}])
def test_invalid_sizes(bad: dict) -> None:
    with pytest.raises(PeftIRError):
        TuningConfig(method="adapter", **bad)


def test_parse_share() -> None:
    assert parse_share("0.5%") == pytest.approx(0.005)
    assert parse_share(" 6.7 % ") == pytest.approx(0.067)
    assert parse_share(0.005) == 0.005
    assert parse_share("0.005") == 0.005
    for bad in ("5", "-1%", "half", "0"):
        with pytest.raises(PeftIRError):
            parse_share(bad)


def test_activation_only_where_there_is_a_bottleneck() -> None:
    assert TuningConfig(method="adapter", activation="gelu").activation == "gelu"
    assert TuningConfig(method="lora").activation is None
    assert TuningConfig(method="lora", aside="layer").activation == "relu"
    with pytest.raises(PeftIRError, match="activation does not apply"):
        TuningConfig(method="prefix", activation="gelu")
