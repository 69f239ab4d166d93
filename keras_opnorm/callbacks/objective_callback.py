"""`ObjectiveCallback`: attaches an objective to one ``model.fit``.

The callback installs the regularised train step of `keras_opnorm.training`
on the user's compiled model (Sequential, functional or subclassed) when
training starts and restores the model's own step when it ends. Several such
callbacks in one ``fit`` combine into one step with all their objectives.
``evaluate``, ``predict``, ``save`` and ``export`` never see the objective.
"""

import os

import keras
import tensorflow as tf

from keras_opnorm import training
from keras_opnorm.callbacks import schedules as schedules_lib

__all__ = ["ObjectiveCallback"]


def _nonnegative_int(value, name):
  return schedules_lib._nonnegative_int(value, name)  # pylint: disable=protected-access


@keras.saving.register_keras_serializable(package="keras_opnorm")
class ObjectiveCallback(keras.callbacks.Callback):
  """Adds an objective's term to the training loss for one ``fit``.

  ``model.fit(..., callbacks=[ObjectiveCallback(objective)])`` trains on
  ``compiled_loss + objective term`` (see `keras_opnorm.training`); the
  progress bar, ``History`` and ``TensorBoard`` show the objective's metrics
  (running means over the epoch's training batches).

  What happens when:

  * ``on_train_begin``: checks the model (compiled; outputs logits where the
    objective needs them), builds the objective, restores its persistent
    state from ``backup_dir`` if a backup is there, evaluates the schedules
    once (an invalid schedule fails here, before any step).
  * ``on_epoch_begin(epoch)``: from ``start_epoch`` on, installs the
    regularised step (once: Keras retraces the step then) and assigns the
    scheduled hyper-parameters (no retracing).
  * ``on_epoch_end``: writes the objective's state to ``backup_dir``.
  * ``on_train_end``: restores the model's own train step and removes the
    state backup. If ``fit`` raises instead, the model's step is restored at
    the start of its next ``fit`` (or ``train_on_batch``), or by
    ``keras_opnorm.training.uninstall(model)``.

  Args:
    objective: a `keras_opnorm.objectives.Objective` (or its config dict).
    schedules: dict ``{hyper-parameter name: schedule}``, each schedule a
      `keras_opnorm.callbacks.Schedule` (e.g. `LinearRamp`) or a callable
      ``epoch -> value``; names among ``objective.hyperparameters`` (e.g.
      ``'epsilon'``, ``'weight'``). Defaults to `None` (constant values).
    start_epoch: the objective is applied from this epoch index on (plain
      training before). Defaults to `0`.
    backup_dir: directory in which the objective's persistent state (e.g.
      the power-iteration vectors of `SpectralNormRegularization`) is written
      at each epoch end and from which it is restored at train begin. Give the
      ``backup_dir`` of ``keras.callbacks.BackupAndRestore`` so that a resumed
      run keeps both the model and the objective state; the schedule position
      is kept by BackupAndRestore's epoch. Defaults to `None` (no backup).

  Raises:
    TypeError, ValueError: for an argument of the wrong type or value, and in
      ``on_train_begin`` for an uncompiled model or a model the objective
      cannot handle.
  """

  def __init__(self, objective, *, schedules=None, start_epoch=0, backup_dir=None):
    super().__init__()
    if isinstance(objective, dict):
      objective = keras.saving.deserialize_keras_object(objective)
    if not callable(objective) or not hasattr(objective, "set_hyperparameter"):
      raise TypeError(
          "`objective` must be a keras_opnorm.objectives.Objective. Received: "
          f"objective={objective!r}")
    self.objective = objective
    schedules = dict(schedules or {})
    names = tuple(getattr(objective, "hyperparameters", ()))
    self.schedules = {}
    for name, schedule in schedules.items():
      if name not in names:
        raise ValueError(
            f"Cannot schedule `{name}`: {type(objective).__name__} has the "
            f"schedulable hyper-parameters {names}. Received: schedules="
            f"{{{name!r}: {schedule!r}}}")
      self.schedules[name] = schedules_lib.check_schedule(schedule, f"{name}_schedule")
    self.start_epoch = _nonnegative_int(start_epoch, "start_epoch")
    if backup_dir is not None and (not isinstance(backup_dir, (str, os.PathLike)) or not str(backup_dir)):
      raise ValueError(f"`backup_dir` must be a non-empty path or None. Received: backup_dir={backup_dir!r}")
    self.backup_dir = None if backup_dir is None else os.fspath(backup_dir)
    self._active = False

  # -- state backup ----------------------------------------------------------

  @property
  def _backup_prefix(self):
    return os.path.join(self.backup_dir, f"keras_opnorm_{self.objective.name}_state")

  def _checkpoint(self):
    variables = list(getattr(self.objective, "variables", []))
    return tf.train.Checkpoint(**{f"v{i}": v for i, v in enumerate(variables)})

  def _restore_state(self):
    prefix = self._backup_prefix
    if tf.io.gfile.exists(prefix + ".index"):
      self._checkpoint().read(prefix).assert_consumed()

  def _save_state(self):
    tf.io.gfile.makedirs(self.backup_dir)
    self._checkpoint().write(self._backup_prefix)

  def _delete_state(self):
    for path in tf.io.gfile.glob(self._backup_prefix + "*"):
      tf.io.gfile.remove(path)

  # -- schedules -------------------------------------------------------------

  def _apply_schedules(self, epoch):
    for name, schedule in self.schedules.items():
      value = schedules_lib.schedule_value(schedule, epoch, f"{name}_schedule")
      self.objective.set_hyperparameter(name, value)

  # -- Keras hooks -------------------------------------------------------------

  def on_train_begin(self, logs=None):
    model = self.model
    self._active = False
    training.TrainStep(model, [self.objective])  # checks: compiled, loss weight
    # The network the objective differentiates (a RobustModel's inner model).
    forward = getattr(model, "_keras_opnorm_forward", None)
    if forward is None:
      forward = model
    with model.distribute_strategy.scope():
      self.objective.build(forward)
    if self.backup_dir is not None:
      self._restore_state()
    for name, schedule in self.schedules.items():
      schedules_lib.schedule_value(schedule, self.start_epoch, f"{name}_schedule")

  def on_epoch_begin(self, epoch, logs=None):
    self._apply_schedules(epoch)
    if epoch >= self.start_epoch and not self._active:
      training.install(self.model, [self.objective], owner=self)
      self._active = True
    step = training.installed_step(self.model)
    if step is not None:
      step.reset_metrics()

  def on_epoch_end(self, epoch, logs=None):
    if self.backup_dir is not None:
      self._save_state()

  def on_train_end(self, logs=None):
    training.uninstall(self.model, owner=self)
    self._active = False
    if self.backup_dir is not None:
      self._delete_state()

  # -- serialisation -----------------------------------------------------------

  def _schedules_config(self):
    return {
        name: keras.saving.serialize_keras_object(s) for name, s in self.schedules.items()
    }

  def get_config(self):
    return {
        "objective": keras.saving.serialize_keras_object(self.objective),
        "schedules": self._schedules_config(),
        "start_epoch": self.start_epoch,
        "backup_dir": self.backup_dir,
    }

  @classmethod
  def from_config(cls, config):
    config = dict(config)
    config["schedules"] = {
        k: keras.saving.deserialize_keras_object(v) if isinstance(v, dict) else v
        for k, v in (config.get("schedules") or {}).items()
    }
    return cls(**config)


class _BuiltInObjectiveCallback(ObjectiveCallback):
  """Base of the callbacks named after a `keras_opnorm.objectives` class.

  Subclasses set ``_objective_class_name`` and ``_warmup_hyperparameter`` and
  pass the objective's constructor arguments through ``objective_kwargs``.
  """

  _objective_class_name = None
  _warmup_hyperparameter = "epsilon"

  def __init__(self, *, objective_kwargs, start_epoch=0, warmup_epochs=0,
               schedules=None, backup_dir=None):
    from keras_opnorm import objectives  # pylint: disable=g-import-not-at-top
    objective_cls = getattr(objectives, self._objective_class_name)
    objective = objective_cls(**objective_kwargs)
    # The constructor values, before any schedule changes the variables.
    self._objective_config = objective.get_config()
    self.warmup_epochs = _nonnegative_int(warmup_epochs, "warmup_epochs")
    schedules = {k: v for k, v in (schedules or {}).items() if v is not None}
    self._explicit_schedules = dict(schedules)
    if self.warmup_epochs > 1:
      name = self._warmup_hyperparameter
      if name in schedules:
        raise ValueError(
            f"Give either `warmup_epochs` or `{name}_schedule`, not both. "
            f"Received: warmup_epochs={warmup_epochs}, "
            f"{name}_schedule={schedules[name]!r}")
      target = objective.get_hyperparameter(name)
      schedules[name] = schedules_lib.LinearRamp(
          target / self.warmup_epochs, target, ramp_epochs=self.warmup_epochs - 1,
          start_epoch=_nonnegative_int(start_epoch, "start_epoch"))
    super().__init__(objective, schedules=schedules, start_epoch=start_epoch,
                     backup_dir=backup_dir)

  def get_config(self):
    return {
        **self._objective_config,
        "start_epoch": self.start_epoch,
        "warmup_epochs": self.warmup_epochs,
        **{f"{name}_schedule": keras.saving.serialize_keras_object(s)
           for name, s in self._explicit_schedules.items()},
        "backup_dir": self.backup_dir,
    }

  @classmethod
  def from_config(cls, config):
    config = dict(config)
    for key, value in config.items():
      if key.endswith("_schedule") and isinstance(value, dict):
        config[key] = keras.saving.deserialize_keras_object(value)
    return cls(**config)


class _EpsilonObjectiveCallback(_BuiltInObjectiveCallback):
  """Base of the callbacks whose objective has a radius ``epsilon``.

  The constructor shared by `AdversarialTraining` and
  `OperatorNormRegularization`: ``epsilon`` (the one ``warmup_epochs``
  ramps) and ``weight`` are schedulable, the other objective arguments pass
  through.
  """

  _warmup_hyperparameter = "epsilon"

  def __init__(self, epsilon, *, start_epoch=0, warmup_epochs=0,
               epsilon_schedule=None, weight_schedule=None, backup_dir=None,
               **objective_kwargs):
    super().__init__(
        objective_kwargs={"epsilon": epsilon, **objective_kwargs},
        start_epoch=start_epoch, warmup_epochs=warmup_epochs,
        schedules={"epsilon": epsilon_schedule, "weight": weight_schedule},
        backup_dir=backup_dir)
