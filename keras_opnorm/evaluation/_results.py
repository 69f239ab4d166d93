"""The result dataclasses' base: plain-JSON ``to_dict`` / ``from_dict``."""

import dataclasses
import math
import numbers

import numpy as np
import tensorflow as tf


def _jsonable(value):
  """Converts to plain JSON: Python scalars, lists and dicts only.

  numpy and TensorFlow values become Python ones, objects with a ``to_dict()``
  (the result types here) their dict, ``inf`` the string ``"inf"`` and NaN
  ``None``; anything else is returned as is (``json`` then rejects it). Also
  used by `keras_opnorm.experiments.compare` for ``results.json``.
  """
  if isinstance(value, dict):
    return {str(k): _jsonable(v) for k, v in value.items()}
  if hasattr(value, "to_dict"):
    return _jsonable(value.to_dict())
  if tf.is_tensor(value):
    value = value.numpy()
  if isinstance(value, np.ndarray):
    return _jsonable(value.tolist())
  if isinstance(value, (list, tuple)):
    return [_jsonable(v) for v in value]
  if isinstance(value, (bool, np.bool_)):
    return bool(value)
  if isinstance(value, (numbers.Integral, np.integer)):
    return int(value)
  if isinstance(value, (numbers.Real, np.floating)):
    v = float(value)
    if math.isinf(v):
      return "inf" if v > 0 else "-inf"
    if math.isnan(v):
      return None
    return v
  return value


def _from_jsonable(value):
  if isinstance(value, list):
    return [_from_jsonable(v) for v in value]
  if value in ("inf", "-inf"):
    return float(value)
  return value


class _Result:
  """Mixin: ``to_dict()`` to plain JSON and ``from_dict()`` back."""

  _PER_EXAMPLE = ()

  def to_dict(self, per_example=True):
    """Returns the result as a dict of Python scalars and lists.

    Args:
      per_example: include the per-example arrays (e.g. every example's
        cosines); ``False`` keeps only the summaries. Defaults to `True`.

    Returns:
      A dict that ``json.dumps`` writes as standard JSON.
    """
    out = {}
    for field in dataclasses.fields(self):
      if not per_example and field.name in self._PER_EXAMPLE:
        continue
      out[field.name] = _jsonable(getattr(self, field.name))
    return out

  @classmethod
  def from_dict(cls, config):
    """Rebuilds a result from `to_dict` output (missing per-example fields -> None).

    Args:
      config: a dict as returned by `to_dict`; unknown keys are ignored.

    Returns:
      An instance of this result type.
    """
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: _from_jsonable(v) for k, v in config.items() if k in names})
