"""Small models written with other projects' frameworks, randomly initialised (no downloads).

The toolkit's promises must hold on models researchers bring, not only on the
built-in zoo. Each factory here builds a small model with Keras 3 (JAX
backend), dm-haiku, flax.linen, flax.nnx, equinox or optax, in the way that
framework's own documentation writes it, and returns a :class:`Model` whose
``apply(params, *inputs)`` is the pure function a user would hand to
``jax.jit``:

===================  =================================================================
name                 what it is
===================  =================================================================
keras_sequential     ``keras.Sequential`` MLP, through ``model.stateless_call``
keras_attention      functional Keras model with causal ``MultiHeadAttention``
keras_mobilenet      ``keras.applications.MobileNetV3Small`` at 32x32, inference
keras_resnet50       ``keras.applications.ResNet50`` at 64x64, inference (benchmarks)
haiku_mlp            ``hk.nets.MLP`` (biases broadcast to the batch)
haiku_convbn         haiku conv net with ``hk.BatchNorm`` in inference
haiku_resnet18       ``hk.nets.ResNet18`` in inference
linen_cnn            flax.linen CNN with ``nn.BatchNorm`` in inference
linen_transformer    flax.linen causal transformer block
nnx_closed           flax.nnx module *closed over* by the function (params unused)
nnx_split            flax.nnx split/merge: the state is the argument
equinox_mlp          ``eqx.nn.MLP``, arrays partitioned from the static part
optax_train_step     flax.linen MLP, ``value_and_grad`` and adam: a training step
===================  =================================================================

Weights are drawn once, when the factory runs, from ``seed``; ``init`` returns
them (its key is ignored: the frameworks draw with their own generators).
Batch-norm statistics are calibrated on a batch of inputs, so an inference net
gives outputs that differ from sample to sample: freshly initialised
statistics shrink a deep net's logits to about 1e-10, and a comparison against
such an output proves nothing (:func:`check_nondegenerate`).

Each factory's keyword arguments are what a user would edit between two runs
(an activation, a layer option, a closed-over weight or hyperparameter), so
tests can check that each change is a cache miss. The frameworks are imported
only when a factory runs; they come with the ``test`` extra.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ._registry import Model

__all__ = ["FRAMEWORK_MODELS", "check_nondegenerate", "framework_model"]

_FACTORIES: dict[str, Callable[..., Model]] = {}


def _factory(name: str) -> Callable[[Callable[..., Model]], Callable[..., Model]]:
    def decorate(fn: Callable[..., Model]) -> Callable[..., Model]:
        _FACTORIES[name] = fn
        return fn

    return decorate


def framework_model(name: str, **config: Any) -> Model:
    """Build the framework model ``name`` with keyword ``config`` overriding its defaults.

    Built once per process for each ``(name, config)``: a Keras application
    takes seconds to initialise, eagerly, layer by layer.

    Raises:
      ValueError: ``name`` is not one of :data:`FRAMEWORK_MODELS`.
    """
    if name not in _FACTORIES:
        raise ValueError(
            f"Valid options for 'name' are {sorted(_FACTORIES)}. Got name={name!r} instead."
        )
    return _build(name, tuple(sorted(config.items())))


@functools.cache
def _build(name: str, config: tuple[tuple[str, Any], ...]) -> Model:
    return _FACTORIES[name](**dict(config))


def check_nondegenerate(y: Any, *, batch_axis: int = 0, what: str = "output") -> None:
    """Raise ``AssertionError`` unless ``y`` varies across samples and is not ~0.

    Every floating leaf must have a magnitude above 1e-4 and a spread across
    the batch axis of at least 1e-3 of its magnitude: an all-zero output or
    one that is the same for every sample makes any comparison vacuous.
    """
    for leaf in jax.tree_util.tree_leaves(y):
        a = np.asarray(leaf, dtype=np.float64)
        if a.ndim <= batch_axis or a.shape[batch_axis] < 2:
            continue
        scale = float(np.max(np.abs(a)))
        spread = float(np.max(np.std(a, axis=batch_axis)))
        if not scale > 1e-4 or not spread > 1e-3 * scale:
            raise AssertionError(
                f"degenerate {what}: max |y| = {scale:.3g}, max spread across samples = "
                f"{spread:.3g} (shape {a.shape}); a comparison against it proves nothing"
            )


def _rng(key: jax.Array) -> np.random.Generator:
    # NumPy draws: jax.random would compile one kernel per shape, seconds per model.
    return np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel().tolist())


def _images(batch_size: int, key: jax.Array, size: int, channels: int = 3) -> tuple[Any, ...]:
    x = _rng(key).uniform(size=(batch_size, size, size, channels))
    return (jnp.asarray(x, jnp.float32),)


def _sequences(batch_size: int, key: jax.Array, length: int, width: int) -> tuple[Any, ...]:
    return (jnp.asarray(_rng(key).normal(size=(batch_size, length, width)), jnp.float32),)


def _vectors(batch_size: int, key: jax.Array, width: int) -> tuple[Any, ...]:
    return (jnp.asarray(_rng(key).normal(size=(batch_size, width)), jnp.float32),)


def _fixed(params: Any) -> Callable[[jax.Array], Any]:
    def init(key: jax.Array) -> Any:
        del key  # drawn once by the framework, from the factory's seed
        return params

    return init


# --------------------------------------------------------------------- keras
def _keras() -> Any:
    os.environ.setdefault("KERAS_BACKEND", "jax")
    import keras

    if keras.backend.backend() != "jax":
        raise RuntimeError(
            f"Keras runs on the {keras.backend.backend()!r} backend; set KERAS_BACKEND=jax "
            "before Keras is first imported."
        )
    return keras


def _keras_model(
    name: str,
    model: Any,
    make_inputs: Callable[[int, jax.Array], tuple[Any, ...]],
    config: dict[str, Any],
    calibrate: bool,
) -> Model:
    """A Keras model as ``apply((trainable, non_trainable), x)`` via ``stateless_call``."""
    trainable = [v.value for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]
    if calibrate:
        non_trainable = _keras_calibrate(model, trainable, non_trainable, make_inputs)

    def apply(params: Any, x: Any) -> Any:
        return model.stateless_call(params[0], params[1], x)[0]

    return Model(
        name, apply, _fixed((trainable, non_trainable)), make_inputs, (None, 0), dict(config)
    )


def _keras_calibrate(
    model: Any, trainable: list[Any], non_trainable: list[Any], make_inputs: Callable[..., Any]
) -> list[Any]:
    """Moving statistics of every BatchNormalization set to those of one batch."""
    keras = _keras()
    norms = [
        layer
        for layer in model._flatten_layers()
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    saved = [n.momentum for n in norms]
    for n in norms:
        n.momentum = 0.0  # the moving statistics become the batch's
    try:
        (x,) = make_inputs(32, jax.random.key(1234))
        _, non_trainable = jax.jit(lambda t, n, x: model.stateless_call(t, n, x, training=True))(
            trainable, non_trainable, x
        )
    finally:
        for n, m in zip(norms, saved, strict=True):
            n.momentum = m
    return list(non_trainable)


@_factory("keras_sequential")
def _keras_sequential(activation: str = "relu", width: int = 32, seed: int = 0) -> Model:
    keras = _keras()
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((16,)),
            keras.layers.Dense(width, activation=activation),
            keras.layers.Dense(width, activation=activation),
            keras.layers.Dense(8),
        ]
    )
    return _keras_model(
        "keras_sequential",
        model,
        lambda b, k: _vectors(b, k, 16),
        {"activation": activation, "width": width, "seed": seed},
        calibrate=False,
    )


@_factory("keras_attention")
def _keras_attention(
    activation: str = "gelu", heads: int = 2, length: int = 8, width: int = 16, seed: int = 0
) -> Model:
    keras = _keras()
    keras.utils.set_random_seed(seed)
    inp = keras.Input((length, width))
    h = keras.layers.LayerNormalization()(inp)
    h = keras.layers.MultiHeadAttention(num_heads=heads, key_dim=width // heads)(
        h, h, use_causal_mask=True
    )
    h = keras.layers.Add()([inp, h])
    h = keras.layers.Dense(2 * width, activation=activation)(keras.layers.LayerNormalization()(h))
    out = keras.layers.Dense(width)(h)
    return _keras_model(
        "keras_attention",
        keras.Model(inp, out),
        lambda b, k: _sequences(b, k, length, width),
        {"activation": activation, "heads": heads, "length": length, "width": width, "seed": seed},
        calibrate=False,
    )


@_factory("keras_mobilenet")
def _keras_mobilenet(
    classifier_activation: str | None = None, resolution: int = 32, seed: int = 0
) -> Model:
    keras = _keras()
    keras.utils.set_random_seed(seed)
    model = keras.applications.MobileNetV3Small(
        input_shape=(resolution, resolution, 3),
        weights=None,
        classes=10,
        include_preprocessing=False,
        classifier_activation=classifier_activation,
    )
    return _keras_model(
        "keras_mobilenet",
        model,
        lambda b, k: _images(b, k, resolution),
        {"classifier_activation": classifier_activation, "resolution": resolution, "seed": seed},
        calibrate=True,
    )


@_factory("keras_resnet50")
def _keras_resnet50(resolution: int = 64, seed: int = 0) -> Model:
    keras = _keras()
    keras.utils.set_random_seed(seed)
    model = keras.applications.ResNet50(
        input_shape=(resolution, resolution, 3),
        weights=None,
        classes=10,
        classifier_activation=None,
    )
    return _keras_model(
        "keras_resnet50",
        model,
        lambda b, k: _images(b, k, resolution),
        {"resolution": resolution, "seed": seed},
        calibrate=True,
    )


# --------------------------------------------------------------------- haiku
def _haiku_model(
    name: str,
    forward: Callable[[Any, bool], Any],
    make_inputs: Callable[[int, jax.Array], tuple[Any, ...]],
    config: dict[str, Any],
    seed: int,
    calibrate: Callable[[Any], Any] | None = None,
) -> Model:
    """A haiku net as ``apply((params, state), x)`` of ``hk.transform_with_state``.

    ``forward(x, is_training)``: haiku creates batch-norm state only in training
    mode, so the net is initialised in training mode and applied in inference.
    """
    import haiku as hk

    net: Any = hk.without_apply_rng(hk.transform_with_state(forward))
    (x,) = make_inputs(32, jax.random.key(1234))
    # One compiled init instead of hundreds of eager ops.
    params, state = jax.jit(net.init, static_argnums=2)(jax.random.key(seed), x, True)
    params = _unzero(params, seed)
    if calibrate is not None:
        state = calibrate(state)

    def apply(variables: Any, x: Any) -> Any:
        return net.apply(variables[0], variables[1], x, False)[0]

    return Model(name, apply, _fixed((params, state)), make_inputs, (None, 0), dict(config))


def _unzero(params: Any, seed: int) -> Any:
    """Small random values for parameters that haiku initialises to zeros.

    ``hk.nets.ResNet`` zero-initialises its logits layer and the last scale of
    every block, so a fresh net maps every input to exactly 0.
    """
    rng = np.random.default_rng(seed + 2)
    return jax.tree_util.tree_map(
        lambda p: (
            jnp.asarray(0.05 * rng.normal(size=p.shape), p.dtype)
            if not np.any(np.asarray(p))
            else p
        ),
        params,
    )


def _haiku_bn_stats(state: Any, seed: int) -> Any:
    """Non-trivial moving statistics: haiku starts them at mean 0 and variance 0."""
    rng = np.random.default_rng(seed + 1)

    def draw(path: Any, leaf: Any) -> Any:
        text = jax.tree_util.keystr(path)
        if "average" in text and "var" in text:
            return jnp.asarray(rng.uniform(0.5, 1.5, size=leaf.shape), leaf.dtype)
        if "average" in text and "mean" in text:
            return jnp.asarray(0.1 * rng.normal(size=leaf.shape), leaf.dtype)
        return leaf

    return jax.tree_util.tree_map_with_path(draw, state)


@_factory("haiku_mlp")
def _haiku_mlp(activation: str = "relu", width: int = 32, seed: int = 0) -> Model:
    import haiku as hk

    act = getattr(jax.nn, activation)

    def forward(x: Any, is_training: bool) -> Any:
        del is_training
        return hk.nets.MLP([width, width, 8], activation=act)(x)

    return _haiku_model(
        "haiku_mlp",
        forward,
        lambda b, k: _vectors(b, k, 16),
        {"activation": activation, "width": width, "seed": seed},
        seed,
    )


@_factory("haiku_convbn")
def _haiku_convbn(eps: float = 1e-5, channels: int = 8, seed: int = 0) -> Model:
    import haiku as hk

    def forward(x: Any, is_training: bool) -> Any:
        for c in (channels, 2 * channels):
            x = hk.Conv2D(c, 3, stride=2)(x)
            x = hk.BatchNorm(True, True, 0.9, eps=eps)(x, is_training=is_training)
            x = jax.nn.relu(x)
        return hk.Linear(10)(jnp.mean(x, axis=(1, 2)))

    return _haiku_model(
        "haiku_convbn",
        forward,
        lambda b, k: _images(b, k, 16),
        {"eps": eps, "channels": channels, "seed": seed},
        seed,
        calibrate=functools.partial(_haiku_bn_stats, seed=seed),
    )


@_factory("haiku_resnet18")
def _haiku_resnet18(resolution: int = 32, seed: int = 0) -> Model:
    import haiku as hk

    def forward(x: Any, is_training: bool) -> Any:
        return hk.nets.ResNet18(num_classes=10)(x, is_training=is_training)

    return _haiku_model(
        "haiku_resnet18",
        forward,
        lambda b, k: _images(b, k, resolution),
        {"resolution": resolution, "seed": seed},
        seed,
        calibrate=functools.partial(_haiku_bn_stats, seed=seed),
    )


# ---------------------------------------------------------------- flax.linen
def _linen_model(
    name: str,
    module: Any,
    make_inputs: Callable[[int, jax.Array], tuple[Any, ...]],
    config: dict[str, Any],
    seed: int,
) -> Model:
    """A linen module as ``apply(variables, x)``; batch statistics calibrated on one batch."""
    (x,) = make_inputs(32, jax.random.key(1234))
    variables = jax.jit(module.init)(jax.random.key(seed), x)
    if "batch_stats" in variables:
        calibrating = module.clone(momentum=0.0)
        _, stats = jax.jit(
            lambda v, x: calibrating.apply(v, x, train=True, mutable=["batch_stats"])
        )(variables, x)
        variables = {**variables, **stats}

    def apply(variables: Any, x: Any) -> Any:
        return module.apply(variables, x)

    return Model(name, apply, _fixed(variables), make_inputs, (None, 0), dict(config))


@_factory("linen_cnn")
def _linen_cnn(activation: str = "relu", eps: float = 1e-5, seed: int = 0) -> Model:
    from flax import linen as nn

    act = getattr(jax.nn, activation)

    class CNN(nn.Module):
        activation: Callable[[Any], Any] = jax.nn.relu
        epsilon: float = 1e-5
        momentum: float = 0.9

        @nn.compact
        def __call__(self, x: Any, train: bool = False) -> Any:
            for c in (8, 16):
                x = nn.Conv(c, (3, 3), strides=(2, 2))(x)
                x = nn.BatchNorm(
                    use_running_average=not train, epsilon=self.epsilon, momentum=self.momentum
                )(x)
                x = self.activation(x)
            return nn.Dense(10)(jnp.mean(x, axis=(1, 2)))

    return _linen_model(
        "linen_cnn",
        CNN(activation=act, epsilon=eps),
        lambda b, k: _images(b, k, 16),
        {"activation": activation, "eps": eps, "seed": seed},
        seed,
    )


@_factory("linen_transformer")
def _linen_transformer(
    causal: bool = True, length: int = 8, width: int = 16, seed: int = 0
) -> Model:
    from flax import linen as nn

    class Block(nn.Module):
        causal: bool = True
        heads: int = 2

        @nn.compact
        def __call__(self, x: Any) -> Any:
            mask = nn.make_causal_mask(x[..., 0]) if self.causal else None
            h = nn.SelfAttention(num_heads=self.heads, qkv_features=x.shape[-1])(
                nn.LayerNorm()(x), mask=mask
            )
            x = x + h
            h = nn.Dense(2 * x.shape[-1])(nn.LayerNorm()(x))
            return x + nn.Dense(x.shape[-1])(nn.gelu(h))

    return _linen_model(
        "linen_transformer",
        Block(causal=causal),
        lambda b, k: _sequences(b, k, length, width),
        {"causal": causal, "length": length, "width": width, "seed": seed},
        seed,
    )


# ------------------------------------------------------------------ flax.nnx
def _nnx_net(seed: int, width: int) -> Any:
    from flax import nnx

    class Net(nnx.Module):
        def __init__(self, rngs: Any) -> None:
            self.linear1 = nnx.Linear(16, width, rngs=rngs)
            self.norm = nnx.LayerNorm(width, rngs=rngs)
            self.linear2 = nnx.Linear(width, 8, rngs=rngs)

        def __call__(self, x: Any) -> Any:
            return self.linear2(jax.nn.gelu(self.norm(self.linear1(x))))

    return Net(nnx.Rngs(seed))


@_factory("nnx_closed")
def _nnx_closed(weight_shift: float = 0.0, width: int = 32, seed: int = 0) -> Model:
    net = _nnx_net(seed, width)
    if weight_shift:
        # linear2: a shift of linear1's kernel would be undone by the LayerNorm after it.
        net.linear2.kernel[...] = net.linear2.kernel[...] + weight_shift

    def apply(params: Any, x: Any) -> Any:
        del params  # the module is closed over: its weights are constants of the program
        return net(x)

    return Model(
        "nnx_closed",
        apply,
        _fixed(()),
        lambda b, k: _vectors(b, k, 16),
        (None, 0),
        {"weight_shift": weight_shift, "width": width, "seed": seed},
    )


@_factory("nnx_split")
def _nnx_split(width: int = 32, seed: int = 0) -> Model:
    from flax import nnx

    graphdef, state = nnx.split(_nnx_net(seed, width))

    def apply(state: Any, x: Any) -> Any:
        return nnx.merge(graphdef, state)(x)

    return Model(
        "nnx_split",
        apply,
        _fixed(state),
        lambda b, k: _vectors(b, k, 16),
        (None, 0),
        {"width": width, "seed": seed},
    )


# ------------------------------------------------------------------ equinox
@_factory("equinox_mlp")
def _equinox_mlp(activation: str = "relu", width: int = 32, seed: int = 0) -> Model:
    import equinox as eqx

    mlp = eqx.nn.MLP(
        16, 8, width, 2, activation=getattr(jax.nn, activation), key=jax.random.key(seed)
    )
    params, static = eqx.partition(mlp, eqx.is_array)

    def apply(params: Any, x: Any) -> Any:
        return jax.vmap(eqx.combine(params, static))(x)

    return Model(
        "equinox_mlp",
        apply,
        _fixed(params),
        lambda b, k: _vectors(b, k, 16),
        (None, 0),
        {"activation": activation, "width": width, "seed": seed},
    )


# -------------------------------------------------------------------- optax
@_factory("optax_train_step")
def _optax_train_step(learning_rate: float = 1e-3, width: int = 32, seed: int = 0) -> Model:
    import optax
    from flax import linen as nn

    class MLP(nn.Module):
        @nn.compact
        def __call__(self, x: Any) -> Any:
            x = nn.relu(nn.Dense(width)(x))
            return nn.Dense(4)(x)

    module = MLP()
    tx = optax.adam(learning_rate)
    params = module.init(jax.random.key(seed), jnp.zeros((1, 16)))
    opt_state = tx.init(params)

    def loss_fn(params: Any, x: Any, y: Any) -> Any:
        logits = module.apply(params, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    def train_step(state: Any, x: Any, y: Any) -> Any:
        params, opt_state = state
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        updates, opt_state = tx.update(grads, opt_state, params)
        return loss, (optax.apply_updates(params, updates), opt_state)

    def make_inputs(batch_size: int, key: jax.Array) -> tuple[Any, ...]:
        kx, ky = jax.random.split(key)
        (x,) = _vectors(batch_size, kx, 16)
        return (x, jnp.asarray(_rng(ky).integers(0, 4, size=batch_size), jnp.int32))

    return Model(
        "optax_train_step",
        train_step,
        _fixed((params, opt_state)),
        make_inputs,
        (None, 0, 0),
        {"learning_rate": learning_rate, "width": width, "seed": seed},
    )


FRAMEWORK_MODELS: tuple[str, ...] = tuple(sorted(_FACTORIES))
