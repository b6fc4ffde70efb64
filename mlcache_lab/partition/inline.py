"""Inline call primitives so that clusters can split what a call groups together.

``jax.jit`` inside a model (``pjit``, named ``jit`` in jaxprs), ``closed_call``,
``core_call``, ``jax.checkpoint`` (``remat2``) and custom JVP/VJP calls are
replaced by their bodies, recursively, also inside ``scan``/``while``/``cond``
bodies. Forward evaluation is unchanged; what is lost is only what those wrappers
mean to differentiation (custom derivative rules, rematerialisation), which a
forward partition does not need. Inlined bodies get fresh variables, since the
same body object can be called from several places.
"""

from __future__ import annotations

from typing import Any

from jax.extend.core import ClosedJaxpr, DropVar, Jaxpr, JaxprEqn, Literal, Var
from jax.extend.core import jaxprs_in_params as _jaxprs_in_params

__all__ = ["CALL_PARAMS", "inline_calls"]

CALL_PARAMS: dict[str, str] = {
    "jit": "jaxpr",
    "pjit": "jaxpr",
    "closed_call": "call_jaxpr",
    "core_call": "call_jaxpr",
    "remat2": "jaxpr",
    "checkpoint": "jaxpr",
    "custom_jvp_call": "call_jaxpr",
    "custom_vjp_call": "call_jaxpr",
    "custom_vjp_call_jaxpr": "fun_jaxpr",
}
"""Call primitive name -> the parameter holding the body that is inlined."""

_BODY_PARAMS = ("jaxpr", "cond_jaxpr", "body_jaxpr", "branches")


def inline_calls(closed: ClosedJaxpr) -> ClosedJaxpr:
    """``closed`` with every call inlined; same inputs, outputs and values.

    Constants closed over by inlined bodies become constvars of the result.
    """
    constvars = list(closed.jaxpr.constvars)
    consts = list(closed.consts)
    eqns: list[JaxprEqn] = []
    env: dict[Var, Any] = {}
    _emit(closed.jaxpr, env, eqns, constvars, consts, fresh=False)
    outvars = [_read(env, v) for v in closed.jaxpr.outvars]
    jaxpr = Jaxpr(
        constvars,
        closed.jaxpr.invars,
        outvars,
        eqns,
        closed.jaxpr.effects,
        closed.jaxpr.debug_info,
    )
    return ClosedJaxpr(jaxpr, consts)


def has_calls(jaxpr: Jaxpr) -> bool:
    """Whether any equation of ``jaxpr`` (not its bodies) is a call."""
    return any(e.primitive.name in CALL_PARAMS for e in jaxpr.eqns)


def _read(env: dict[Var, Any], atom: Any) -> Any:
    return atom if isinstance(atom, Literal) else env.get(atom, atom)


def _emit(
    jaxpr: Jaxpr,
    env: dict[Var, Any],
    out: list[JaxprEqn],
    constvars: list[Var],
    consts: list[Any],
    *,
    fresh: bool,
) -> None:
    """Append ``jaxpr``'s equations to ``out``, inlining calls; ``env`` renames vars."""
    for eqn in jaxpr.eqns:
        invars = [_read(env, v) for v in eqn.invars]
        body_param = CALL_PARAMS.get(eqn.primitive.name)
        if body_param is not None:
            body = eqn.params[body_param]
            inner_env: dict[Var, Any] = {}
            if isinstance(body, ClosedJaxpr):
                for v, c in zip(body.jaxpr.constvars, body.consts, strict=True):
                    new = Var(v.aval)
                    constvars.append(new)
                    consts.append(c)
                    inner_env[v] = new
                body = body.jaxpr
            n_consts = len(invars) - len(body.invars)  # custom_jvp_call passes its consts
            inner_env.update(
                zip(body.invars, invars[n_consts:] if n_consts > 0 else invars, strict=True)
            )
            _emit(body, inner_env, out, constvars, consts, fresh=True)
            for o, r in zip(eqn.outvars, body.outvars, strict=True):
                if not isinstance(o, DropVar):
                    env[o] = _read(inner_env, r)
            continue
        outvars = eqn.outvars
        if fresh:
            outvars = [DropVar(v.aval) if isinstance(v, DropVar) else Var(v.aval) for v in outvars]
            env.update(zip(eqn.outvars, outvars, strict=True))
        params = eqn.params
        if any(k in params for k in _BODY_PARAMS) and eqn.primitive.name in _STRUCTURED:
            params = {
                **params,
                **{k: _inline_param(params[k]) for k in _BODY_PARAMS if k in params},
            }
        out.append(eqn.replace(invars=invars, outvars=outvars, params=params))


_STRUCTURED = frozenset({"scan", "while", "cond"})


def _inline_param(value: Any) -> Any:
    if isinstance(value, ClosedJaxpr):
        return inline_calls(value) if _has_calls_deep(value.jaxpr) else value
    if isinstance(value, tuple):
        return tuple(_inline_param(v) for v in value)
    return value


def _has_calls_deep(jaxpr: Jaxpr) -> bool:
    for eqn in jaxpr.eqns:
        if eqn.primitive.name in CALL_PARAMS:
            return True
        for sub in _jaxprs_in_params(eqn.params):
            if _has_calls_deep(sub):
                return True
    return False
