"""Fingerprinters for other frameworks' objects, registered as a user would register one.

A framework object is fingerprinted by what decides its trace, not by a walk
of its whole object graph (a Keras functional model links every tensor back
to the layer that made it; an nnx module's class carries an ABC cache):

* a Keras layer, model or graph operation (``keras.Operation``, so every
  layer and model too): its class, ``get_config()`` (layer options), its
  public attributes (what a subclass's ``call`` may read), its sublayers by
  position, each described the same way, the name, shape, dtype, trainable
  flag and *value* of every variable it holds itself, and, for a functional model, its wiring:
  which operation's output feeds which, by operation and node position.
  Names never enter, at any nesting level: Keras numbers generated names per
  process (``dense_7`` once another model was built), and a name never
  decides the trace. A functional or sequential model's own ``get_config()``
  is not used: it serializes every layer a second time, with their names,
  and cost as much as JAX tracing the model. Through ``stateless_call`` the
  variables' values are arguments and the hashed ones are never read;
  hashing them anyway is what keeps a model called directly, which reads its
  own weights, from ever giving a stale hit;
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
import types
from typing import Any

from .fingerprint import register_fingerprinter

__all__: list[str] = []


# --------------------------------------------------------------------- keras
def _keras_operation(op: Any) -> dict[str, Any]:
    """A Keras layer, model, or graph operation (``keras.ops.add`` in a functional model).

    Names never appear: Keras numbers auto-generated names per process
    (``dense_3`` after another model was built), so a rebuilt model would
    never hit again. Layers are described by position, at every nesting
    level: each sublayer by its own description, a functional model's wiring
    by operation and node positions.
    """
    from keras.src.layers.layer import Layer

    sublayers: list[Any] = []
    own_variables: list[Any] = []
    if isinstance(op, Layer):
        sublayers = list(op._flatten_layers(include_self=False, recursive=False))
        own_variables = _keras_own_variables(op)
    described = {id(x) for x in (*sublayers, *own_variables)}
    description: dict[str, Any] = {
        # Public attributes: what a subclass's call() may read (options,
        # functions, arrays), less the sublayers and variables described below.
        "attributes": {
            k: _keras_attribute(op, k, v, sublayers)
            for k, v in vars(op).items()
            if not k.startswith("_")
            and k not in ("built", "name")
            and id(v) not in described
            and not _keras_own_wrapper(op, k, v)
        },
        "config": _keras_config(op, sublayers),
    }
    if isinstance(op, Layer):
        description["layers"] = sublayers
        # Only the layer's own: a sublayer's are in its own description.
        description["variables"] = {f"{i}:{v.name}": v for i, v in enumerate(own_variables)}
    wiring = _keras_wiring(op, sublayers)
    if wiring is not None:
        description["wiring"] = wiring
    return description


def _keras_attribute(op: Any, name: str, value: Any, sublayers: list[Any]) -> Any:
    from keras.src.initializers.initializer import Initializer

    if name == "output_names":  # a model's output layers' (generated) names
        at = {layer.name: f"<layer {i}>" for i, layer in enumerate(sublayers)}
        return [at.get(n, n) for n in value]
    if isinstance(value, Initializer) and getattr(op, "built", False):
        # An initializer draws a seed per process when given none; once the
        # weights exist it is never called again, so its config is what it
        # is. (An unbuilt layer builds inside the trace: its seeds decide the
        # program's constants and are kept.)
        return ("initializer", type(value), value.get_config())
    return value


def _keras_own_wrapper(op: Any, name: str, value: Any) -> bool:
    """Whether ``value`` is Keras' per-instance wrapper of the class's own method ``name``.

    ``Layer.__new__`` wraps ``build`` and ``quantize`` in closures of the
    instance: the class, walked as code, already says what they run. A method
    a user assigns instead is kept.
    """
    method = getattr(value, "__wrapped__", None)
    return (
        isinstance(method, types.MethodType)
        and method.__self__ is op
        and method.__func__ is getattr(type(op), name, None)
    )


def _keras_own_variables(layer: Any) -> list[Any]:
    # As Layer.variables gathers them, without recursing into sublayers.
    seen: set[int] = set()
    found = []
    candidates = [*layer._trainable_variables, *layer._non_trainable_variables]
    for variable in candidates + [sg.state for sg in layer._seed_generators]:
        if id(variable) not in seen:
            seen.add(id(variable))
            found.append(variable)
    return found


def _keras_config(op: Any, sublayers: list[Any]) -> Any:
    from keras.src.models.functional import Functional
    from keras.src.models.sequential import Sequential

    get_config = type(op).get_config
    if get_config is Functional.get_config or get_config is Sequential.get_config:
        # Their get_config serializes every layer again (a ResNet50's takes
        # longer than tracing it): the layers and the wiring are described
        # by position instead; what is left of the config is this.
        return {"trainable": op.trainable, "dtype_policy": op.dtype_policy.name}
    try:
        config = op.get_config()
    except NotImplementedError:  # a subclass without get_config: its code and attributes decide
        return "no config"
    names = {op.name: "<self>"}
    if sublayers:  # a wrapper (Bidirectional) or a subclass's get_config may hold their configs
        below = op._flatten_layers(include_self=False, recursive=True)
        names |= {layer.name: f"<layer {i}>" for i, layer in enumerate(below)}
    return _unnamed(config, names, top=True)


# Where a serialized config refers to a layer by name: [name, node index, tensor index].
_LAYER_REFERENCES = ("keras_history", "input_layers", "output_layers")


def _unnamed(value: Any, names: dict[str, str], top: bool = False) -> Any:
    """``value`` without the layer names in it: dropped, or replaced by positions where referred to.

    Only a layer config's own ``name`` is dropped (the dict of a layer config
    has ``trainable``; a dtype policy's ``{"name": "float32"}`` does not);
    any other string is kept as it is, so no two different options can ever
    read the same.
    """
    cls = type(value)
    if cls is dict:
        layer_config = top or "trainable" in value or "inbound_nodes" in value
        out = {}
        for k, v in value.items():
            if k == "name" and layer_config and v in names:
                continue
            out[k] = _referred(v, names) if k in _LAYER_REFERENCES else _unnamed(v, names)
        return out
    if cls is list or cls is tuple:
        return cls(_unnamed(v, names) for v in value)
    return value


def _referred(value: Any, names: dict[str, str]) -> Any:
    cls = type(value)
    if cls is list or cls is tuple:
        if len(value) == 3 and isinstance(value[0], str) and value[0] in names:
            return cls((names[value[0]], *value[1:]))
        return cls(_referred(v, names) for v in value)
    if cls is dict:
        return {k: _referred(v, names) for k, v in value.items()}
    return value


def _keras_wiring(model: Any, sublayers: list[Any]) -> dict[str, Any] | None:
    """A functional model's graph: which operation's output feeds which, by position."""
    from keras.src.backend import KerasTensor
    from keras.src.models.functional import Functional
    from keras.src.ops.function import make_node_key

    if not isinstance(model, Functional):
        return None  # a Sequential runs its layers in order; a subclass by its code
    operations = model.operations
    at = {id(op): i for i, op in enumerate(operations)}
    layer_at = {id(layer): i for i, layer in enumerate(sublayers)}
    # A layer shared with another model has nodes of that model too: only
    # this model's count, numbered in order (as Keras' own config does).
    node_at: dict[tuple[int, int], int] = {}
    for op in operations:
        kept = 0
        for i, _ in enumerate(op._inbound_nodes):
            if make_node_key(op, i) in model._nodes:
                node_at[id(op), i] = kept
                kept += 1

    def mapped(value: Any) -> Any:
        if isinstance(value, KerasTensor):
            op, node, index = value._keras_history
            return ("tensor", at[id(op)], node_at[id(op), node], index)
        if type(value) is dict:
            return {k: mapped(v) for k, v in value.items()}
        if type(value) in (list, tuple):
            return type(value)(mapped(v) for v in value)
        return value

    return {
        # A layer is described under "layers"; a graph operation that is not a
        # layer (keras.ops.add on tensors) by its own description here.
        "operations": [
            ("layer", layer_at[id(op)]) if id(op) in layer_at else op for op in operations
        ],
        "nodes": [
            [
                mapped({"args": node.arguments.args, "kwargs": node.arguments.kwargs})
                for i, node in enumerate(op._inbound_nodes)
                if (id(op), i) in node_at
            ]
            for op in operations
        ],
        "inputs": mapped(model._inputs_struct),
        "outputs": mapped(model._outputs_struct),
    }


def _keras_variable(variable: Any) -> tuple[Any, ...]:
    # The name is the key the layer lists it under; whether it is trainable
    # decides which of stateless_call's lists its value comes from.
    return ("trainable" if variable.trainable else "non-trainable", variable.value)


def _keras_tensor(tensor: Any) -> tuple[Any, ...]:
    # A symbolic tensor: its spec. The operation that made it is in the model's wiring.
    return ("KerasTensor", tuple(tensor.shape), str(tensor.dtype), bool(tensor.sparse))


register_fingerprinter("keras.src.ops.operation.Operation", _keras_operation)
register_fingerprinter("keras.src.backend.common.variables.Variable", _keras_variable)
register_fingerprinter("keras.src.backend.common.keras_tensor.KerasTensor", _keras_tensor)
# Keras' tracked containers (a layer's list of sublayers): by their contents.
register_fingerprinter("keras.src.utils.tracking.TrackedList", list)
register_fingerprinter("keras.src.utils.tracking.TrackedDict", dict)
register_fingerprinter("keras.src.utils.tracking.TrackedSet", set)


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
