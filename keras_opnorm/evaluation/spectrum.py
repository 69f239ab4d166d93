"""Jacobian spectra and mean (p,q) operator norms over a data set."""

import dataclasses

import numpy as np
import tensorflow as tf

from keras_opnorm import _checks
from keras_opnorm import jacobian
from keras_opnorm import logits_view
from keras_opnorm.operator_norm import operator_norm
from keras_opnorm.singular_values import singular_values
from keras_opnorm.evaluation._data import _Structured
from keras_opnorm.evaluation._data import _any_batches
from keras_opnorm.evaluation._data import _check_batch_size
from keras_opnorm.evaluation._data import _is_structured_data
from keras_opnorm.evaluation._data import _kwargs_if_set
from keras_opnorm.evaluation._results import _Result


def center_logits(fn, training=False):
  """Wraps a logits function as the centered logits ``x -> P f(x)``.

  ``f_c(x) = f(x) - (1/d) sum_i f_i(x) = P f(x)`` with ``P = I - 1 1^T / d``,
  so that ``J_{f_c}(x) = P J_f(x)``: the Jacobian with the "shift every logit
  by the same amount" direction ``1`` projected out of its range. Softmax and
  cross-entropy are invariant to that shift, hence ``P J`` is the Jacobian a
  cross-entropy attack effectively sees.

  Args:
    fn: a Keras model or a callable ``x -> logits [batch, d]``.
    training: the ``training`` flag used when ``fn`` is a Keras model.
      Defaults to `False`.

  Returns:
    A callable ``x -> centered logits [batch, d]`` (each row sums to 0).

  Raises:
    TypeError: if ``fn`` is not callable.

  Example:

  >>> f = center_logits(lambda x: x)
  >>> f(tf.constant([[1.0, 2.0, 6.0]])).numpy().tolist()
  [[-2.0, -1.0, 3.0]]
  """
  logits_fn = jacobian.as_logits_fn(fn, training=training)

  def centered(x):
    logits = logits_fn(x)
    return logits - tf.reduce_mean(logits, axis=-1, keepdims=True)

  centered.__name__ = "centered_" + getattr(fn, "__name__", type(fn).__name__)
  return centered


@dataclasses.dataclass(frozen=True)
class SpectrumResult(_Result):
  """Top-k singular values of the Jacobian ``J_f(x)`` over examples.

  Attributes:
    k: number of singular values.
    num_examples: number of evaluated examples.
    mean, std: mean / std over examples of ``sigma_r``, length ``k``, descending.
    centered: whether the spectrum is that of ``P J`` (`center_logits`).
    values: per-example singular values, ``[num_examples][k]``.
  """
  k: int
  num_examples: int
  mean: list
  std: list
  centered: bool = False
  values: list = None

  _PER_EXAMPLE = ("values",)


class _OperatorNormKernel:
  """Compiled ``x -> ||J||_{p,q} [batch]`` (of ``P J`` when centered), built once."""

  def __init__(self, model, *, p, q, num_iters, num_restarts, method, centered,
               training, jit_compile, structured=None):
    fn = _logits(model, centered, training, structured, None)
    kwargs = _kwargs_if_set(num_iters=num_iters, num_restarts=num_restarts, method=method)
    self.structured = structured

    def norm(x, fixed=None):
      f = fn if fixed is None else _logits(model, centered, training, structured, fixed)
      return operator_norm(f, x, p, q, **kwargs).norm

    self.norm = tf.function(norm, jit_compile=jit_compile)

  def run(self, x, batch_size):
    """Per-example norms ``[n]`` (numpy)."""
    return np.concatenate(
        [self.norm(xb, *extra).numpy()[:count] for xb, _, count, extra in
         _any_batches(x, None, batch_size, need_y=False, structured=self.structured)])


def _logits(model, centered, training, structured, fixed):
  """The (centered) logits function; of the model bound to ``fixed`` when given."""
  if fixed is not None:
    model = structured.bind(fixed)
  return center_logits(model, training) if centered else jacobian.as_logits_fn(model, training)


def _singular_fn(model, *, k, num_iters, centered, training, jit_compile, structured=None):
  """Compiled ``x -> (values [b, k], right vectors [b, k, ...], left [b, k, d])``.

  With ``structured``, ``x`` is the packed ``z`` and the batch's fixed inputs
  are a second argument.
  """
  fn = _logits(model, centered, training, structured, None)
  kwargs = _kwargs_if_set(num_iters=num_iters)

  def svd(x, fixed=None):
    f = fn if fixed is None else _logits(model, centered, training, structured, fixed)
    result = singular_values(f, x, k=k, **kwargs)
    return result.values, result.vectors, result.left

  return tf.function(svd, jit_compile=jit_compile)


@logits_view.accepts_views(batches_itself=True)
def mean_operator_norm(model, x, p=2, q=2, *, num_iters=20, num_restarts=1, method="auto",
                       centered=False, batch_size=256, training=False, jit_compile=False):
  """Mean per-example operator norm ``(1/n) sum_i ||J_f(x_i)||_{p,q}``.

  ``||J||_{p,q} = max_{||v||_p <= 1} ||J v||_q`` from `operator_norm`: exact
  for (2,2), (1,q), (p,inf) and (p,1) with at most 12 logits; for the other
  pairs (``(inf, 2)``, ``p -> p``) a lower bound, with ``method='auto'`` from
  the multi-start ascent on the exact Jacobian (within 2% of a strong lower
  bound on the main job's models, see `operator_norm`).

  Args:
    model: a Keras model or a callable ``x -> logits``.
    x: inputs ``[n, ...]`` or a finite batched ``tf.data.Dataset``.
      A dict/list of inputs (or a dataset of them) for a model with several
      inputs: the perturbed inputs, packed (`keras_opnorm.logits_view`).
    p: input norm. Defaults to `2`.
    q: output norm. Defaults to `2`.
    num_iters: power iterations. Defaults to `20`.
    num_restarts: random starts of the power method (added to the
      deterministic ones of the exact-Jacobian ascent). Defaults to `1`.
    method: ``'auto'``, ``'power'`` or ``'exact'``. Defaults to `'auto'`.
    centered: use the centered logits ``P f`` (`center_logits`). Defaults to `False`.
    batch_size: examples per batch for array inputs. Defaults to `256`.
    training: the model's ``training`` flag. Defaults to `False`.
    jit_compile: compile with XLA. Defaults to `False`.

  Returns:
    The mean as a Python float.

  Raises:
    ValueError: a NaN or inf in ``x`` (naming how many examples and which;
      in a graph an InvalidArgumentError, under XLA NaN results for them).
    ValueError, TypeError: an invalid ``p``, ``q`` or ``batch_size``, or
      empty or non-floating-point ``x``.
  """
  p = _checks.exponent(p, "p")
  q = _checks.exponent(q, "q")
  batch_size = _check_batch_size(batch_size)
  kernel = _OperatorNormKernel(
      model, p=p, q=q, num_iters=num_iters, num_restarts=num_restarts,
      method=method, centered=centered, training=training, jit_compile=jit_compile,
      structured=_Structured(model, x, None, training) if _is_structured_data(x) else None)
  return float(np.mean(kernel.run(x, batch_size)))


@logits_view.accepts_views(batches_itself=True)
def spectrum(model, x, *, k=10, num_iters=None, centered=False, batch_size=256,
             training=False, jit_compile=False):
  """Top-k singular values of the Jacobian ``J_f(x)`` of every example.

  The paper's spectrum figure: adversarial training and data-dependent
  operator norm regularisation damp ``sigma_1 >= sigma_2 >= ...`` alike.

  Args:
    model: a Keras model or a callable ``x -> logits``.
    x: inputs ``[n, ...]`` or a finite batched ``tf.data.Dataset``.
      A dict/list of inputs (or a dataset of them) for a model with several
      inputs: the perturbed inputs, packed (`keras_opnorm.logits_view`).
    k: number of singular values (at most ``min(d, n_in)``). Defaults to `10`.
    num_iters: iterations of `singular_values`; ``None`` uses its default.
      Defaults to `None`.
    centered: the spectrum of ``P J`` (`center_logits`). Defaults to `False`.
    batch_size: examples per batch for array inputs. Defaults to `256`.
    training: the model's ``training`` flag. Defaults to `False`.
    jit_compile: compile with XLA. Defaults to `False`.

  Returns:
    A `SpectrumResult`.

  Raises:
    ValueError: a NaN or inf in ``x`` (naming how many examples and which;
      in a graph an InvalidArgumentError, under XLA NaN results for them).
    ValueError, TypeError: an invalid ``k`` or ``batch_size``, or empty or
      non-floating-point ``x``.
  """
  k = _checks.positive_int(k, "k")
  batch_size = _check_batch_size(batch_size)
  structured = _Structured(model, x, None, training) if _is_structured_data(x) else None
  svd = _singular_fn(
      model, k=k, num_iters=num_iters, centered=centered, training=training,
      jit_compile=jit_compile, structured=structured)
  values = np.concatenate(
      [svd(xb, *extra)[0].numpy()[:count] for xb, _, count, extra in
       _any_batches(x, None, batch_size, need_y=False, structured=structured)])
  return SpectrumResult(
      k=k, num_examples=int(values.shape[0]),
      mean=[float(v) for v in values.mean(axis=0)],
      std=[float(v) for v in values.std(axis=0)],
      centered=bool(centered), values=values.tolist())
