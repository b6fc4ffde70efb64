"""The framework-model builders: names, errors, and the non-degeneracy check tests rely on."""

from __future__ import annotations

import numpy as np
import pytest

from mlcache_lab.models.frameworks import FRAMEWORK_MODELS, check_nondegenerate, framework_model


def test_names_and_a_clear_error_for_an_unknown_one() -> None:
    assert {"keras_mobilenet", "haiku_resnet18", "nnx_closed", "optax_train_step"} <= set(
        FRAMEWORK_MODELS
    )
    with pytest.raises(ValueError, match=r"Valid options for 'name' are .*Got name='resnet'"):
        framework_model("resnet")


@pytest.mark.parametrize(
    "y, message",
    [
        (np.zeros((4, 3)), "max \\|y\\| = 0"),
        (np.full((4, 3), 1e-11), "max \\|y\\| = 1e-11"),
        (np.tile(np.arange(3.0), (4, 1)), "spread across samples = 0"),
    ],
)
def test_degenerate_outputs_are_refused(y, message) -> None:
    with pytest.raises(AssertionError, match=message):
        check_nondegenerate(y)


def test_a_varied_output_passes() -> None:
    check_nondegenerate(np.random.default_rng(0).normal(size=(4, 3)))


def test_built_once_per_config_and_not_degenerate() -> None:
    m = framework_model("haiku_mlp")
    assert framework_model("haiku_mlp") is m
    assert framework_model("haiku_mlp", activation="tanh") is not m
    params, x = m.example_args(5)
    check_nondegenerate(m.apply(params, x), what="haiku_mlp")
