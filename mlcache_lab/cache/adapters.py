"""Fingerprinters for other frameworks' objects, registered as a user would register one.

A framework object is fingerprinted by what decides its trace, not by a walk
of its whole object graph (a Keras functional model links every tensor back
to the layer that made it; an nnx module's class carries an ABC cache):

* a Keras layer or model (``keras.Layer``, so every model too): its class
  and ``get_config()`` (layer options, the functional graph), its
  public attributes (what a subclass's ``call`` may read), its sublayers, and
  the path, shape, dtype and *value* of every variable it holds. Through
  ``stateless_call`` the values are arguments and the hashed ones are never
  read; hashing them anyway is what keeps a model called directly, which
  reads its own weights, from ever giving a stale hit;
* a flax.nnx ``Module``: ``nnx.split`` into the graph definition and the
  state, each state value hashed under its path;
* a flax.linen ``Module``: its dataclass fields (submodules, options,
  functions fingerprinted as code), the parent link left out;
* a haiku ``Transformed``/``TransformedWithState``: the function it
  transformed, and the init/apply wrappers (``without_apply_rng`` changes
  them).

Equinox modules need no adapter: they are dataclasses whose fields the walk
reads directly. Classes are named by their module-qualified names, so none of
these libraries is imported before one of its objects is fingerprinted.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from .fingerprint import register_fingerprinter

__all__: list[str] = []


# --------------------------------------------------------------------- keras
def _keras_layer(layer: Any) -> dict[str, Any]:
    sublayers = list(layer._flatten_layers(include_self=False, recursive=False))
    # Keras numbers auto-generated names per process ("dense_3"): a rebuilt
    # model would never hit again. Names only wire layers together, so they
    # are replaced one-to-one by positions; the wiring stays described.
    names = {layer.name: "<self>"} | {sub.name: f"<layer {i}>" for i, sub in enumerate(sublayers)}
    try:
        # The options (activation, num_heads, ...) and, for a functional or
        # sequential model, the graph of layers; the class is walked as code.
        config: Any = _renamed(layer.get_config(), names)
    except NotImplementedError:  # a subclass without get_config: its code and attributes decide
        config = "no config"
    return {
        "config": config,
        # Public attributes: what a subclass's call() may read (options, functions, arrays).
        "attributes": {
            k: _renamed(v, names)
            for k, v in vars(layer).items()
            if not k.startswith("_") and k not in ("built", "name")
        },
        "layers": sublayers,
        # Shared variables (a tied embedding) are hashed once: later visits are references.
        "variables": {f"{i}:{v.name}": v for i, v in enumerate(layer.variables)},
    }


def _renamed(value: Any, names: dict[str, str]) -> Any:
    if isinstance(value, str):
        return names.get(value, value)
    if isinstance(value, dict):
        return {k: _renamed(v, names) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_renamed(v, names) for v in value)
    return value


def _keras_variable(variable: Any) -> dict[str, Any]:
    return {
        "name": variable.name,  # "kernel": the path holds the layers' generated names
        "trainable": variable.trainable,
        "value": variable.value,
    }


def _keras_tensor(tensor: Any) -> tuple[Any, ...]:
    # A symbolic tensor: its spec. The layer that made it is in the model's config.
    return ("KerasTensor", tuple(tensor.shape), str(tensor.dtype), bool(tensor.sparse))


register_fingerprinter("keras.src.layers.layer.Layer", _keras_layer)
register_fingerprinter("keras.src.backend.common.variables.Variable", _keras_variable)
register_fingerprinter("keras.src.backend.common.keras_tensor.KerasTensor", _keras_tensor)


# ------------------------------------------------------------------ flax.nnx
def _nnx_module(module: Any) -> dict[str, Any]:
    import jax
    from flax import nnx

    graphdef, state = nnx.split(module)
    leaves, _ = jax.tree_util.tree_flatten_with_path(state)
    return {
        # Node types (classes, walked as code) and static attributes (functions,
        # options): its repr would hold addresses, its fields do not.
        "graphdef": graphdef,
        "state": {".".join(_key_name(k) for k in path): leaf for path, leaf in leaves},
    }


def _key_name(key: Any) -> str:
    # 'linear1.kernel', as nnx prints a path: a miss names the weight that changed.
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


register_fingerprinter("flax.nnx.module.Module", _nnx_module)


# ---------------------------------------------------------------- flax.linen
def _linen_module(module: Any) -> dict[str, Any]:
    return {
        f.name: getattr(module, f.name)
        for f in dataclasses.fields(module)
        if f.name != "parent"  # the link up: the module is described from its own fields down
    }


register_fingerprinter("flax.linen.module.Module", _linen_module)


# --------------------------------------------------------------------- haiku
def _haiku_transformed(transformed: Any) -> dict[str, Any]:
    return {
        "function": getattr(transformed.init, "_original_fn", None),
        "init": transformed.init,
        "apply": transformed.apply,
    }


for _name in ("haiku._src.transform.Transformed", "haiku._src.transform.TransformedWithState"):
    register_fingerprinter(_name, _haiku_transformed)
