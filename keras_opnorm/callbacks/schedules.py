"""Epoch schedules for the objectives' hyper-parameters (epsilon, weight).

A schedule maps an epoch index (0-based, as ``Callback.on_epoch_begin`` sees
it) to a value. The training callbacks evaluate it at the start of every
epoch and assign the result to the objective's variable, so a compiled train
step reads the new value without retracing. Because the value depends on the
epoch index only, a run resumed by ``keras.callbacks.BackupAndRestore`` (which
restarts ``fit`` at the saved epoch) continues the schedule where it stopped.
"""

import math
import numbers

import keras
import numpy as np

from keras_opnorm import _checks

__all__ = ["Schedule", "LinearRamp", "check_schedule", "schedule_value"]


@keras.saving.register_keras_serializable(package="keras_opnorm")
class Schedule:
  """Base class: ``schedule(epoch) -> value`` with ``get_config``.

  Subclasses implement ``__call__(epoch)`` returning a finite number >= 0
  and ``get_config`` returning the constructor arguments.
  """

  def __call__(self, epoch):
    raise NotImplementedError(f"{type(self).__name__} must implement `__call__`.")

  def get_config(self):
    return {}

  @classmethod
  def from_config(cls, config):
    return cls(**config)

  def __repr__(self):
    args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
    return f"{type(self).__name__}({args})"


@keras.saving.register_keras_serializable(package="keras_opnorm")
class LinearRamp(Schedule):
  """A linear ramp from ``start_value`` to ``end_value`` over some epochs.

  ::

    value(e) = start_value                                       e <= start_epoch
             = start_value + (end_value - start_value)
                             * (e - start_epoch) / ramp_epochs   during the ramp
             = end_value                          e >= start_epoch + ramp_epochs

  The usual epsilon warm-up of adversarial training (e.g. Gowal et al. 2018,
  https://arxiv.org/abs/1810.12715) is ``LinearRamp(0.0, eps, ramp_epochs=5)``;
  note that its first epoch then trains with epsilon 0. ``ramp_epochs=0`` is a
  step to ``end_value`` at ``start_epoch``.

  Args:
    start_value: value up to and at ``start_epoch`` (finite, >= 0).
    end_value: value from ``start_epoch + ramp_epochs`` on (finite, >= 0).
    ramp_epochs: length of the ramp in epochs (integer >= 0).
    start_epoch: epoch index at which the ramp starts (integer >= 0).
      Defaults to `0`.

  Raises:
    ValueError, TypeError: for a negative, non-finite or non-numeric value
      (a scalar tensor or variable is checked and read as a number), or a
      negative or non-integer number of epochs.

  Example:

  >>> ramp = LinearRamp(0.0, 1.0, ramp_epochs=4)
  >>> [ramp(e) for e in range(6)]
  [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
  >>> LinearRamp(0.5, 0.5, ramp_epochs=0, start_epoch=2)(0)
  0.5
  """

  def __init__(self, start_value, end_value, ramp_epochs, start_epoch=0):
    self.start_value = _nonnegative_value(start_value, "start_value")
    self.end_value = _nonnegative_value(end_value, "end_value")
    self.ramp_epochs = _nonnegative_int(ramp_epochs, "ramp_epochs")
    self.start_epoch = _nonnegative_int(start_epoch, "start_epoch")

  def __call__(self, epoch):
    epoch = _nonnegative_int(epoch, "epoch")
    if epoch >= self.start_epoch + self.ramp_epochs:
      return self.end_value
    if epoch <= self.start_epoch:
      return self.start_value
    t = (epoch - self.start_epoch) / self.ramp_epochs
    return self.start_value + (self.end_value - self.start_value) * t

  def get_config(self):
    return {
        **super().get_config(),
        "start_value": self.start_value,
        "end_value": self.end_value,
        "ramp_epochs": self.ramp_epochs,
        "start_epoch": self.start_epoch,
    }


def _nonnegative_value(value, name):
  """A finite number >= 0 as a float; a scalar tensor or variable is read now.

  A schedule's values are Python floats (serialisable, and assigned to the
  objective's variable at each epoch), so a tensor is checked and read here
  rather than stored: ``tf.Variable(-1.0)`` raises instead of ramping to it.
  """
  value = _checks.nonnegative_float(value, name)
  if isinstance(value, float):
    return value
  arr = _checks._eager_value(value)  # pylint: disable=protected-access
  if arr is None or arr.size != 1:
    raise TypeError(f"`{name}` must be a finite number >= 0 (a scalar). Received: "
                    f"{name}={value!r}")
  return float(arr.reshape(()))


def _nonnegative_int(value, name):
  if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Integral, np.integer)):
    raise TypeError(f"`{name}` must be a non-negative integer. Received: {name}={value!r}")
  if value < 0:
    raise ValueError(f"`{name}` must be a non-negative integer. Received: {name}={value}")
  return int(value)


def check_schedule(schedule, name):
  """Returns ``schedule`` if it is None, a `Schedule` or a callable, else raises.

  Args:
    schedule: the schedule to check (a `Schedule` config dict is deserialised).
    name: the argument name used in the error message.

  Returns:
    The schedule (None, a `Schedule` or a callable).

  Raises:
    TypeError: if ``schedule`` is not callable.
  """
  if schedule is None or isinstance(schedule, Schedule):
    return schedule
  if isinstance(schedule, dict):
    return keras.saving.deserialize_keras_object(schedule)
  if not callable(schedule):
    raise TypeError(
        f"`{name}` must be a keras_opnorm.callbacks.Schedule (e.g. LinearRamp) "
        f"or a callable epoch -> value. Received: {name}={schedule!r}")
  return schedule


def schedule_value(schedule, epoch, name):
  """Evaluates ``schedule(epoch)`` and checks the value is finite and >= 0.

  Args:
    schedule: a `Schedule` or a callable ``epoch -> value``.
    epoch: the epoch index.
    name: the schedule's argument name used in the error message.

  Returns:
    The value as a Python float.

  Raises:
    ValueError, TypeError: naming the schedule, the epoch and the value.
  """
  value = schedule(epoch)
  if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.number)):
    try:
      value = float(np.asarray(value))
    except (TypeError, ValueError):
      raise TypeError(
          f"`{name}` must return a finite number >= 0. Received: {name}({epoch})"
          f"={value!r}") from None
  value = float(value)
  if math.isnan(value) or math.isinf(value) or value < 0:
    raise ValueError(
        f"`{name}` must return a finite number >= 0. Received: {name}({epoch})={value}")
  return value
