"""One regularised Keras 3 train step built from ``(model, objectives)``.

This is the single mechanism behind the three ways of attaching an objective
(`keras_opnorm.objectives`) to training:

* the callbacks (`keras_opnorm.callbacks`) install it on the user's compiled
  model for one ``fit`` with `install` / `uninstall`;
* `keras_opnorm.RobustModel` calls it from its ``train_step``;
* the layer `keras_opnorm.layers.OperatorNormRegularizer` reuses the same
  objective through ``add_loss`` (no custom step needed).

The step mirrors Keras 3's own ``TensorFlowTrainer.train_step`` (Keras 3.15,
``keras/src/backend/tensorflow/trainer.py``), top to bottom::

  x, y, sample_weight = unpack(data)
  with tape:
    y_pred = model(x, training=True)                       # one clean pass
    loss   = c * model.compute_loss(x, y, y_pred, sample_weight)
           + sum_k scale_for_distribution(term_k)          # term_k, metrics_k =
                                                           #   objective_k(model, x, y, y_pred, sw)
    loss_tracker.update(unscale_for_distribution(loss))
    loss   = optimizer.scale_loss(loss)                     # mixed precision
  optimizer.apply_gradients(tape.gradient(loss, trainable_weights))
  logs = model.compute_metrics(x, y, y_pred, sample_weight) + objective metrics

``c`` is the product of the objectives' ``clean_loss_weight`` (1, or 0 when an
adversarial cross-entropy replaces the clean loss, Madry et al. 2018).
Objective terms are averaged over the local (per-replica) batch like Keras
losses and divided by ``num_replicas_in_sync`` here, exactly as Keras divides
its own losses (``scale_loss_for_distribution`` in Keras'
``keras/src/losses/loss.py``; reimplemented here with public API), so
that the summed gradients across replicas are those of the global-batch mean.
The clean prediction ``y_pred`` is computed once and handed to every
objective (no redundant forward pass).

Each objective metric (for example the adversarial loss or the operator-norm
estimate) gets a ``keras.metrics.Mean`` tracker so that the progress bar,
``History`` and ``TensorBoard`` show its running mean over the epoch. The
trackers live on the `TrainStep`, never on the user's model: they are not in
``model.metrics``, ``model.save`` or ``model.export``.

Distribution: under ``MirroredStrategy`` the step gives the single-device
update on the same global batch (tested with two logical CPUs). Keras 3's own
``fit`` does not run under ``MultiWorkerMirroredStrategy`` for any model
(keras-team/keras#20585: its symbolic build and its log reduction fail on
per-replica values); the step itself does, in a custom loop::

  step = make_train_step(model, objectives)

  @tf.function
  def train(batch):
    return strategy.run(step, args=(batch,))

(tested with two worker processes: same update as one device).
"""

import math
import warnings
import weakref

import inspect

import keras
import tensorflow as tf

__all__ = [
    "TrainStep",
    "make_train_step",
    "install",
    "uninstall",
    "installed_objectives",
    "installed_step",
]


def _check_objectives(objectives):
  """Returns ``objectives`` as a non-empty list of objective-like callables."""
  if objectives is None:
    raise ValueError("`objectives` must be an objective or a non-empty list of "
                     "objectives. Received: objectives=None")
  if not isinstance(objectives, (list, tuple)):
    objectives = [objectives]
  objectives = list(objectives)
  if not objectives:
    raise ValueError("`objectives` must be an objective or a non-empty list of "
                     "objectives. Received: objectives=[]")
  for obj in objectives:
    if not callable(obj) or not hasattr(obj, "build"):
      raise TypeError(
          "Each objective must be a `keras_opnorm.objectives.Objective` (a "
          "callable with `build(model)` and `__call__(model, x, y, y_pred, "
          f"sample_weight)`). Received: objective={obj!r}")
  return objectives


def _check_compiled(model, what):
  if not isinstance(model, keras.Model):
    raise TypeError(f"{what} needs a `keras.Model`. Received: model={model!r} "
                    f"of type {type(model).__name__}")
  if not getattr(model, "compiled", False) or getattr(model, "optimizer", None) is None:
    raise ValueError(
        f"{what} needs a compiled model: call `model.compile(optimizer=..., "
        f"loss=...)` before `fit`. Received: model={model.name!r} (not compiled)")


def _clean_loss_weight(objectives):
  c = 1.0
  for obj in objectives:
    w = float(getattr(obj, "clean_loss_weight", 1.0))
    if math.isnan(w) or w < 0:
      raise ValueError(f"`clean_loss_weight` must be >= 0. Received: "
                       f"clean_loss_weight={w} from {obj!r}")
    c *= w
  return c


def _num_replicas():
  """``num_replicas_in_sync`` of the current tf.distribute strategy (1 without)."""
  return tf.distribute.get_strategy().num_replicas_in_sync


def _scale_for_distribution(value):
  """``value / num_replicas_in_sync``: a per-replica loss term for the global mean.

  Keras' own ``scale_loss_for_distribution`` (``keras/src/losses/loss.py``,
  Keras 3.15), written with public API: under a tf.distribute strategy each
  replica's loss is divided by the number of replicas, so that the gradients
  summed across replicas are those of the global-batch mean; a no-op on one
  replica.

  Args:
    value: a float tensor.

  Returns:
    ``value * (1 / num_replicas)``, in ``value``'s dtype.
  """
  num_replicas = _num_replicas()
  if num_replicas > 1:
    value = value * tf.cast(1.0 / num_replicas, value.dtype)
  return value


def _unscale_for_distribution(value):
  """``value * num_replicas_in_sync``: undoes `_scale_for_distribution`.

  Keras' ``unscale_loss_for_distribution`` (``keras/src/losses/loss.py``)
  with public API; the loss tracker records the unscaled per-replica loss.

  Args:
    value: a float tensor.

  Returns:
    ``value * num_replicas``, in ``value``'s dtype.
  """
  num_replicas = _num_replicas()
  if num_replicas > 1:
    value = value * tf.cast(num_replicas, value.dtype)
  return value


def _uses_default_compute_loss(model):
  # `keras.Model.compute_loss` is Keras' `Trainer.compute_loss` (inherited).
  return getattr(type(model).compute_loss, "__code__", None) is (
      keras.Model.compute_loss.__code__)


def _compute_loss_has_training_arg(model):
  """Whether ``model.compute_loss`` takes ``training`` (Keras >= 3.3)."""
  try:
    return "training" in inspect.signature(model.compute_loss).parameters
  except (TypeError, ValueError):
    return False


def _batch_size(x):
  # As Keras: the first dimension of the first non-None input.
  return tf.shape(next(i for i in tf.nest.flatten(x) if i is not None))[0]


class TrainStep:
  """The regularised train step of ``model`` with ``objectives``; see module doc.

  A `TrainStep` is a callable ``data -> logs`` used as ``model.train_step``
  (it runs inside Keras' ``tf.function``, per replica under ``tf.distribute``,
  and under XLA when the model is compiled with ``jit_compile=True``).

  Args:
    model: a compiled ``keras.Model``: its loss, optimizer and metrics are used.
    objectives: an objective or a list of objectives
      (`keras_opnorm.objectives.Objective`).
    forward: the network whose Jacobian the objectives regularise (it receives
      the objectives' calls). Defaults to `model` (`RobustModel` passes its
      inner model).

  Raises:
    ValueError: for an uncompiled model or an empty list of objectives, or a
      ``clean_loss_weight != 1`` with a model that overrides ``compute_loss``.
    TypeError: for a non-model or an object that is not an objective.
  """

  def __init__(self, model, objectives, *, forward=None):
    _check_compiled(model, "A keras_opnorm objective")
    self.model = model
    self.forward = model if forward is None else forward
    self.objectives = _check_objectives(objectives)
    self.clean_loss_weight = _clean_loss_weight(self.objectives)
    if self.clean_loss_weight != 1.0 and not _uses_default_compute_loss(model):
      raise ValueError(
          "An objective with `clean_loss_weight` != 1 (an adversarial loss "
          "that replaces the clean loss) needs the default "
          "`Model.compute_loss`; this model overrides it. Use "
          "`replace_clean_loss=False` or keep the default `compute_loss`. "
          f"Received: model={model.name!r} of type {type(model).__name__}")
    # Objective-metric trackers, created on first use (see `_make_trackers`).
    self._trackers = {}

  def build(self):
    """Builds every objective on the forward network (creates their state).

    Objectives that declare their metric names (a ``metric_names`` sequence,
    known after ``build``) get their trackers now; the others' trackers are
    made while the step is first traced, which costs TensorFlow one extra
    trace of the step (variables created on a first call).

    Returns:
      The step itself.
    """
    with self.model.distribute_strategy.scope():
      for obj in self.objectives:
        obj.build(self.forward)
    keys = []
    for obj in self.objectives:
      names = getattr(obj, "metric_names", None)
      if names is not None:
        keys.extend((id(obj), name) for name in names
                    if (id(obj), name) not in self._trackers)
    if keys:
      try:
        reserved = set(self.model.get_metrics_result())
      except Exception:  # pylint: disable=broad-except
        reserved = set()
      self._make_trackers(keys, reserved | {"loss"})
    return self

  @property
  def metrics(self):
    """The objective-metric trackers (``keras.metrics.Mean``) created so far."""
    return list(self._trackers.values())

  def reset_metrics(self):
    """Resets the objective-metric trackers (call at each epoch start)."""
    for m in self._trackers.values():
      m.reset_state()

  def _make_trackers(self, keys, reserved):
    """Creates the trackers of objective metrics ``keys`` ((objective id, name)).

    Trackers are made while Keras traces the step, the first time a metric
    name is seen (objectives report their metrics by name). ``tf.init_scope``
    lifts the variable creation out of the graph (and out of XLA); under
    ``tf.distribute`` the creation runs once in cross-replica context
    (``merge_call``) inside the strategy's scope, so the trackers are
    distributed like Keras' own loss tracker. A name taken by the model's own
    logs, or by an earlier objective, gets a numeric suffix.
    """
    names = []
    taken = set(reserved) | {m.name for m in self._trackers.values()}
    for key in keys:
      name, base, i = key[1], key[1], 2
      while name in taken:
        name, i = f"{base}_{i}", i + 1
      taken.add(name)
      names.append(name)

    def create(strategy=None):
      del strategy
      if all(k in self._trackers for k in keys):  # another replica made them
        return
      with tf.init_scope(), self.model.distribute_strategy.scope():
        for key, name in zip(keys, names):
          self._trackers[key] = keras.metrics.Mean(name=name)

    ctx = tf.distribute.get_replica_context()
    if ctx is not None and tf.distribute.has_strategy():
      ctx.merge_call(create)
    else:
      create()

  def _clean_loss(self, x, y, y_pred, sample_weight):
    model = self.model
    c = self.clean_loss_weight
    if c == 1.0:
      # As Keras' `Trainer._compute_loss`: `training` only where the
      # (possibly overridden) `compute_loss` accepts it.
      if _compute_loss_has_training_arg(model):
        return model.compute_loss(
            x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True)
      return model.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight)
    # c != 1: the compiled loss is scaled, the additional losses (regularizers,
    # add_loss) are kept as they are (this is `Trainer.compute_loss` split).
    losses = []
    if c != 0.0 and model._compile_loss is not None:  # pylint: disable=protected-access
      compiled = model._compile_loss(y, y_pred, sample_weight)  # pylint: disable=protected-access
      if compiled is not None:
        losses.append(compiled * tf.cast(c, compiled.dtype))
    for loss in model.losses:
      # Keras' `_aggregate_additional_loss` (sum, floatx, distribution scaling).
      if not loss.dtype.is_floating:
        loss = tf.cast(loss, keras.backend.floatx())
      losses.append(_scale_for_distribution(tf.reduce_sum(loss)))
    if not losses:
      return tf.zeros((), dtype=keras.backend.floatx())
    return tf.add_n([tf.cast(l, losses[0].dtype) for l in losses])

  def __call__(self, data):
    model = self.model
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)

    # Forward pass, loss and objective terms under one tape.
    collected = []
    with tf.GradientTape() as tape:
      if model._call_has_training_arg:  # pylint: disable=protected-access
        y_pred = model(x, training=True)
      else:
        y_pred = model(x)
      loss = self._clean_loss(x, y, y_pred, sample_weight)
      for obj in self.objectives:
        term, obj_metrics = obj(self.forward, x, y, y_pred, sample_weight=sample_weight)
        term = tf.cast(term, loss.dtype)
        loss = loss + _scale_for_distribution(term)
        for name, value in (obj_metrics or {}).items():
          collected.append(((id(obj), name), value))
      model._loss_tracker.update_state(  # pylint: disable=protected-access
          _unscale_for_distribution(loss),
          sample_weight=_batch_size(x))
      if model.optimizer is not None:
        loss = model.optimizer.scale_loss(loss)

    # Gradients and update (`apply_gradients` unscales under LossScaleOptimizer).
    trainable_weights = model.trainable_weights
    if trainable_weights:
      gradients = tape.gradient(loss, trainable_weights)
      model.optimizer.apply_gradients(zip(gradients, trainable_weights))
    else:
      warnings.warn("The model does not have any trainable weights.")

    logs = dict(model.compute_metrics(x, y, y_pred, sample_weight=sample_weight))
    reserved = set(logs)
    missing = [key for key, _ in collected if key not in self._trackers]
    if missing:
      self._make_trackers(missing, reserved)
    for key, value in collected:
      tracker = self._trackers[key]
      if tracker.name in reserved:
        raise ValueError(
            f"The objective metric `{key[1]}` would overwrite the model's "
            f"metric `{tracker.name}`: give the objective another `name`. "
            f"Received: model metrics {sorted(reserved)}")
      tracker.update_state(tf.cast(value, tf.float32))
      logs[tracker.name] = tracker.result()
    return logs


def make_train_step(model, objectives, *, forward=None):
  """Returns the built regularised `TrainStep` of ``model`` with ``objectives``.

  Use it as a model's ``train_step`` (what the callbacks and `RobustModel` do)::

    step = keras_opnorm.training.make_train_step(model, [objective])
    logs = step((x, y))          # inside Keras' compiled train function

  Args:
    model: a compiled ``keras.Model``.
    objectives: an objective or a list of objectives.
    forward: the network the objectives regularise. Defaults to `model`.

  Returns:
    A built `TrainStep`.

  Raises:
    ValueError, TypeError: see `TrainStep`; objectives' ``build`` errors
      (for example a model that outputs probabilities) surface here.
  """
  return TrainStep(model, objectives, forward=forward).build()


# --------------------------------------------------------------------------
# Installing a step on a user's model for one `fit` (used by the callbacks).


class _Installation:
  """What `install` changed on one model, and who asked for it."""

  def __init__(self, original_train_function):
    self.original_train_function = original_train_function
    self.installed_train_function = None  # the one built with our step
    self.owners = {}  # owner id -> (owner, [objectives]) in install order
    self.step = None


def _owned_objectives(owners):
  """All objectives of ``owners`` (owner id -> (owner, objectives)), in order."""
  return [o for _, objs in owners.values() for o in objs]


_STATE_ATTR = "_keras_opnorm_state"


class _ModelState:
  """keras_opnorm's per-model state: the installation and the last step.

  Stored on the model with ``object.__setattr__`` (no Keras tracking) as a
  plain object, which neither Keras saving (it visits Keras objects and
  containers) nor SavedModel export (it visits trackables and tf.functions)
  looks into; and, unlike a global registry, it dies with the model.
  """

  def __init__(self):
    self.installation = None
    self.cache = None  # (key, held objects, step, train function)


def _state(model, create=False):
  state = model.__dict__.get(_STATE_ATTR)
  if state is None and create:
    state = _ModelState()
    object.__setattr__(model, _STATE_ATTR, state)
  return state


def _installation(model):
  state = _state(model)
  return None if state is None else state.installation


def installed_objectives(model):
  """Returns the objectives currently installed on ``model``.

  Args:
    model: a Keras model.

  Returns:
    A list of `Objective`s, in installation order; empty when none is installed.
  """
  inst = _installation(model)
  if inst is None:
    return []
  return _owned_objectives(inst.owners)


def installed_step(model):
  """Returns the `TrainStep` currently installed on ``model``.

  Args:
    model: a Keras model.

  Returns:
    The installed `TrainStep`, or ``None`` when no objective is installed.
  """
  inst = _installation(model)
  return None if inst is None else inst.step


def _rebuild_train_function(model):
  # The class method: bypasses the guard that `install` puts on the instance.
  type(model).make_train_function(model, force=True)


def _make_guard(model_ref):
  """A ``make_train_function`` that first undoes a stale installation.

  During a ``fit``, Keras calls ``model.make_train_function()`` once, *before*
  ``on_train_begin``; callbacks never call it. So a call while a step is
  installed means that a previous ``fit`` ended without ``on_train_end``
  (it raised): restore the user's step, then build as usual.
  """

  def make_train_function(force=False):
    model = model_ref()
    uninstall(model)
    return model.make_train_function(force=force)

  return make_train_function


def _cache_key(model, objectives):
  return (
      tuple(id(o) for o in objectives),
      id(model.optimizer),
      id(getattr(model, "_compile_loss", None)),
      id(getattr(model, "_compile_metrics", None)),
      model.jit_compile,
      model.steps_per_execution,
      model.run_eagerly,
  )


def _check_default_train_step(model, owner):
  """Refuses to replace a ``train_step`` that the model's class overrides.

  The callbacks install their step in place of Keras' default one; a
  custom ``train_step`` would silently stop running. `RobustModel` (whose
  objectives are combined with the callback's) is the exception.
  """
  if hasattr(model, "_keras_opnorm_objectives"):
    return
  # `keras.Model.train_step` is Keras' default (`TensorFlowTrainer.train_step`).
  if type(model).train_step is not keras.Model.train_step:
    raise ValueError(
        f"{type(owner).__name__} replaces the model's `train_step`, but "
        f"{type(model).__name__} overrides `train_step`: it would silently stop "
        "running. Call `keras_opnorm.training.make_train_step(model, objectives)` "
        "from your own `train_step`, or use `keras_opnorm.RobustModel`. Received: "
        f"model={model.name!r} of type {type(model).__name__}")


def _make_installed_step(model, objectives):
  # A model that trains with objectives of its own (`RobustModel`) keeps them,
  # and keeps the network they differentiate.
  own = list(getattr(model, "_keras_opnorm_objectives", ()))
  forward = getattr(model, "_keras_opnorm_forward", None)
  return make_train_step(model, own + list(objectives), forward=forward)


def _keep_trackers(old, new):
  """Moves the trackers of objectives still present from step ``old`` to ``new``."""
  ids = {id(o) for o in new.objectives}
  for key, tracker in old._trackers.items():  # pylint: disable=protected-access
    if key[0] in ids:
      new._trackers[key] = tracker  # pylint: disable=protected-access


def install(model, objectives, *, owner):
  """Adds ``objectives`` (on behalf of ``owner``) to the step of ``model``.

  All owners' objectives are combined into ONE `TrainStep`; Keras' train
  function is rebuilt (``make_train_function(force=True)``) so that the very
  next step uses it. The user's model is changed only through two instance
  attributes (``train_step`` and a ``make_train_function`` guard) that are
  set without Keras tracking and removed by `uninstall`.

  Args:
    model: a compiled ``keras.Model`` (its ``fit`` has started).
    objectives: an objective or a list of objectives.
    owner: any object (a callback); `uninstall` with the same owner removes
      exactly these objectives.

  Returns:
    The installed `TrainStep`.

  Raises:
    ValueError: if the model's class overrides ``train_step`` (it would be
      replaced); see also `TrainStep`.
    TypeError: see `TrainStep`.
  """
  _check_compiled(model, f"{type(owner).__name__}")
  _check_default_train_step(model, owner)
  objectives = _check_objectives(objectives)
  inst = _installation(model)
  new = inst is None
  if new:
    inst = _Installation(getattr(model, "train_function", None))
  owners = dict(inst.owners)
  owners[id(owner)] = (owner, objectives)
  all_objectives = _owned_objectives(owners)
  key = _cache_key(model, all_objectives)
  state = _state(model, create=True)
  cached = state.cache
  if cached is not None and cached[0] == key:
    # The same objectives on the same compiled model as in an earlier fit:
    # reuse that step and its traced train function (no retracing).
    step, train_function = cached[2], cached[3]
  else:
    step = _make_installed_step(model, all_objectives)  # may raise: nothing changed yet
    if inst.step is not None:
      _keep_trackers(inst.step, step)
    train_function = None
  inst.owners = owners
  inst.step = step
  if new:
    state.installation = inst
    object.__setattr__(model, "make_train_function", _make_guard(weakref.ref(model)))
  object.__setattr__(model, "train_step", step)
  if train_function is None:
    _rebuild_train_function(model)
    train_function = model.train_function
    # The objects whose ids make the key are held, so no id is reused.
    held = (list(all_objectives), model.optimizer, getattr(model, "_compile_loss", None),
            getattr(model, "_compile_metrics", None))
    # (The last installation is reused when a later fit installs the same
    # objectives on the same compiled model.)
    state.cache = (key, held, step, train_function)
  else:
    model.train_function = train_function
  inst.installed_train_function = train_function
  return step


def uninstall(model, owner=None):
  """Removes ``owner``'s objectives (all objectives if None) from ``model``.

  When no objective is left, the user's own ``train_step`` and the train
  function that ``fit`` built are restored. A no-op if nothing is installed.

  Args:
    model: the model given to `install`.
    owner: the owner given to `install`, or None for all. Defaults to `None`.
  """
  inst = _installation(model)
  if inst is None:
    return
  if owner is not None:
    inst.owners.pop(id(owner), None)
  else:
    inst.owners.clear()
  if inst.owners:
    all_objectives = _owned_objectives(inst.owners)
    step = _make_installed_step(model, all_objectives)
    _keep_trackers(inst.step, step)
    inst.step = step
    object.__setattr__(model, "train_step", step)
    _rebuild_train_function(model)
    inst.installed_train_function = model.train_function
    return
  _state(model).installation = None
  for attr in ("train_step", "make_train_function"):
    if attr in model.__dict__:
      object.__delattr__(model, attr)
  if model.train_function is inst.installed_train_function:
    model.train_function = inst.original_train_function
  else:
    # Reset since (e.g. by `compile`): Keras builds a fresh one when needed.
    model.train_function = None
