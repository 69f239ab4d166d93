"""`LogitsView`: a model as the library sees it, ``float inputs -> logits``.

Everything in keras_opnorm is written for one map ``f: R^n -> R^d`` from a
batch of float vectors to a batch of logits: the lp balls of the attacks, the
power method on ``J_f(x)``, the objectives. Real models are wider than that:

* **Probability outputs.** A softmax (or sigmoid) last layer maps logits to
  probabilities; ``J_softmax`` shrinks the Jacobian (operator norms on a
  trained softmax net were measured 8x smaller than on its logits) and
  saturates the gradients the attacks follow. Sequential and functional models
  are inspected (`check_logits_output`): a probability activation on the
  layer that produces the (selected) output is a ``ValueError`` unless the
  user declares it with ``from_logits=False`` (Keras' own word, as in
  ``keras.losses.SparseCategoricalCrossentropy(from_logits=...)``). Declared
  probabilities ``p`` are used as the logits ``log(max(p, tiny))``:
  ``softmax(log p) = p``, so cross-entropy, margins (differences of log
  probabilities), ``argmax`` and the adversarial examples' predictions are
  unchanged; a single sigmoid column ``p`` becomes the two logits
  ``(log(1 - p), log p)``. Gradients are those of ``log p``: they vanish where
  ``p`` saturates in floating point (``p`` rounds to 1 or underflows to 0), so
  attacks on a probability model are weaker than on its logits and operator
  norms are those of ``J_{log softmax o z}``, not of ``J_z``; prefer removing
  the activation. Subclassed models have no graph to inspect: the output of
  the first call is looked at once per model (a ``Softmax``/``Sigmoid`` op
  producing it inside a ``tf.function``, or, eagerly, rows in [0, 1] that sum
  to 1) and a warning is issued; nothing is raised.
* **Several outputs.** ``output`` names (a dict key or an output name of a
  functional model) or indexes the logits output; the labels ``y`` of a
  multi-output ``fit`` are picked the same way. The other outputs are
  ignored by the attacks and objectives (their compiled losses still train).
* **Several inputs.** ``x`` is a dict (or list/tuple) matching the model's
  inputs. The perturbed inputs (``inputs``: names or indices; by default all
  floating-point ones; integer, boolean and string inputs such as token ids,
  masks and categorical features are always held fixed) are flattened and
  concatenated, per example, into one ``[batch, n]`` float tensor ``z``, on
  which the attacks and power methods run unchanged; the fixed inputs are
  bound for the batch. Hence **the lp ball is joint**: ``||delta||_p`` is the
  norm of the concatenation of every perturbed input's perturbation (scale
  the inputs to comparable ranges, or perturb one input), and a ``clip``
  range applies to every perturbed input alike. Results shaped like
  ``x`` (adversarial examples) are unpacked into the user's structure with
  the fixed inputs passed through unchanged; directions (power-method
  vectors, singular vectors) contain the perturbed inputs only (``None`` at a
  fixed position of a list, no key in a dict).
* **Evaluation over a data set.** The functions that walk ``x`` in batches
  (`auto_attack`, `robust_accuracy`, `robust_radii`,
  `gradient_masking_checks`, the spectrum and alignment functions) take
  structured arrays or a ``tf.data.Dataset`` of ``(structured x, y)``: every
  batch carries its packed ``z`` and its fixed inputs, and each compiled
  kernel binds that batch's fixed inputs (`LogitsView.bind_fixed`), traced
  once for all batches. ``clip`` and the verification ``||x_adv - x||_p <=
  eps`` apply to ``z`` (the joint ball); ``auto_attack``'s ``x_adv`` comes
  back in the structure of ``x``. `square_attack` perturbs one input (its
  windows need one image): it runs on that input in its own shape.

Every public function that takes a model accepts a `LogitsView` in its place;
the objectives (and so the callbacks, `RobustModel` and the layer) take the
same three settings as keyword arguments, which their ``get_config`` keeps.

Example:

```python
view = keras_opnorm.LogitsView(model, output="logits", inputs=["image"])
x_adv = keras_opnorm.pgd_attack(view, {"image": images, "ids": ids}, y, epsilon=0.1)
norms = keras_opnorm.operator_norm(view, {"image": images, "ids": ids}).norm
model.fit(x, {"logits": y, "aux": aux}, callbacks=[
    keras_opnorm.callbacks.AdversarialTraining(0.1, output="logits")])
```
"""

import copy
import functools
import inspect
import numbers
import warnings
import weakref

import keras
import numpy as np
import tensorflow as tf

from keras_opnorm import _checks

__all__ = ["LogitsView", "check_logits_output", "accepts_views", "is_structured"]

_PROBABILITY_ACTIVATIONS = ("softmax", "sigmoid")
_PASS_THROUGH_OPS = ("Identity", "IdentityN", "Cast")
_warned = weakref.WeakSet()  # Subclassed models already looked at.
# Plain Python on structures (no tensor control flow): AutoGraph need not
# convert it when a tf.function traces an objective or an attack.
_plain_python = tf.autograph.experimental.do_not_convert


# -- arguments ---------------------------------------------------------------


def _check_key(value, name):
  if value is None or isinstance(value, str):
    return value
  if isinstance(value, (numbers.Integral, np.integer)) and not isinstance(value, (bool, np.bool_)):
    if value < 0:
      raise ValueError(f"`{name}` must be a name or an index >= 0. Received: {name}={value}")
    return int(value)
  raise TypeError(f"`{name}` must be None, a name (str) or an index (int). "
                  f"Received: {name}={value!r}")


@_plain_python
def check_settings(output=None, inputs=None, from_logits=True):
  """Checks the three `LogitsView` settings; returns them normalised.

  Returns:
    ``(output, inputs, from_logits)`` with ``inputs`` a tuple or None.
  """
  output = _check_key(output, "output")
  if inputs is not None:
    items = [inputs] if isinstance(inputs, (str, numbers.Integral, np.integer)) else inputs
    if not isinstance(items, (list, tuple)) or not items:
      raise ValueError(f"`inputs` must be None, a name, an index or a non-empty list of "
                       f"them. Received: inputs={inputs!r}")
    inputs = tuple(_check_key(i, "inputs") for i in items)
  if not isinstance(from_logits, (bool, np.bool_)):
    raise TypeError(f"`from_logits` must be True or False. Received: from_logits={from_logits!r}")
  return output, inputs, bool(from_logits)


@_plain_python
def is_structured(x):
  """True for a dict, or a list/tuple of tensors or arrays (several inputs)."""
  if isinstance(x, dict):
    return True
  return isinstance(x, (list, tuple)) and bool(x) and (
      tf.is_tensor(x[0]) or isinstance(x[0], np.ndarray) or keras.ops.is_tensor(x[0]))


def _model_name(model):
  return getattr(model, "name", None) or getattr(model, "__name__", None) or repr(model)


# -- probability detection ---------------------------------------------------


def _probability_activation(layer):
  """Name of the probability activation applied by ``layer``, else None."""
  if isinstance(layer, keras.layers.Softmax):
    return "softmax"
  name = getattr(getattr(layer, "activation", None), "__name__", None)
  return name if name in _PROBABILITY_ACTIVATIONS else None


def _output_names(model):
  try:
    names = model.output_names
  except (AttributeError, ValueError):
    return None
  return list(names) if names else None


def _symbolic_outputs(model):
  """The symbolic outputs of a functional model (structure kept), or None."""
  struct = getattr(model, "_outputs_struct", None)
  if struct is not None:
    return struct
  try:
    return model.outputs
  except (AttributeError, ValueError):
    return None


@_plain_python
def _pick(struct, key, names, what, model):
  """The entry ``key`` (name or index; None: the only one) of an output structure."""
  if not isinstance(struct, (dict, list, tuple)):
    if key is None or key == 0 or (names and len(names) == 1 and key == names[0]):
      return struct
    raise ValueError(f"`output` names an output of a model with a single output. "
                     f"Received: output={key!r} for model={_model_name(model)!r}")
  if isinstance(struct, dict):
    available = list(struct)
  else:
    available = list(names) if names and len(names) == len(struct) else list(range(len(struct)))
  if key is None:
    if len(struct) == 1:
      return next(iter(struct.values())) if isinstance(struct, dict) else struct[0]
    raise ValueError(
        f"The model returns {len(struct)} outputs {available}: name the logits output "
        f"with `output=` (`keras_opnorm.LogitsView(model, output=...)`, or the "
        f"objective's `output=` argument). Received: output=None for {what} of "
        f"model={_model_name(model)!r}")
  if isinstance(struct, dict):
    if isinstance(key, int) and names and key < len(names) and names[key] in struct:
      key = names[key]
    if key not in struct:
      raise ValueError(f"`output` must be one of {available}. Received: output={key!r} "
                       f"for {what} of model={_model_name(model)!r}")
    return struct[key]
  if isinstance(key, str):
    if not names or key not in names or len(names) != len(struct):
      raise ValueError(f"`output` must be one of {available}. Received: output={key!r} "
                       f"for {what} of model={_model_name(model)!r}")
    key = names.index(key)
  if key >= len(struct):
    raise ValueError(f"`output` must be an index < {len(struct)} (one of {available}). "
                     f"Received: output={key!r} for {what} of model={_model_name(model)!r}")
  return struct[key]


@_plain_python
def _output_layer(model, output):
  """``(layer, output index in it)`` producing the selected output, or None."""
  if isinstance(model, keras.Sequential):
    layers = [l for l in model.layers if not isinstance(l, keras.layers.InputLayer)]
    return (layers[-1], None) if layers else None
  if not isinstance(model, keras.Model):
    return (model, None) if isinstance(model, keras.layers.Layer) else None
  outputs = _symbolic_outputs(model)
  if outputs is None or (isinstance(outputs, (list, tuple, dict)) and not outputs):
    return None  # Subclassed: no graph.
  tensor = _pick(outputs, output, _output_names(model), "the outputs", model)
  history = getattr(tensor, "_keras_history", None)
  if history is None or not isinstance(history[0], keras.layers.Layer):
    return None
  return history[0], history[2]


def is_inspectable(model):
  """True for Sequential and functional models and plain layers (a graph to read)."""
  if isinstance(model, keras.Sequential):
    return True
  if isinstance(model, keras.Model):
    outputs = _symbolic_outputs(model)
    return outputs is not None and not (isinstance(outputs, (list, tuple, dict)) and not outputs)
  return isinstance(model, keras.layers.Layer)


@_plain_python
def check_logits_output(model, output=None):
  """Raises if a model visibly outputs probabilities instead of logits.

  The library differentiates and compares logits (the network ``f`` of the
  papers stops before the softmax). The layer producing the (selected) output
  of a Sequential or functional model (recursively, into a nested model) is
  inspected: a Dense/Conv layer with a ``softmax`` or ``sigmoid`` activation,
  an ``Activation('softmax' | 'sigmoid')`` or a ``Softmax`` layer is rejected.
  Subclassed models cannot be inspected and pass (see the module docstring
  for their run-time check).

  Args:
    model: a Keras model or layer (other callables pass).
    output: the selected output (name or index) of a multi-output model.
      Defaults to `None`.

  Raises:
    ValueError: naming the model, the layer and its activation; or for a
      multi-output model without ``output``.
  """
  if not isinstance(model, keras.layers.Layer):
    return
  found = _output_layer(model, output)
  if found is None:
    return
  layer, index = found
  if isinstance(layer, keras.Model) and layer is not model:
    check_logits_output(layer, index if _output_names(layer) and len(_output_names(layer)) > 1 else None)
    return
  activation = _probability_activation(layer)
  if activation is not None:
    raise ValueError(
        f"The model outputs probabilities ({activation} activation on layer "
        f"'{layer.name}'); keras_opnorm needs logits: remove the activation "
        f"(and use from_logits=True in the compiled loss), or declare the "
        f"output with `keras_opnorm.LogitsView(model, from_logits=False)` (or "
        f"the objective's `from_logits=False`). Received: "
        f"model={_model_name(model)!r}")


def _looks_like_probabilities(out):
  """Run-time check of an output: True/False, or None when it cannot tell."""
  t = out
  if not tf.executing_eagerly() and hasattr(t, "op"):
    try:
      while t.op.type in _PASS_THROUGH_OPS:
        t = t.op.inputs[0]
      return t.op.type in ("Softmax", "Sigmoid")
    except (AttributeError, IndexError):
      return None
  if tf.executing_eagerly() and hasattr(t, "numpy"):
    v = np.asarray(t.numpy(), dtype=np.float64)
    if v.size == 0 or v.ndim != 2 or v.shape[-1] < 2:
      return None
    return bool(np.all(v >= 0) and np.all(v <= 1) and np.allclose(v.sum(-1), 1.0, atol=1e-3))
  return None


# -- the view ----------------------------------------------------------------


@keras.saving.register_keras_serializable(package="keras_opnorm")
class LogitsView:
  """A model seen as ``(perturbed float inputs) -> logits of one output``.

  Pass it wherever keras_opnorm takes a model (`operator_norm`,
  `singular_values`, the attacks, the evaluation functions, `RobustModel`):
  see the module docstring for the why and the exact semantics.

  Args:
    model: a Keras model (or a callable ``x -> outputs``).
    output: the logits output of a multi-output model: a dict key / output
      name, or an index. Defaults to `None` (the model's only output).
    inputs: the inputs to perturb, for a model with dict or list inputs: a
      name / index or a list of them. Defaults to `None` (every
      floating-point input); non-float inputs are always held fixed.
    from_logits: whether the selected output is logits (True) or
      probabilities (False: softmax rows, or one sigmoid column), which are
      then used as the logits ``log(max(p, tiny))``. Defaults to `True`.

  Raises:
    TypeError: for a non-callable model or a setting of the wrong type.
    ValueError: for a Sequential/functional model whose selected output
      visibly applies a softmax/sigmoid while ``from_logits=True``, an
      unknown ``output``, or ``output=None`` on a model with several outputs.

  Example:

  ```python
  view = keras_opnorm.LogitsView(probability_model, from_logits=False)
  keras_opnorm.operator_norm(view, x).norm      # of log p, see above
  ```
  """

  def __init__(self, model, *, output=None, inputs=None, from_logits=True):
    if isinstance(model, (LogitsView, _PackedModel)):
      raise TypeError(f"`model` must be a model, not a LogitsView. Received: model={model!r}")
    if not callable(model):
      raise TypeError(f"`model` must be a Keras model or a callable. Received: model={model!r}")
    self.model = model
    self.output, self.inputs, self.from_logits = check_settings(output, inputs, from_logits)
    if isinstance(model, keras.layers.Layer):
      if self.from_logits:
        check_logits_output(model, self.output)
      elif is_inspectable(model):
        _output_layer(model, self.output)  # An unknown `output` fails now.

  @property
  def name(self):
    """The model's name (error messages)."""
    return _model_name(self.model)

  @property
  def wrapped(self):
    return self.model

  def get_config(self):
    """The settings (the model is not part of the config)."""
    return {"output": self.output,
            "inputs": None if self.inputs is None else list(self.inputs),
            "from_logits": self.from_logits}

  def __repr__(self):
    args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
    return f"LogitsView({self.name!r}, {args})"

  # -- outputs ---------------------------------------------------------------

  @_plain_python
  def select(self, outputs, what="f(x)"):
    """The selected entry of a model output (or of the labels) structure."""
    return _pick(outputs, self.output, _output_names(self.model), what, self.model)

  @_plain_python
  def labels(self, y):
    """The labels of the selected output (``y`` itself when it is not structured)."""
    if y is None or not isinstance(y, (dict, list, tuple)):
      return y
    if isinstance(y, (list, tuple)) and y and not is_structured(y):
      return y  # A Python list of labels.
    return self.select(y, "y")

  @_plain_python
  def logits(self, outputs):
    """Checked ``[batch, d]`` logits from a raw model output."""
    out = self.select(outputs)
    if self.from_logits and isinstance(self.model, keras.layers.Layer) and not is_inspectable(
        self.model) and self.model not in _warned:
      verdict = _looks_like_probabilities(out)
      if verdict is not None:
        _warned.add(self.model)
      if verdict:
        warnings.warn(
            f"The output of model {self.name!r} looks like probabilities (a "
            "softmax/sigmoid, or rows in [0, 1] summing to 1); keras_opnorm needs "
            "logits. Remove the activation or declare from_logits=False.", stacklevel=3)
    out = _checks.logits(out, None)
    if self.from_logits:
      return out
    tiny = np.finfo(out.dtype.as_numpy_dtype).tiny
    if out.shape[-1] == 1:
      out = tf.concat([1.0 - out, out], axis=-1)
    return tf.math.log(tf.clip_by_value(out, tiny, 1.0))

  def __call__(self, x, training=False):
    """Logits of the selected output at ``x`` (the user's input structure)."""
    if isinstance(self.model, keras.layers.Layer) and getattr(self.model, "_call_has_training_arg", True):
      out = self.model(x, training=training)
    else:
      out = self.model(x)
    return self.logits(out)

  # -- inputs ----------------------------------------------------------------

  def bind(self, x, name="x"):
    """``(fn, z, packing)`` for a structured ``x``: ``fn(z)`` are the logits."""
    packing = Packing(x, self.inputs, name=name)
    return _PackedModel(self, packing), packing.z, packing

  def bind_fixed(self, packing, fixed):
    """``z -> logits`` with the fixed inputs ``fixed`` of one batch bound.

    For the functions that walk ``x`` batch by batch: ``packing`` describes
    the structure (from any batch of the data), ``fixed`` maps each fixed key
    of ``packing`` to that batch's ``[batch, ...]`` values (tensors inside a
    compiled kernel).
    """
    return _PackedModel(self, packing.with_fixed(fixed))


def as_view(f, **settings):
  """``f`` as a `LogitsView` (``f`` itself, or its view when already bound)."""
  if isinstance(f, LogitsView):
    return f
  if isinstance(f, _PackedModel):
    return f.view
  return LogitsView(f, **settings)


def is_view(f):
  """True for a `LogitsView` (or one bound to a batch's fixed inputs)."""
  return isinstance(f, (LogitsView, _PackedModel))


def underlying_model(f):
  """The user's model behind a `LogitsView` or a bound view; else ``f``."""
  if isinstance(f, _PackedModel):
    return f.view.model
  if isinstance(f, LogitsView):
    return f.model
  return f


class Packing:
  """Packs the perturbed inputs of a structured batch into ``z [batch, n]``.

  Args:
    x: a dict or list/tuple of ``[batch, ...]`` tensors or arrays.
    inputs: the keys / indices to perturb, or None (every float input).
    name: the argument name used in errors. Defaults to `"x"`.
  """

  @_plain_python
  def __init__(self, x, inputs=None, name="x"):
    self.structure = x
    self.is_dict = isinstance(x, dict)
    keys = list(x) if self.is_dict else list(range(len(x)))
    values = {k: x[k] for k in keys}
    if inputs is None:
      perturbed = [k for k in keys if _is_float(values[k])]
      if not perturbed:
        raise TypeError(f"`{name}` has no floating-point input to perturb. Received: {name} "
                        f"with dtypes {[_dtype_name(values[k]) for k in keys]}")
    else:
      perturbed = []
      for k in inputs:
        if self.is_dict and isinstance(k, int) and k < len(keys):
          k = keys[k]
        if k not in values:
          raise ValueError(f"`inputs` must name inputs of `{name}` (one of {keys}). "
                           f"Received: inputs={list(inputs)!r}")
        if not _is_float(values[k]):
          raise TypeError(f"`inputs` must name floating-point inputs; {k!r} has dtype "
                          f"{_dtype_name(values[k])} (it is held fixed). Received: "
                          f"inputs={list(inputs)!r}")
        perturbed.append(k)
    self.keys = keys
    self.perturbed = perturbed
    self.fixed = {k: values[k] for k in keys if k not in perturbed}
    tensors = {}
    for k in perturbed:
      t = tf.convert_to_tensor(values[k])
      if t.shape.rank is not None and t.shape.rank < 1:
        raise ValueError(f"`{name}[{k!r}]` must have a batch axis. Received: shape={t.shape}")
      if not t.shape[1:].is_fully_defined():
        raise ValueError(f"`{name}[{k!r}]` must have a static shape after the batch axis to "
                         f"be packed. Received: shape={t.shape}")
      tensors[k] = t
    self.dtypes = {k: tensors[k].dtype for k in perturbed}
    self.shapes = {k: tensors[k].shape[1:].as_list() for k in perturbed}
    self.sizes = [int(np.prod(self.shapes[k], dtype=np.int64)) for k in perturbed]
    all64 = all(d == tf.float64 for d in self.dtypes.values())
    self.dtype = tf.float64 if all64 else tf.float32
    self.z = self.pack({k: tensors[k] for k in perturbed})

  @_plain_python
  def pack(self, struct, extra_axes=0, name="x"):
    """Flattens and concatenates the perturbed entries of ``struct`` (shaped like x)."""
    parts = []
    for k in self.perturbed:
      try:
        t = struct[k]
      except (KeyError, IndexError, TypeError):
        raise ValueError(f"`{name}` must have the structure of `x` with the entry {k!r}. "
                         f"Received: {name} of type {type(struct).__name__}") from None
      t = tf.cast(tf.convert_to_tensor(t), self.dtype)
      lead = [tf.shape(t)[i] for i in range(1 + extra_axes)]
      parts.append(tf.reshape(t, tf.stack(lead + [-1])))
    return parts[0] if len(parts) == 1 else tf.concat(parts, axis=-1)

  @_plain_python
  def _split(self, z, extra_axes):
    z = tf.convert_to_tensor(z)
    lead = [tf.shape(z)[i] for i in range(1 + extra_axes)]
    pieces = tf.split(z, self.sizes, axis=-1) if len(self.sizes) > 1 else [z]
    out = {}
    for k, piece in zip(self.perturbed, pieces):
      piece = tf.reshape(piece, tf.stack(lead + self.shapes[k]))
      out[k] = tf.cast(piece, self.dtypes[k]) if self.dtypes[k].is_floating else piece
    return out

  @_plain_python
  def _assemble(self, entries, fill):
    if self.is_dict:
      return {k: entries[k] if k in entries else fill(k) for k in self.keys
              if k in entries or fill(k) is not None}
    items = [entries[k] if k in entries else fill(k) for k in self.keys]
    return tuple(items) if isinstance(self.structure, tuple) else items

  @_plain_python
  def with_fixed(self, fixed):
    """A copy of this packing whose fixed inputs are ``fixed`` (key -> values)."""
    missing = [k for k in self.fixed if k not in fixed]
    if missing:
      raise ValueError(f"`fixed` must hold the fixed inputs {list(self.fixed)}. Received: "
                       f"no entry for {missing}")
    other = copy.copy(self)
    other.fixed = {k: fixed[k] for k in self.fixed}
    return other

  @_plain_python
  def unpack_numpy(self, z, fixed):
    """``x``'s structure of numpy arrays from ``z [n, n_in]`` and the fixed inputs."""
    entries = {k: np.asarray(v) for k, v in self._split(z, 0).items()}
    return self._assemble(entries, lambda k: np.asarray(fixed[k]))

  @_plain_python
  def unpack(self, z):
    """``x``'s structure from ``z`` (fixed inputs passed through unchanged)."""
    return self._assemble(self._split(z, 0), lambda k: self.fixed[k])

  @_plain_python
  def unpack_directions(self, z, extra_axes=0):
    """Directions shaped like the perturbed inputs (fixed: None / no key)."""
    return self._assemble(self._split(z, extra_axes), lambda k: None)

  @_plain_python
  def model_input(self, z):
    """The model's input for a packed batch ``z`` (the fixed inputs tiled when
    ``z`` stacks copies of the batch, as the exact Jacobian and restarts do)."""
    entries = self._split(z, 0)
    batch_z = tf.shape(z)[0]

    def fill(k):
      t = tf.convert_to_tensor(self.fixed[k])
      reps = batch_z // tf.shape(t)[0]
      return tf.tile(t, [reps] + [1] * (t.shape.rank - 1))

    return self._assemble(entries, fill)


def _is_float(value):
  return tf.as_dtype(getattr(value, "dtype", None) or np.asarray(value).dtype).is_floating


def _dtype_name(value):
  return tf.as_dtype(getattr(value, "dtype", None) or np.asarray(value).dtype).name


class _PackedModel:
  """``z -> logits``: a view with the fixed inputs of one batch bound."""

  def __init__(self, view, packing):
    self.view = view
    self.packing = packing

  @property
  def name(self):
    return self.view.name

  @property
  def wrapped(self):
    return self.view.model

  def __call__(self, z, training=False):
    return self.view(self.packing.model_input(z), training=training)


# -- the entry of the public functions ---------------------------------------


def _unpack_result(result, packing, kind):
  if kind == "x":
    return packing.unpack(result)
  if kind == "v":  # OperatorNormResult
    return result._replace(v=packing.unpack_directions(result.v))
  if kind == "vectors":  # SingularValuesResult
    return result._replace(vectors=packing.unpack_directions(result.vectors, extra_axes=1))
  return result


def accepts_views(*, returns=None, like_x=(), supported=True, batches_itself=False):
  """Decorates a public ``func(f, x, ...)`` to accept dict/list ``x`` (see module).

  Single-tensor ``x`` calls ``func`` unchanged (a `LogitsView` ``f`` is handled
  by `keras_opnorm.jacobian.as_logits_fn`). A structured ``x`` is packed into
  ``z``, ``f`` bound to its fixed inputs, the keyword arguments ``like_x``
  (shaped like ``x``) packed alike, and the result unpacked per ``returns``:
  ``'x'`` (shaped like ``x``), ``'v'`` (an `OperatorNormResult`),
  ``'vectors'`` (a `SingularValuesResult`) or None (unchanged).

  Args:
    returns: how to unpack the result. Defaults to `None`.
    like_x: names of arguments shaped like ``x`` (for ``returns='vectors'``
      shaped ``[batch, j, ...]``). Defaults to `()`.
    supported: False for functions that do not support a structured ``x``:
      it then raises a ``NotImplementedError`` naming ``x``. Defaults to `True`.
    batches_itself: True for functions that batch ``x`` themselves and bind
      each batch's fixed inputs (`LogitsView.bind_fixed`): a structured ``x``
      is passed to ``func`` unchanged. Defaults to `False`.
  """

  def decorate(func):
    signature = inspect.signature(func)
    f_name, x_name = list(signature.parameters)[:2]

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
      bound = signature.bind(*args, **kwargs)
      x = bound.arguments.get(x_name)
      if batches_itself or not is_structured(x):
        return func(*args, **kwargs)
      if not supported:
        raise NotImplementedError(
            f"`{func.__name__}` does not support models with several inputs yet: "
            f"`{x_name}` must be a single tensor. Dict/list inputs are supported by "
            f"the attacks (pgd, apgd, apgd_targeted, fab, fmn, square with one "
            f"perturbed input), operator_norm, singular_values, the evaluation "
            f"functions (auto_attack, robust_accuracy, robust_radii, "
            f"gradient_masking_checks, mean_operator_norm, spectrum, alignment, "
            f"alignment_vs_epsilon, margin_alignment) and the objectives (fit). "
            f"Received: {x_name} of type {type(x).__name__}")
      view = as_view(bound.arguments[f_name])
      fn, z, packing = view.bind(x, name=x_name)
      bound.arguments[f_name] = fn
      bound.arguments[x_name] = z
      for name in like_x:
        if bound.arguments.get(name) is not None:
          extra = 1 if returns == "vectors" else 0
          bound.arguments[name] = packing.pack(bound.arguments[name], extra_axes=extra, name=name)
      return _unpack_result(func(*bound.args, **bound.kwargs), packing, returns)

    return wrapper

  return decorate


def as_logits_callable(f, training):
  """``x -> logits`` for a view or a Keras model/layer; None for other callables."""
  if isinstance(f, (LogitsView, _PackedModel)):
    return lambda x: f(x, training=training)
  if isinstance(f, keras.layers.Layer):
    view = LogitsView(f)
    return lambda x: view(x, training=training)
  return None
