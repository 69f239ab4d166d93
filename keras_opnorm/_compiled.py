"""Eager calls of the public functions run through a cached ``tf.function``.

``@compiled_when_eager(tensor_args=...)`` decorates a public ``func(f, x,
...)``. Inside a graph (the user's own ``tf.function``, ``model.fit``) it calls
``func`` unchanged. Called eagerly it dispatches to a ``tf.function`` traced
once per cache key::

  key = (func, f by identity, the static arguments by type and value,
         dtype / rank / non-batch shape of every tensor argument)

The tensor arguments (eager tensors, variables and numpy arrays among the
``tensor_args``, also inside a dict/list ``x``) become the traced function's
inputs. An entry traces at most twice: once for the shapes of its first call
(static shapes make a faster graph), and once, at the first call with another
batch size, with the first axis free, which then serves every batch size. Everything else (``p``, ``num_steps``, flags, a Python
``epsilon``, a loss callable) is static. ``seed_args`` name integer seeds
that are turned into an int32 ``[2]`` seed tensor eagerly (``None`` draws a
fresh one per call), so every seed shares one trace.

Errors and warnings stay eager:

* an error raised while tracing (a bad static argument, a model that cannot
  run in a graph) re-runs the call eagerly, which raises the eager error with
  its message (or returns the eager result); the key is then marked eager-only;
* an InvalidArgumentError raised while running (the graph's assertions: NaN or
  inf in ``x``, ``x`` outside ``clip``, labels out of range) re-runs that call
  eagerly, which raises the eager ``ValueError``;
* a ``VacuousThreatModelWarning`` emitted while tracing is replayed at every
  call (other warnings of the trace, e.g. warn-once ones, are emitted once);
  ``eager_checks(arguments)`` runs the eager checks the trace cannot make (a
  warning on a tensor ``epsilon``'s value);
* under ``tf.config.run_functions_eagerly(True)`` (debugging) the call runs
  eagerly, uncompiled, as before.

Cache: an LRU of `MAX_ENTRIES` entries, global to the process. An entry refers
to ``f`` through a weak reference (for a bound method, to its ``__self__``);
when ``f`` is garbage collected its entries are dropped, so the cache keeps no
model alive. A callable that cannot be weakly referenced is called eagerly.
Static arguments are held by the key (a loss callable made anew for each call
makes a new entry each time); a Python list given for a tensor argument (``x``,
``y``) runs the call eagerly. Not thread-safe across concurrent first calls.
`clear_cache()` empties it; `cache_entries()` lists the entries (tests).
"""

import collections
import functools
import inspect
import types
import warnings
import weakref

import keras
import numpy as np
import tensorflow as tf

__all__ = ["compiled_when_eager", "clear_cache", "cache_entries", "MAX_ENTRIES"]

# Bound on the number of cached tf.functions (each holds its traced graph).
MAX_ENTRIES = 32

_CACHE = collections.OrderedDict()


class _Entry:
  """One cached ``tf.function`` and what its trace recorded."""

  def __init__(self, name, owner_ref):
    self.name = name
    self.owner_ref = owner_ref
    self.function = None
    self.concrete = None  # For the shapes of the first call.
    self.exact_shapes = None
    self.relaxed = None  # For any batch size.
    self.traces = 0
    self.eager_only = False
    self.replayed = []  # (category, message) of keras_opnorm warnings.
    self.output = None  # (structure, Python values or _TENSOR) of the result.


def clear_cache():
  """Drops every cached compiled call."""
  _CACHE.clear()


def cache_entries():
  """The cached entries, oldest first: ``(name, traces, eager_only)`` tuples."""
  return [(e.name, e.traces, e.eager_only) for e in _CACHE.values()]


_TENSOR = object()  # Marks where an input goes in an argument's template.


def _is_tensor_leaf(value):
  # A Keras variable wraps a tf.Variable and is not a tf.Tensor.
  return isinstance(value, (tf.Tensor, tf.Variable, np.ndarray, keras.Variable))


def _static_token(value):
  """A hashable token for a static value (type included: 1, 1.0, True differ)."""
  if value is None or isinstance(value, (bool, int, float, str, np.generic)):
    return (type(value), value)
  if isinstance(value, (tuple, list)):
    return (type(value), tuple(_static_token(v) for v in value))
  if isinstance(value, dict):
    return (dict, tuple((k, _static_token(v)) for k, v in sorted(value.items(), key=repr)))
  hash(value)  # Raises TypeError for an unhashable value (the call stays eager).
  return (type(value), id(value), value)


def _owner(f):
  """``(object to reference weakly, rebuild f from it)`` or None."""
  if isinstance(f, types.MethodType):
    func = f.__func__
    return f.__self__, lambda owner: types.MethodType(func, owner)
  try:
    weakref.ref(f)
  except TypeError:
    return None
  return f, lambda owner: owner


def _drop_owner(owner_id):
  for key in [k for k in _CACHE if k[1] == owner_id]:
    del _CACHE[key]


def compiled_when_eager(*, tensor_args, seed_args=(), eager_checks=None):
  """Runs eager calls of ``func(f, x, ...)`` through a cached ``tf.function``.

  Args:
    tensor_args: names of the arguments whose tensor values (also inside a
      dict/list/tuple) become inputs of the compiled function.
    seed_args: names of ``None``-or-integer seed arguments converted eagerly
      to int32 ``[2]`` seed tensors (`keras_opnorm.attacks._common.seed_tensor`).
      Defaults to `()`.
    eager_checks: optional ``callable(arguments)`` run eagerly before each
      compiled call, with the bound arguments by name (defaults applied).
      Defaults to `None`.
  """

  def decorate(func):
    signature = inspect.signature(func)
    f_name = list(signature.parameters)[0]

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
      if not tf.executing_eagerly() or tf.config.functions_run_eagerly():
        return func(*args, **kwargs)
      bound = signature.bind(*args, **kwargs)
      bound.apply_defaults()
      arguments = dict(bound.arguments)
      owner = _owner(arguments[f_name])
      if owner is None:
        return func(*args, **kwargs)
      owner_obj, rebuild = owner
      if seed_args:
        from keras_opnorm.attacks._common import seed_tensor  # pylint: disable=g-import-not-at-top
        for name in seed_args:
          arguments[name] = seed_tensor(arguments[name])
      tensor_names = [n for n in signature.parameters if n in tensor_args or n in seed_args]
      leaves, specs, statics = [], [], []
      try:
        for name, value in arguments.items():
          if name == f_name:
            continue
          if name in tensor_names:
            flat = tf.nest.flatten(value)
            if isinstance(value, list) and not any(_is_tensor_leaf(v) for v in flat):
              return func(*args, **kwargs)  # Python data: one trace per value otherwise.
            structure = tf.nest.map_structure(lambda _: None, value)
            tokens = []
            for leaf in flat:
              if _is_tensor_leaf(leaf):
                t = tf.convert_to_tensor(leaf)
                shape = [None] + t.shape.as_list()[1:] if t.shape.rank else []
                spec = tf.TensorSpec(shape, t.dtype)
                leaves.append(t)
                specs.append(spec)
                tokens.append(("tensor", spec))
              else:
                tokens.append(_static_token(leaf))
            statics.append((name, _static_token(_structure_token(structure)), tuple(tokens)))
          else:
            statics.append((name, _static_token(value)))
        key = (func, id(owner_obj), tuple(statics))
        hash(key)
      except TypeError:
        return func(*args, **kwargs)

      entry = _CACHE.get(key)
      if entry is None or entry.owner_ref() is not owner_obj:
        owner_id = id(owner_obj)
        entry = _Entry(func.__name__, weakref.ref(owner_obj, lambda _: _drop_owner(owner_id)))
        entry.function = _make_function(func, entry, rebuild, arguments, f_name,
                                        tensor_names, specs)
        _CACHE[key] = entry
        while len(_CACHE) > MAX_ENTRIES:
          _CACHE.popitem(last=False)
      else:
        _CACHE.move_to_end(key)
      if entry.eager_only:
        return func(*args, **kwargs)
      if eager_checks is not None:
        eager_checks(arguments)
      traces_before = entry.traces
      try:
        with warnings.catch_warnings(record=True) as caught:
          warnings.simplefilter("always")
          shapes = tuple(tuple(t.shape) for t in leaves)
          if entry.concrete is None:
            # The first trace is for the exact shapes: a graph of static
            # shapes (measured 20% faster than a free batch axis for
            # operator_norm on an MLP).
            entry.concrete = entry.function.get_concrete_function(
                *[tf.TensorSpec(t.shape, t.dtype) for t in leaves])
            entry.exact_shapes = shapes
          if shapes == entry.exact_shapes:
            concrete = entry.concrete
          else:
            if entry.relaxed is None:  # One more trace serves every other batch size.
              entry.relaxed = entry.function.get_concrete_function(*specs)
            concrete = entry.relaxed
          # A concrete function: half the dispatch cost of the tf.function.
          tensors = concrete(*leaves)
      except tf.errors.InvalidArgumentError:
        # A graph assertion on the values: the eager call raises its error.
        return func(*args, **kwargs)
      except Exception:  # pylint: disable=broad-except
        # Raised while tracing: the eager call raises the eager error.
        entry.eager_only = True
        return func(*args, **kwargs)
      if entry.traces > traces_before:
        entry.replayed = [(w.category, str(w.message)) for w in caught if _per_call(w)]
        for w in caught:
          if not _per_call(w):  # Once, as traced (a warn-once warning stays once).
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
      for category, message in entry.replayed:
        warnings.warn(message, category, stacklevel=2)
      structure, template = entry.output
      it = iter(tensors)
      return tf.nest.pack_sequence_as(
          structure, [next(it) if v is _TENSOR else v for v in template])

    wrapper.__wrapped_uncompiled__ = func
    return wrapper

  return decorate


def _structure_token(structure):
  """The nesting of an argument (dict keys, sequence lengths) as a hashable."""
  if isinstance(structure, dict):
    return tuple((k, _structure_token(v)) for k, v in sorted(structure.items(), key=repr))
  if isinstance(structure, (list, tuple)):
    return (type(structure).__name__, tuple(_structure_token(v) for v in structure))
  return None


def _per_call(w):
  """Warnings about the call's arguments, which an eager call emits every time."""
  from keras_opnorm import _checks  # pylint: disable=g-import-not-at-top
  return issubclass(w.category, _checks.VacuousThreatModelWarning)


def _make_function(func, entry, rebuild, arguments, f_name, tensor_names, specs):
  """The ``tf.function`` of one entry: tensors in, the static values baked in."""
  # The static arguments, held by value; tensors are replaced by the inputs.
  templates = {}
  for name, value in arguments.items():
    if name in tensor_names:
      templates[name] = tf.nest.map_structure(lambda v: _TENSOR if _is_tensor_leaf(v) else v, value)
  statics = {n: v for n, v in arguments.items() if n not in tensor_names and n != f_name}
  names = [n for n in arguments if n != f_name]  # Not `arguments`: it holds f.

  def traced(*inputs):
    entry.traces += 1
    owner = entry.owner_ref()
    if owner is None:
      raise RuntimeError("The model of this compiled call was deleted.")
    kwargs = dict(statics)
    it = iter(inputs)
    for name in tensor_names:
      kwargs[name] = tf.nest.map_structure(
          lambda v: next(it) if v is _TENSOR else v, templates[name])
    result = func(rebuild(owner), **{n: kwargs[n] for n in names})
    # Python values in the result (OperatorNormResult.exact) stay Python values.
    flat = tf.nest.flatten(result)
    entry.output = (result, [_TENSOR if tf.is_tensor(v) else v for v in flat])
    return [v for v in flat if tf.is_tensor(v)]

  del specs  # Given per concrete function.
  return tf.function(traced, autograph=False)


def vacuous_check(caller):
  """``eager_checks`` warning when a tensor ``epsilon`` / ``clip`` is vacuous.

  With Python numbers the trace itself warns (and the warning is replayed);
  tensors are symbolic in the trace, so their values are checked here.
  """

  def check(arguments):
    from keras_opnorm import _checks  # pylint: disable=g-import-not-at-top
    from keras_opnorm.attacks import _common  # pylint: disable=g-import-not-at-top
    epsilon, clip, x = arguments["epsilon"], arguments.get("clip"), arguments.get("x")
    if clip is None or not hasattr(x, "shape"):
      return
    if not any(_is_tensor_leaf(v) for v in tf.nest.flatten((epsilon, clip))):
      return
    try:
      p = _checks.exponent(arguments["p"], "p")
      clip = _common._clip_range(clip)  # pylint: disable=protected-access
    except (TypeError, ValueError):
      return  # The call itself raises.
    _common.warn_if_vacuous(epsilon, p, clip, x.shape[1:], caller, stacklevel=4)

  return check
