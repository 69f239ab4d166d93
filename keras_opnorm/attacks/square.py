"""Square Attack: a score-based, gradient-free random search in the lp ball.

``square_attack`` is the black-box attack of Andriushchenko, Croce, Flammarion
& Hein, "Square Attack: a query-efficient black-box adversarial attack via
random search", ECCV 2020 (https://arxiv.org/abs/1912.00049), for
``p in {inf, 2}``. It only queries the logits ``f(x*)`` (no gradient) and
keeps, per example, the best point ``x_best`` found so far::

  x_new = clip( x + delta_new ),   delta_new = delta_best changed on a square window W
  x_best <- x_new   if  L(f(x_new), y) < L(f(x_best), y)   (or x_new is misclassified)

with the margin loss ``L = z_y - max_{j != y} z_j`` (or ``-CE``). The window
has side ``s = round(sqrt(p_sel * h * w))`` with the fraction ``p_sel`` of
pixels halved on a fixed schedule (`square_schedule`), at a uniformly random
position (`square_window_positions`) drawn per example and per query.

Everything is one ``tf.while_loop`` over the queries with a fixed batch shape
(examples already misclassified are frozen, and the loop stops once all are):
it runs eagerly, inside ``tf.function`` and under XLA (``jit_compile=True``)
and does not retrace for a fixed input signature. Randomness is stateless
(``tf.random.stateless_*`` from one ``seed``), so a seed fixes the result.
"""

import math
import numbers

import numpy as np
import tensorflow as tf

from keras_opnorm import _checks
from keras_opnorm import jacobian
from keras_opnorm import logits_view
from keras_opnorm.attacks._common import _check_label_width
from keras_opnorm.attacks._common import _check_in_box
from keras_opnorm.attacks._common import _clip_range
from keras_opnorm.attacks._common import _labels
from keras_opnorm.attacks._common import _radius
from keras_opnorm.attacks._common import _same_batch
from keras_opnorm.attacks._common import fold_seed
from keras_opnorm.attacks._common import seed_tensor
from keras_opnorm.attacks._common import warn_if_vacuous
from keras_opnorm.attacks.losses import crossentropy_loss
from keras_opnorm.attacks.losses import margin

__all__ = [
    "square_attack",
    "square_schedule",
    "square_window_positions",
    "square_window_mask",
    "SQUARE_LOSSES",
]

_INF = float("inf")
SQUARE_LOSSES = ("margin", "crossentropy")

# The schedule of p_sel (Andriushchenko et al. 2020, Sec. 4 and the reference
# implementations): p_init is halved after each of these iterations of a
# 10000-query budget; other budgets are rescaled to 10000.
_SCHEDULE_BUDGET = 10000
_SCHEDULE_BOUNDARIES = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)
_NUM_STAGES = len(_SCHEDULE_BOUNDARIES) + 1

# l2 start: the image is tiled with (about) 5 x 5 meta-pulses.
_L2_INIT_BLOCKS = 5
# l2 windows: at least 3 wide and of odd side (as in the reference).
_L2_MIN_SIDE = 3


# ----------------------------------------------------------------------------
# Pure pieces: the schedule of p_sel, window positions and masks.
# ----------------------------------------------------------------------------


def _unit_interval_closed(value, name):
  if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.number)):
    raise TypeError(f"`{name}` must be a number in (0, 1]. Received: {name}={value!r}")
  v = float(value)
  if not 0.0 < v <= 1.0:
    raise ValueError(f"`{name}` must be a number in (0, 1]. Received: {name}={value}")
  return v


def _stage(it, num_queries):
  """Number of halvings of p_init at iteration ``it`` (an int32 tensor in [0, 9])."""
  it = tf.cast(it, tf.int64)
  rescaled = it * _SCHEDULE_BUDGET // num_queries
  bounds = tf.constant(_SCHEDULE_BOUNDARIES, tf.int64)
  return tf.reduce_sum(tf.cast(rescaled[..., tf.newaxis] > bounds, tf.int32), axis=-1)


def square_schedule(it, num_queries, p_init):
  """The fraction ``p_sel`` of pixels that Square Attack changes at iteration ``it``.

  The piecewise-constant schedule of Andriushchenko et al. (2020): with the
  iteration rescaled to a budget of 10000 queries,
  ``t = floor(it * 10000 / num_queries)``::

    p_sel = p_init / 2^k,   k = #{ b in (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000) : t > b }

  so ``p_sel = p_init`` for ``t <= 10``, ``p_init / 2`` for ``10 < t <= 50``,
  ..., ``p_init / 512`` for ``t > 8000``. ``t`` is computed in integers (the
  reference rounds ``it / num_queries * 10000`` in floating point, which can
  differ by one at a boundary).

  Args:
    it: the iteration, a non-negative integer (or an integer tensor, any
      shape).
    num_queries: the query budget, a positive integer.
    p_init: the initial fraction, in ``(0, 1]``.

  Returns:
    ``p_sel``: a Python float for a Python ``it``, else a float32 tensor
    shaped like ``it``.

  Raises:
    ValueError: for ``num_queries <= 0``, ``p_init`` outside ``(0, 1]`` or a
      negative ``it``.
    TypeError: for non-integer ``it`` or ``num_queries``.

  Example:

  >>> [square_schedule(it, 10000, 0.8) for it in (0, 10, 11, 50, 51, 8001)]
  [0.8, 0.8, 0.4, 0.4, 0.2, 0.0015625]
  >>> square_schedule(1, 100, 0.8)  # t = 100: halved twice (10 < t, 50 < t)
  0.2
  """
  num_queries = _checks.positive_int(num_queries, "num_queries")
  p_init = _unit_interval_closed(p_init, "p_init")
  if tf.is_tensor(it):
    if not it.dtype.is_integer:
      raise TypeError(f"`it` must be an integer. Received: it with dtype={it.dtype.name}")
    k = _stage(it, num_queries)
    return p_init / tf.pow(2.0, tf.cast(k, tf.float32))
  if isinstance(it, (bool, np.bool_)) or not isinstance(it, (numbers.Integral, np.integer)):
    raise TypeError(f"`it` must be a non-negative integer. Received: it={it!r}")
  if it < 0:
    raise ValueError(f"`it` must be a non-negative integer. Received: it={it}")
  t = int(it) * _SCHEDULE_BUDGET // num_queries
  k = sum(t > b for b in _SCHEDULE_BOUNDARIES)
  return p_init / 2**k


def _pair(side):
  if isinstance(side, (tuple, list)):
    return side[0], side[1]
  return side, side


def square_window_positions(seed, batch_size, height, width, side):
  """Uniformly random top-left corners of ``side`` windows inside a ``height x width`` grid.

  Per example ``b``: ``rows[b] ~ U{0, ..., height - s_h}`` and
  ``cols[b] ~ U{0, ..., width - s_w}``, independent, so the window
  ``[rows, rows + s_h) x [cols, cols + s_w)`` lies inside the grid and every
  position is equally likely. (The reference implementations draw from
  ``{0, ..., h - s - 1}``, which never touches the last row and column.)

  Args:
    seed: an int32 ``[2]`` seed of ``tf.random.stateless_uniform``.
    batch_size: the number of windows (int or scalar tensor).
    height: the grid height (int).
    width: the grid width (int).
    side: the window side ``s`` (a window ``s x s``) or a pair ``(s_h, s_w)``;
      ints or scalar int tensors with ``1 <= s_h <= height``,
      ``1 <= s_w <= width``.

  Returns:
    ``(rows, cols)``, two int32 tensors ``[batch_size]``.

  Example:

  >>> rows, cols = square_window_positions(tf.constant([1, 2]), 3, 5, 5, 5)
  >>> rows.numpy().tolist(), cols.numpy().tolist()  # a 5 x 5 window fits once
  ([0, 0, 0], [0, 0, 0])
  """
  s_h, s_w = _pair(side)
  seed = tf.convert_to_tensor(seed, tf.int32)
  shape = tf.reshape(tf.cast(batch_size, tf.int32), [1])
  top_h = tf.cast(height, tf.int32) - tf.cast(s_h, tf.int32) + 1
  top_w = tf.cast(width, tf.int32) - tf.cast(s_w, tf.int32) + 1
  rows = tf.random.stateless_uniform(shape, fold_seed(seed, 0), 0, top_h, dtype=tf.int32)
  cols = tf.random.stateless_uniform(shape, fold_seed(seed, 1), 0, top_w, dtype=tf.int32)
  return rows, cols


def square_window_mask(rows, cols, side, height, width):
  """The boolean masks ``[batch, height, width]`` of the windows at ``(rows, cols)``.

  ``mask[b, i, j] = rows[b] <= i < rows[b] + s_h  and  cols[b] <= j < cols[b] + s_w``.

  Args:
    rows: int tensor ``[batch]``, the first row of each window.
    cols: int tensor ``[batch]``, the first column of each window.
    side: ``s`` (``s x s`` windows) or ``(s_h, s_w)``: ints or scalar tensors.
    height: the grid height (int).
    width: the grid width (int).

  Returns:
    A bool tensor ``[batch, height, width]``.

  Example:

  >>> m = square_window_mask(tf.constant([1]), tf.constant([0]), 2, 3, 3)
  >>> tf.cast(m[0], tf.int32).numpy().tolist()
  [[0, 0, 0], [1, 1, 0], [1, 1, 0]]
  """
  s_h, s_w = _pair(side)
  rows = tf.cast(rows, tf.int32)[:, tf.newaxis]
  cols = tf.cast(cols, tf.int32)[:, tf.newaxis]
  i = tf.range(height, dtype=tf.int32)[tf.newaxis, :]
  j = tf.range(width, dtype=tf.int32)[tf.newaxis, :]
  in_rows = tf.logical_and(i >= rows, i < rows + tf.cast(s_h, tf.int32))  # [b, h]
  in_cols = tf.logical_and(j >= cols, j < cols + tf.cast(s_w, tf.int32))  # [b, w]
  return tf.logical_and(in_rows[:, :, tf.newaxis], in_cols[:, tf.newaxis, :])


# ----------------------------------------------------------------------------
# The l2 meta-pulses (numpy, precomputed for the few window sides used).
# ----------------------------------------------------------------------------


def _nested_rectangles(a, b):
  """``sum_k 1/(k+1)^2`` over the centred rectangles of half-size k containing each pixel.

  The rectangle of half-size ``k`` around the centre ``(a // 2, b // 2)`` of an
  ``a x b`` array holds the pixels at Chebyshev distance ``<= k``, for
  ``k = 0, ..., K - 1`` with ``K = max(a // 2, b // 2) + 1``; a pixel at
  distance ``d`` gets ``sum_{k=d}^{K-1} 1/(k+1)^2``. Normalised to unit
  Frobenius norm.
  """
  out = np.zeros([a, b])
  if a == 0 or b == 0:
    return out
  big_k = max(a // 2, b // 2) + 1
  tail = np.cumsum([1.0 / (k + 1)**2 for k in range(big_k)][::-1])[::-1]  # tail[d]
  dr = np.abs(np.arange(a) - a // 2)[:, None]
  dc = np.abs(np.arange(b) - b // 2)[None, :]
  out = tail[np.maximum(dr, dc)]
  return out / np.linalg.norm(out)


def _meta_pulse(a, b):
  """The meta-pulse ``eta`` of Square-l2 (paper, Sec. 3.2), ``[a, b]``, unit norm.

  The first ``a // 2`` rows are the positive nested-rectangle pulse, the
  other ``a - a // 2`` rows its negative: two bumps of opposite sign side by
  side along the first axis.
  """
  top = _nested_rectangles(a // 2, b)
  bottom = -_nested_rectangles(a - a // 2, b)
  eta = np.concatenate([top, bottom], axis=0)
  return eta / np.linalg.norm(eta)


# ----------------------------------------------------------------------------
# Input geometry: images, 1-d signals and flat vectors on one grid.
# ----------------------------------------------------------------------------


class _Grid:
  """``[b, h, w, c]`` view of the input and the window sides per schedule stage.

  * rank 4 ``[b, h, w, c]`` (images, channels last): ``s x s`` windows with
    ``s = round(sqrt(p_sel h w))``, clamped to ``[1, min(h, w) - 1]``.
  * rank 3 ``[b, n, c]`` (signals with channels) and rank 2 ``[b, n]`` (flat
    features, ``c = 1``): the grid is ``1 x n`` and a window is a contiguous
    range of ``L = round(p_sel n)`` positions, clamped to ``[1, n - 1]``
    (covering the same fraction ``p_sel`` as the squares do on images).

  For ``p = 2`` a side is at least 3 and odd, then capped like the others.
  """

  def __init__(self, shape, p, p_init):
    rank = len(shape)
    if rank == 4:
      self.h, self.w, self.c = shape[1], shape[2], shape[3]
      self.one_d = False
    elif rank == 3:
      self.h, self.w, self.c = 1, shape[1], shape[2]
      self.one_d = True
    else:
      self.h, self.w, self.c = 1, shape[1], 1
      self.one_d = True
    self.shape = list(shape[1:])
    self.p = p
    extent = self.w if self.one_d else min(self.h, self.w)
    cap = max(extent - 1, 1)
    sides = []
    for k in range(_NUM_STAGES):
      p_sel = p_init / 2**k
      if self.one_d:
        s = int(round(p_sel * self.w))
      else:
        s = int(round(math.sqrt(p_sel * self.h * self.w)))
      if p == 2.0:
        s = max(s, _L2_MIN_SIDE)
        s += 1 - s % 2
      sides.append(max(1, min(s, cap)))
    self.sides = sides
    self.sides_h = [1 if self.one_d else s for s in sides]
    self.sides_w = sides

  def to_grid(self, t):
    return tf.reshape(t, [-1, self.h, self.w, self.c])

  def from_grid(self, t):
    return tf.reshape(t, [-1] + self.shape)

  def pulse_table(self, dtype):
    """``[stages, 2, S_h, S_w]``: each stage's meta-pulse and its transpose, zero-padded."""
    s_h, s_w = max(self.sides_h), max(self.sides_w)
    table = np.zeros([_NUM_STAGES, 2, s_h, s_w])
    for k, s in enumerate(self.sides):
      if self.one_d:
        eta = _meta_pulse(s, 1).T  # [1, L]: the two bumps along the range.
        table[k, 0, :1, :s] = eta
        table[k, 1, :1, :s] = eta
      else:
        eta = _meta_pulse(s, s)
        table[k, 0, :s, :s] = eta
        table[k, 1, :s, :s] = eta.T
    return tf.constant(table, dtype)

  def l2_init_tiles(self):
    """The l2 start's tiling: pulses, their transposes and block ids, each ``[h, w]``."""
    if self.one_d:
      b_h, b_w = 1, max(self.w // _L2_INIT_BLOCKS, 1)
      eta = _meta_pulse(b_w, 1).T
    else:
      b_h = b_w = max(min(self.h, self.w) // _L2_INIT_BLOCKS, 1)
      eta = _meta_pulse(b_h, b_h)
    n_h, n_w = self.h // b_h, self.w // b_w
    o_h, o_w = (self.h - n_h * b_h) // 2, (self.w - n_w * b_w) // 2
    plain = np.zeros([self.h, self.w])
    transposed = np.zeros([self.h, self.w])
    block = np.zeros([self.h, self.w], np.int32)
    for i in range(n_h):
      for j in range(n_w):
        rows = slice(o_h + i * b_h, o_h + (i + 1) * b_h)
        cols = slice(o_w + j * b_w, o_w + (j + 1) * b_w)
        plain[rows, cols] = eta
        transposed[rows, cols] = eta if self.one_d else eta.T
        block[rows, cols] = i * n_w + j
    return plain, transposed, block, n_h * n_w


def _place(pattern, rows, cols, mask, h, w):
  """``out[b, i, j] = pattern[b, i - rows[b], j - cols[b]]`` on the window, 0 elsewhere."""
  s_h, s_w = pattern.shape[1], pattern.shape[2]
  ri = tf.clip_by_value(tf.range(h)[tf.newaxis, :] - rows[:, tf.newaxis], 0, s_h - 1)
  ci = tf.clip_by_value(tf.range(w)[tf.newaxis, :] - cols[:, tf.newaxis], 0, s_w - 1)
  out = tf.gather(pattern, ri, axis=1, batch_dims=1)       # [b, h, s_w]
  out = tf.gather(out, ci, axis=2, batch_dims=1)            # [b, h, w]
  return tf.where(mask, out, tf.zeros_like(out))


def _random_signs(shape, seed, dtype):
  u = tf.random.stateless_uniform(shape, seed, dtype=tf.float32)
  return tf.where(u < 0.5, -tf.ones(shape, dtype), tf.ones(shape, dtype))


# ----------------------------------------------------------------------------
# Setup and one run.
# ----------------------------------------------------------------------------


class _Setup:
  """Checked inputs, the objective and the grid of one Square Attack call."""

  def __init__(self, f, x, y, epsilon, p, num_queries, p_init, loss, num_restarts, clip,
               seed, training):
    self.in_dtype = tf.as_dtype(getattr(x, "dtype", tf.float32))
    x = _checks.float_input(x, "x")
    p = _checks.exponent(p, "p")
    if p != 2.0 and not math.isinf(p):
      raise ValueError(f"`square_attack` supports p in {{2, inf}}. Received: p={p:g}")
    self.p = p
    self.num_queries = _checks.positive_int(num_queries, "num_queries")
    self.num_restarts = _checks.positive_int(num_restarts, "num_restarts")
    self.p_init = _unit_interval_closed(p_init, "p_init")
    if not isinstance(loss, str) or loss not in SQUARE_LOSSES:
      raise ValueError(f"`loss` must be one of {SQUARE_LOSSES}. Received: loss={loss!r}")
    self.loss = loss
    if x.shape.rank is None or x.shape.rank > 4 or not x.shape[1:].is_fully_defined():
      raise ValueError(f"`x` must have a known shape [batch, n], [batch, n, c] or "
                       f"[batch, h, w, c] (channels last). Received: x with shape={x.shape}")
    eps = _radius(epsilon, "epsilon", x)
    clip = _clip_range(clip)
    x = _check_in_box(x, clip)
    warn_if_vacuous(epsilon, p, clip, x.shape[1:], "square_attack", stacklevel=4)
    self.lo = None if clip is None else tf.cast(clip[0], x.dtype)
    self.hi = None if clip is None else tf.cast(clip[1], x.dtype)
    if y is not None:
      y = _labels(y, x)
      checks = _same_batch(x, y, "y")
      if checks:
        with tf.control_dependencies(checks):
          x = tf.identity(x)
    self.seed = seed_tensor(seed)
    self.fn = jacobian.as_logits_fn(f, training=training)
    self.x = x
    self.grid = _Grid(x.shape.as_list(), p, self.p_init)
    self.batch = tf.shape(x)[0]
    self.eps = tf.broadcast_to(tf.reshape(eps, [-1]), [self.batch])
    self.logits_clean = tf.stop_gradient(self.fn(x))
    _check_label_width(y, self.logits_clean)
    pred = tf.argmax(self.logits_clean, axis=-1, output_type=tf.int32)
    if y is None:
      y = pred
    self.y = y
    labels = (tf.argmax(y, axis=-1, output_type=tf.int32) if y.shape.rank == 2
              else tf.cast(y, tf.int32))
    self.clean_broken = tf.not_equal(pred, labels)

  def box(self, z):
    return z if self.lo is None else tf.clip_by_value(z, self.lo, self.hi)

  def objective(self, x_grid):
    """``(loss, margin)`` per example at the grid batch ``x_grid``; both float32."""
    logits = self.fn(self.grid.from_grid(x_grid))
    _check_label_width(self.y, logits)
    m = tf.cast(margin(logits, self.y), tf.float32)
    if self.loss == "margin":
      return m, m
    return -tf.cast(crossentropy_loss(logits, None, self.y), tf.float32), m


def _l2_start(s, xg, seed):
  g = s.grid
  plain, transposed, block, n_blocks = g.l2_init_tiles()
  dtype = xg.dtype
  flip = tf.random.stateless_uniform([s.batch, n_blocks], fold_seed(seed, 0)) < 0.5
  signs = _random_signs([s.batch, n_blocks, g.c], fold_seed(seed, 1), dtype)
  block = tf.constant(block)
  pulse = tf.where(tf.gather(flip, block, axis=1),                       # [b, h, w]
                   tf.constant(transposed, dtype), tf.constant(plain, dtype))
  d = pulse[..., tf.newaxis] * tf.gather(signs, block, axis=1)          # [b, h, w, c]
  return _rescale_l2(d, s.eps)


def _rescale_l2(d, eps):
  """``eps * d / ||d||_2`` per example (the reference's renormalisation)."""
  norm = tf.sqrt(tf.reduce_sum(tf.square(d), axis=[1, 2, 3]))
  scale = tf.cast(eps, d.dtype) / (norm + 1e-12)
  return d * scale[:, tf.newaxis, tf.newaxis, tf.newaxis]


def _square_run(s, seed, history=False):
  """One run of Square Attack from its structured start.

  Returns ``(x_best, loss_best, broken)`` per example (``x_best`` shaped like
  ``s.x``) and, with ``history``, the ``[iterations + 1, batch]`` best losses
  after each query (a test hook).
  """
  g = s.grid
  xg = g.to_grid(s.x)
  dtype = xg.dtype
  eps = tf.cast(s.eps, dtype)
  eps_b = eps[:, tf.newaxis, tf.newaxis, tf.newaxis]
  b = s.batch
  linf = math.isinf(s.p)
  sides_h = tf.constant(g.sides_h, tf.int32)
  sides_w = tf.constant(g.sides_w, tf.int32)
  pulses = None if linf else g.pulse_table(dtype)

  # The start. l-inf: vertical stripes, delta = +-eps constant along each
  # column (and channel); l2: the tiling of meta-pulses with random signs.
  # l-inf keeps the unclipped delta (every entry +-eps), l2 the clipped one.
  if linf:
    d0 = eps_b * _random_signs([b, 1, g.w, g.c], fold_seed(seed, 0), dtype)
    d0 = tf.broadcast_to(d0, tf.shape(xg))
  else:
    d0 = s.box(xg + _l2_start(s, xg, fold_seed(seed, 0))) - xg
  loss0, margin0 = s.objective(s.box(xg + d0))
  active0 = tf.logical_and(tf.logical_not(s.clean_broken), margin0 >= 0)

  def linf_candidate(d, mask, seed_i):
    sigma = _random_signs([b, 1, 1, g.c], fold_seed(seed_i, 2), dtype)
    # A window already equal to eps * sigma would not change: flip sigma
    # there (the original implementation redraws until the window changes).
    same = tf.reduce_all(tf.logical_or(tf.logical_not(mask), tf.equal(d, eps_b * sigma)),
                         axis=[1, 2, 3], keepdims=True)
    sigma = tf.where(same, -sigma, sigma)
    return tf.where(mask, eps_b * sigma, d)

  def l2_candidate(d, rows, cols, mask, k, seed_i, sh, sw):
    # Move the mass of the windows W1 u W2 into W1, per channel, along the
    # old direction of W1 plus a new meta-pulse; empty W2 \ W1:
    #   ||delta_new||^2 = ||delta||^2 - ||delta_{W1 u W2}||^2 + sum_c r_c^2 = eps^2.
    rows2, cols2 = square_window_positions(fold_seed(seed_i, 3), b, g.h, g.w, (sh, sw))
    mask2 = square_window_mask(rows2, cols2, (sh, sw), g.h, g.w)[..., tf.newaxis]
    union = tf.logical_or(mask, mask2)
    zero = tf.zeros_like(d)
    flip = tf.cast(tf.random.stateless_uniform([b], fold_seed(seed_i, 4)) < 0.5, tf.int32)
    pattern = tf.gather(tf.gather(pulses, k), flip)                    # [b, S_h, S_w]
    eta = _place(pattern, rows, cols, mask[..., 0], g.h, g.w)[..., tf.newaxis]
    sigma = _random_signs([b, 1, 1, g.c], fold_seed(seed_i, 2), dtype)
    in_w1 = tf.where(mask, d, zero)
    norm_w1 = tf.sqrt(tf.reduce_sum(tf.square(in_w1), axis=[1, 2], keepdims=True))  # [b,1,1,c]
    new = eta * sigma + in_w1 / (norm_w1 + 1e-12)
    norm_new = tf.sqrt(tf.reduce_sum(tf.square(new), axis=[1, 2], keepdims=True))
    mass_union = tf.reduce_sum(tf.square(tf.where(union, d, zero)), axis=[1, 2], keepdims=True)
    slack = tf.maximum(tf.square(eps_b) - tf.reduce_sum(tf.square(d), axis=[1, 2, 3],
                                                        keepdims=True), 0.0)
    r = tf.sqrt(slack / g.c + mass_union)
    new = new / (norm_new + 1e-12) * r
    d_new = tf.where(mask, new, tf.where(mask2, zero, d))
    return s.box(xg + _rescale_l2(d_new, eps)) - xg

  def body(i, d, loss_best, margin_best, active, hist):
    k = _stage(i, s.num_queries)
    sh, sw = tf.gather(sides_h, k), tf.gather(sides_w, k)
    seed_i = fold_seed(seed, i + 1)
    rows, cols = square_window_positions(fold_seed(seed_i, 0), b, g.h, g.w, (sh, sw))
    mask = square_window_mask(rows, cols, (sh, sw), g.h, g.w)[..., tf.newaxis]
    if linf:
      d_new = linf_candidate(d, mask, seed_i)
    else:
      d_new = l2_candidate(d, rows, cols, mask, k, seed_i, sh, sw)
    loss_new, margin_new = s.objective(s.box(xg + d_new))
    accept = tf.logical_and(active, tf.logical_or(loss_new < loss_best, margin_new < 0))
    d = tf.where(accept[:, tf.newaxis, tf.newaxis, tf.newaxis], d_new, d)
    loss_best = tf.where(accept, loss_new, loss_best)
    margin_best = tf.where(accept, margin_new, margin_best)
    active = tf.logical_and(active, margin_best >= 0)
    if history:
      hist = hist.write(i + 1, loss_best)
    return i + 1, d, loss_best, margin_best, active, hist

  hist = tf.constant(0)  # A placeholder loop variable without `history`.
  if history:
    hist = tf.TensorArray(tf.float32, size=0, dynamic_size=True, element_shape=[None])
    hist = hist.write(0, loss0)
  init = (tf.constant(0), d0, loss0, margin0, active0, hist)
  _, d, loss_best, margin_best, _, hist = tf.while_loop(
      lambda i, _, __, ___, active, ____: tf.logical_and(i < s.num_queries,
                                                         tf.reduce_any(active)),
      body, init, maximum_iterations=s.num_queries)
  x_best = g.from_grid(s.box(xg + d))
  broken = tf.logical_or(s.clean_broken, margin_best < 0)
  if history:
    return x_best, loss_best, broken, hist.stack()
  return x_best, loss_best, broken


# ----------------------------------------------------------------------------
# The attack.
# ----------------------------------------------------------------------------


@tf.autograph.experimental.do_not_convert
@logits_view.accepts_views(batches_itself=True)
def square_attack(f,
                  x,
                  y=None,
                  *,
                  epsilon,
                  p=_INF,
                  num_queries=5000,
                  p_init=0.8,
                  loss="margin",
                  num_restarts=1,
                  clip=None,
                  seed=None,
                  training=False):
  """Square Attack (Andriushchenko et al. 2020): random search with square windows.

  Per example, from a structured start ``delta_0``, each query changes the
  current best perturbation ``delta`` on a random window ``W`` and keeps the
  change only if it lowers the loss ``L`` (or misclassifies)::

    delta_new = delta  changed on W,      x_new = clip(x + delta_new)
    delta    <- delta_new   if  L(f(x_new), y) < L(f(x + delta), y)  or  x_new is misclassified

  with ``L = margin = z_y - max_{j != y} z_j``
  (`keras_opnorm.attacks.losses.margin`) or ``L = -CE(y, z)``. The window
  side follows `square_schedule`: ``s = round(sqrt(p_sel h w))`` pixels
  (clamped to ``[1, min(h, w) - 1]``) with ``p_sel = p_init / 2^k`` halved at
  iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000 and 8000 of a budget
  rescaled to 10000; its position is uniform (`square_window_positions`),
  drawn per example and per query.

  * ``p = inf``: ``delta_0`` is "vertical stripes", ``+-eps`` drawn per
    column and channel (constant along the height). A query sets each channel
    of the window to ``+eps`` or ``-eps`` (one random sign per channel); a
    proposal that would leave the window unchanged is flipped. Every entry of
    ``delta`` is ``+-eps`` (before clipping to ``clip``).
  * ``p = 2``: ``delta_0`` tiles the image with about 5 x 5 "meta-pulses"
    ``eta`` (two nested-rectangle bumps of opposite sign, randomly transposed,
    random sign per block and channel), scaled to ``||delta_0||_2 = eps``. A
    query draws two windows ``W1``, ``W2`` (side at least 3, odd) and, per
    channel, moves the mass of ``W1 u W2`` into ``W1`` along
    ``eta sigma + delta_W1 / ||delta_W1||``, plus the budget lost to
    clipping, and empties ``W2 \\ W1``, so that ``||delta_new||_2 = eps``
    (then renormalised to ``eps`` and clipped, as in the reference).

  Several inputs (a dict or list ``x``, see `keras_opnorm.logits_view`):
  exactly one input may be perturbed (Square's windows live on one image);
  it is attacked in its own shape with the other inputs held fixed, and
  ``x_adv`` has the structure of ``x``. The same holds for a model bound to
  a batch's fixed inputs called on the packed ``z`` (as `auto_attack` does):
  ``z`` is attacked in the perturbed input's shape.

  Inputs: images ``[b, h, w, c]`` (channels last) get ``s x s`` squares.
  Flat inputs ``[b, n]`` (tabular data, MLPs) and signals ``[b, n, c]`` live
  on a ``1 x n`` grid: a window is a contiguous index range of length
  ``round(p_sel n)`` (clamped to ``[1, n - 1]``; for ``p = 2`` at least 3
  and odd), which changes the same fraction ``p_sel`` of the input as a
  square does on an image; the l-inf start draws an independent sign per
  entry, the l2 start tiles the range with 5 one-dimensional pulses.

  The batch shape is fixed: examples that are misclassified (``margin < 0``)
  are frozen (they keep their point and stop accepting) and the loop stops
  once every example is, or after ``num_queries`` queries. An example that
  is broken after ``t`` queries has cost ``1 + t`` queries per run (the start
  included), plus one clean forward pass per call. Examples misclassified at
  ``x`` are returned unchanged. With ``num_restarts > 1`` the runs differ in
  their random seeds; per example the first misclassified point is kept, else
  the lowest loss, and restarts stop once every example is broken. With
  ``loss='crossentropy'`` a misclassified proposal is accepted even if its
  ``-CE`` is not lower (as in the reference), so the best loss decreases
  monotonically until the example breaks; with ``'margin'`` the two rules
  coincide.

  Differences from the reference implementation (fra31/auto-attack): window
  positions and signs are drawn per example (the reference draws one window
  for the whole batch), positions include the last row and column, the l2
  mass is moved per channel, the schedule's rescaled iteration is computed in
  integers, and an example counts as broken only when ``margin < 0``
  strictly (a tie may still be classified correctly by ``argmax``).

  Run it inside ``tf.function`` (optionally ``jit_compile=True``) for speed:
  eager ``tf.while_loop`` bodies run op by op.

  Args:
    f: a Keras model (called with ``training=training``) or a callable from a
      batch to logits ``[batch, d]``, ``d >= 2``. Only its outputs are used.
    x: float tensor ``[batch, h, w, c]``, ``[batch, n, c]`` or ``[batch, n]``
      with known non-batch dimensions; float16/bfloat16 inputs are computed in
      float32 and the result is cast back.
    y: integer labels ``[batch]`` or one-hot labels ``[batch, d]``, or None
      to attack the model's own clean predictions. Defaults to `None`.
    epsilon: the radius: a positive finite number, or a scalar / ``[batch]``
      tensor.
    p: the norm of the ball: ``inf`` or ``2``. Defaults to `inf`.
    num_queries: the query budget of each run, > 0. Defaults to `5000`.
    p_init: the initial fraction ``p_sel`` of pixels changed, in ``(0, 1]``.
      Defaults to `0.8`.
    loss: ``'margin'`` or ``'crossentropy'``. Defaults to `'margin'`.
    num_restarts: number of runs, > 0. Defaults to `1`.
    clip: None or ``(lo, hi)``, the valid input range (numbers or tensors
      broadcastable to ``x``); ``x`` should lie in it. Defaults to `None`.
    seed: None or a non-negative integer: the same seed gives the same
      result. Defaults to `None`.
    training: the ``training`` flag for Keras models. Defaults to `False`.

  Returns:
    ``x_adv``, with the shape and dtype of ``x``, in the eps-ball around
    ``x`` (``||x_adv - x||_p <= eps`` up to rounding) and in ``clip``.

  Raises:
    ValueError: a NaN or inf in ``x`` (naming how many examples and which;
      in a graph an InvalidArgumentError, under XLA NaN results for them).
    ValueError: ``x`` outside ``clip`` (beyond 1e-6 * (hi - lo)); labels
      that are not integers or not in ``[0, num_classes)``. Warns with
      `keras_opnorm.VacuousThreatModelWarning` when ``epsilon`` covers the
      ``clip`` box (``epsilon >= ||(hi - lo) / 2||_p``).
    ValueError: for ``p`` not in ``{2, inf}``, ``num_queries <= 0``,
      ``num_restarts <= 0``, ``p_init`` outside ``(0, 1]``, an unknown loss,
      an input of rank > 4 or with unknown non-batch dimensions, a bad
      ``epsilon``, ``clip`` or ``seed``, labels whose batch differs from
      ``x``.
    TypeError: for integer ``x`` or a non-callable ``f``.

  Example:

  >>> f = lambda x: tf.stack([x[:, 0] + x[:, 1], -x[:, 0] - x[:, 1]], axis=1)
  >>> x_adv = square_attack(f, tf.constant([[0.25, 0.25]]), epsilon=0.5,
  ...                       num_queries=20, seed=0)
  >>> x_adv.numpy().tolist()  # the vertex x - eps (1, 1): margin 2 (0.5 - 1) < 0
  [[-0.25, -0.25]]
  """
  kwargs = dict(epsilon=epsilon, p=p, num_queries=num_queries, p_init=p_init, loss=loss,
                num_restarts=num_restarts, clip=clip, seed=seed, training=training)
  if logits_view.is_structured(x):
    return _square_structured(f, x, y, **kwargs)
  if isinstance(f, logits_view._PackedModel):  # pylint: disable=protected-access
    shaped = _square_packed(f, x, y, **kwargs)
    if shaped is not None:
      return shaped
  s = _Setup(f, x, y, epsilon, p, num_queries, p_init, loss, num_restarts, clip, seed,
             training)
  if s.num_restarts == 1:
    x_adv, _, _ = _square_run(s, fold_seed(s.seed, 0))
    return tf.cast(tf.where(_expand(s.clean_broken, s.x), s.x, x_adv), s.in_dtype)

  def body(r, best_x, best_broken, best_loss):
    x_r, loss_r, broken_r = _square_run(s, fold_seed(s.seed, r))
    take = tf.logical_and(tf.logical_not(best_broken),
                          tf.logical_or(broken_r, loss_r < best_loss))
    return (r + 1, tf.where(_expand(take, s.x), x_r, best_x),
            tf.logical_or(best_broken, broken_r), tf.where(take, loss_r, best_loss))

  init = (tf.constant(0), s.x, s.clean_broken,
          tf.fill([s.batch], tf.constant(_INF, tf.float32)))
  _, x_adv, _, _ = tf.while_loop(
      lambda r, _, broken, __: tf.logical_and(
          r < s.num_restarts, tf.reduce_any(tf.logical_not(broken))),
      body, init, maximum_iterations=s.num_restarts)
  return tf.cast(x_adv, s.in_dtype)


def _one_perturbed_input(packing, name="x"):
  """The key of the only perturbed input of ``packing``; else a NotImplementedError."""
  if len(packing.perturbed) != 1:
    raise NotImplementedError(
        f"`square_attack` perturbs one input of a model with several inputs (its square "
        f"windows live on one image-shaped input); `{name}` has {len(packing.perturbed)} "
        f"perturbed inputs {list(packing.perturbed)}. Name one with "
        f"`keras_opnorm.LogitsView(model, inputs=...)`. Received: {name} of type "
        f"{type(packing.structure).__name__}")
  return packing.perturbed[0]


def _square_structured(f, x, y, *, training, **kwargs):
  """Square on the only perturbed input of a structured ``x``, in its own shape."""
  view = logits_view.as_view(f)
  packing = logits_view.Packing(x, view.inputs, name="x")
  key = _one_perturbed_input(packing)
  bound = view.bind_fixed(packing, packing.fixed)
  image = tf.convert_to_tensor(x[key])

  def fn(t):
    return bound(tf.reshape(t, [tf.shape(t)[0], -1]), training=training)

  x_adv = square_attack(fn, image, y, training=training, **kwargs)
  # pylint: disable-next=protected-access
  return packing._assemble({key: x_adv}, lambda k: packing.fixed[k])


def _square_packed(f, z, y, *, clip, training, **kwargs):
  """Square on a packed ``z`` reshaped to its only perturbed input's shape, or None.

  None (attack ``z`` as a flat input) where several inputs are perturbed,
  the input is flat already, or ``clip`` has per-coordinate bounds.
  """
  packing = f.packing
  if len(packing.perturbed) != 1:
    return None
  shape = packing.shapes[packing.perturbed[0]]
  z = tf.convert_to_tensor(z)
  if len(shape) < 2 or z.shape.rank != 2:
    return None
  if clip is not None and any(tf.convert_to_tensor(b).shape.rank not in (0, None)
                              and tf.convert_to_tensor(b).shape.num_elements() != 1
                              for b in clip):
    return None
  image = tf.reshape(z, [tf.shape(z)[0]] + shape)

  def fn(t):
    return f(tf.reshape(t, [tf.shape(t)[0], -1]), training=training)

  x_adv = square_attack(fn, image, y, clip=clip, training=training, **kwargs)
  return tf.reshape(x_adv, tf.shape(z))


def _expand(v, x):
  return tf.reshape(v, [-1] + [1] * (x.shape.rank - 1))
