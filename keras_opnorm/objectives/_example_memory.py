"""Per-example memory across epochs: warm starts keyed by the example's content.

The warm-started objectives (``OperatorNormRegularization(warm_start=True)``,
``AdversarialTraining(warm_start=True)``) continue, for each training
example, the iteration they ran on it in the previous epoch: the (p,q) power
method's ``v`` (the persistent power-iteration vector of Miyato et al.'s
spectral normalisation, kept per example instead of per layer), or the PGD
perturbation ``delta`` (the persistent adversarial perturbations of ATTA,
Zheng et al. 2020). This module holds that state.

Design. The train step sees only the batch ``x``: ``model.fit(x, y,
shuffle=True)`` and ``tf.data`` pipelines pass no example index, and asking
users for one would change their pipelines. So examples are recognised by
their content:

* fingerprint: two 32-bit hashes of the example's bits (one 64-bit key),
  each ``fmix32(sum_i w_i * m(b_i) mod 2^32)`` with ``b_i`` the input's
  ``i``-th value bitcast to int32, ``m(b) = b xor (b >>> 16)`` (so that the
  low bits of the key depend on every bit of the input: data on a coarse
  grid, e.g. k/16, have all-zero low mantissa bits), ``w_i`` fixed odd int32
  weights drawn from a seed, and ``fmix32`` MurmurHash3's finaliser. All of
  it is integer arithmetic with wrap-around: exact, order-independent
  (integer addition is associative, unlike a float dot product), hence the
  same on CPU, GPU and under XLA whatever the reduction order. ``m``,
  multiplication by an odd number and ``fmix32`` are bijections, so a change
  of one input value always changes both hashes; two different examples share
  a key with probability about ``2^-64``.
* a direct-mapped cache of ``capacity`` slots: ``slot = key_1 mod capacity``;
  per slot the stored key and the stored vector (``[capacity, n]``
  non-trainable variables). Lookup gathers the slots of the batch; an
  example hits iff the stored key is its own. A miss (an example not seen
  yet, an input changed by augmentation, a slot taken by another example
  since) falls back to the objective's cold start (a random direction, a
  random point of the ball). Update scatters the new vectors and keys. Two
  examples of one batch on the same slot: the later one is written, the
  other's row goes to a spare row that is never read, so a key and a vector
  always come from the same example. A collision therefore evicts: the
  evicted example starts cold at its next visit, never from another
  example's vector.
* hit rate: with ``N`` distinct training examples the slot of an example
  survives the ``N - 1`` others of one epoch with probability
  ``(1 - 1/capacity)^(N - 1) ~ exp(-N / capacity)`` (e.g. 0.98 for the
  1437 digits at the default 65536 slots, 0.78 at ``capacity = 4 N``, 0.37
  at ``capacity = N``).

Memory: ``(capacity + 1) * (n * 4 + 12)`` bytes (float32 vectors of ``n``
input values, three int32 per key: two hashes and an occupied flag), checked
against ``max_bytes`` before anything is allocated.

State: the variables are the objective's (its ``_state_vars``), never the
model's: ``model.save`` / ``export`` are unchanged, and
``ObjectiveCallback(backup_dir=...)`` writes and restores them with the rest
of the objective's state. One replica only: under a tf.distribute strategy
with several replicas each would scatter into its own copy of a mirrored
variable and the copies would silently diverge, so that raises.

References: Zheng, Zhang, Zhang, Wang & Hou, "Efficient Adversarial Training
with Transferable Adversarial Examples", CVPR 2020
(https://arxiv.org/abs/1912.11969); Miyato, Kataoka, Koyama & Yoshida,
"Spectral Normalization for Generative Adversarial Networks", ICLR 2018
(https://arxiv.org/abs/1802.05957).
"""

import numbers

import numpy as np
import tensorflow as tf

__all__ = [
    "DEFAULT_CAPACITY",
    "DEFAULT_MAX_BYTES",
    "ExampleMemory",
    "check_capacity",
    "check_max_bytes",
    "check_single_replica",
    "fingerprint",
    "memory_bytes",
    "slots",
]

DEFAULT_CAPACITY = 65536
DEFAULT_MAX_BYTES = 2**30  # 1 GiB.
_SEED = 0x5EED


def check_capacity(value, name="warm_start_capacity"):
  """``value`` as an int > 0 (None: `DEFAULT_CAPACITY`), else ValueError."""
  if value is None:
    return DEFAULT_CAPACITY
  if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Integral, np.integer)):
    raise ValueError(f"`{name}` must be a positive integer (a number of slots) or None. "
                     f"Received: {name}={value!r}")
  if value <= 0 or value >= 2**31 - 1:
    raise ValueError(f"`{name}` must be an integer in [1, 2^31 - 2]. Received: {name}={value}")
  return int(value)


def check_max_bytes(value, name="warm_start_max_bytes"):
  """``value`` as an int > 0 (a number of bytes), else ValueError."""
  if isinstance(value, (bool, np.bool_)) or not isinstance(
      value, (numbers.Integral, np.integer, float)) or isinstance(value, float) and (
          not np.isfinite(value) or value != int(value)):
    raise ValueError(f"`{name}` must be a positive integer (bytes). Received: {name}={value!r}")
  if value <= 0:
    raise ValueError(f"`{name}` must be a positive integer (bytes). Received: {name}={value!r}")
  return int(value)


def memory_bytes(capacity, n):
  """Bytes of a memory of ``capacity`` slots for ``n`` float32 values each.

  ``(capacity + 1) * (4 n + 12)``: the vectors, the keys (two int32 hashes
  and an int32 occupied flag) and one spare row.

  >>> memory_bytes(65536, 64)
  17563916
  """
  return (int(capacity) + 1) * (4 * int(n) + 12)


def check_single_replica(owner):
  """Raises inside a tf.distribute strategy with more than one replica."""
  strategy = tf.distribute.get_strategy()
  replicas = strategy.num_replicas_in_sync
  if replicas > 1:
    raise ValueError(
        f"{owner}(warm_start=True) keeps one memory of the training examples; "
        f"under a tf.distribute strategy with {replicas} replicas each replica "
        f"would write its own copy of it and the copies would silently "
        f"diverge. Train on one replica, or use warm_start=False. Received: "
        f"warm_start=True under {type(strategy).__name__} with "
        f"num_replicas_in_sync={replicas}")


def _weights(n, stream):
  """``n`` fixed odd int32 weights (hash ``stream`` 0 or 1), as a constant."""
  rng = np.random.RandomState(_SEED + stream)
  w = rng.randint(0, 2**32, size=n, dtype=np.uint64) | np.uint64(1)
  return w.astype(np.uint32).view(np.int32)


def _logical_shift(h, k):
  """``h >>> k`` of int32 ``h`` (zero fill), from the arithmetic shift."""
  return tf.bitwise.bitwise_and(tf.bitwise.right_shift(h, k), tf.constant((1 << (32 - k)) - 1, tf.int32))


def _fmix32(h):
  """MurmurHash3's 32-bit finaliser (a bijection of int32, wrap-around)."""
  h = tf.bitwise.bitwise_xor(h, _logical_shift(h, 16))
  h = h * tf.constant(np.uint32(0x85EBCA6B).view(np.int32))
  h = tf.bitwise.bitwise_xor(h, _logical_shift(h, 13))
  h = h * tf.constant(np.uint32(0xC2B2AE35).view(np.int32))
  return tf.bitwise.bitwise_xor(h, _logical_shift(h, 16))


def _input_bits(x):
  """``[batch, m]`` int32: the bits of each example's values."""
  x = tf.convert_to_tensor(x)
  batch = tf.shape(x)[0]
  if x.dtype in (tf.float32, tf.int32):
    bits = tf.bitcast(x, tf.int32) if x.dtype == tf.float32 else x
  elif x.dtype in (tf.float64, tf.int64):
    bits = tf.bitcast(x, tf.int32)  # Two int32 per value.
  elif x.dtype in (tf.float16, tf.bfloat16):
    bits = tf.cast(tf.bitcast(x, tf.int16), tf.int32)
  else:
    raise ValueError(f"`x` must be a floating-point tensor. Received: x with dtype={x.dtype.name}")
  m = int(x.shape[1:].num_elements()) * (2 if x.dtype.size == 8 else 1)
  return tf.reshape(bits, [batch, m])


def fingerprint(x):
  """The 64-bit content key of each example: ``[batch, 2]`` int32.

  ``key_j = fmix32(sum_i w_ji * m(b_i) mod 2^32)``, ``j = 0, 1``, with ``b_i``
  the bits of the example's ``i``-th value as int32, ``m(b) = b xor (b >>>
  16)``, ``w_ji`` fixed odd weights (see the module docstring). Exact integer
  arithmetic: equal inputs give equal keys on every device and under XLA.

  Args:
    x: a float tensor ``[batch, ...]`` with a static feature shape.

  Returns:
    An int32 tensor ``[batch, 2]``.

  Raises:
    ValueError: for a non-floating ``x`` or a dynamic feature shape.
  """
  x = tf.convert_to_tensor(x)
  if not x.shape[1:].is_fully_defined():
    raise ValueError(f"`x` must have a static feature shape. Received: x with shape={x.shape}")
  bits = _input_bits(x)
  m = int(bits.shape[-1])
  mixed = tf.bitwise.bitwise_xor(bits, _logical_shift(bits, 16))
  keys = [_fmix32(tf.reduce_sum(mixed * tf.constant(_weights(m, j)), axis=-1)) for j in (0, 1)]
  return tf.stack(keys, axis=-1)


def slots(key, capacity):
  """``[batch]`` int32 slot of each key: ``key_0 mod capacity`` (in [0, capacity))."""
  return tf.math.floormod(key[:, 0], tf.constant(capacity, tf.int32))


def _last_writer(slot):
  """``[batch]`` bool: the example is the last of its batch on its slot."""
  same = tf.equal(slot[:, None], slot[None, :])
  later = tf.range(tf.shape(slot)[0])[None, :] > tf.range(tf.shape(slot)[0])[:, None]
  return tf.logical_not(tf.reduce_any(tf.logical_and(same, later), axis=1))


class ExampleMemory:
  """A direct-mapped cache of one float32 vector per training example.

  See the module docstring for the design. ``lookup(key)`` returns the stored
  vectors and which examples hit; ``update(key, values)`` writes them. Both
  run under ``tf.function`` and ``jit_compile=True``.

  Args:
    feature_shape: the shape of one example (the input without its batch
      dimension); the stored vectors have this shape.
    dtype: the input dtype the memory was built for (the vectors are stored
      as float32).
    capacity: the number of slots. Defaults to `DEFAULT_CAPACITY`.
    max_bytes: the bound on `memory_bytes`. Defaults to `DEFAULT_MAX_BYTES`.
    name: the variables' name prefix. Defaults to `"memory"`.

  Raises:
    ValueError: for a bad ``capacity`` or ``max_bytes``, or a memory larger
      than ``max_bytes`` (before allocating).
  """

  def __init__(self, feature_shape, dtype, *, capacity=None, max_bytes=DEFAULT_MAX_BYTES,
               name="memory"):
    self.capacity = check_capacity(capacity)
    self.max_bytes = check_max_bytes(max_bytes)
    self.feature_shape = tf.TensorShape(feature_shape)
    if not self.feature_shape.is_fully_defined():
      raise ValueError(f"`feature_shape` must be static. Received: feature_shape={feature_shape}")
    self.dtype = tf.as_dtype(dtype)
    self.n = int(self.feature_shape.num_elements())
    needed = memory_bytes(self.capacity, self.n)
    if needed > self.max_bytes:
      raise ValueError(
          f"The warm-start memory of {self.capacity} slots for inputs of "
          f"{self.n} values needs (capacity + 1) * (4 n + 12) = {needed} bytes, "
          f"more than `warm_start_max_bytes`={self.max_bytes}. Pass a smaller "
          f"`warm_start_capacity` (the hit rate is about exp(-num_examples / "
          f"capacity)) or raise `warm_start_max_bytes`. Received: "
          f"warm_start_capacity={self.capacity}, warm_start_max_bytes={self.max_bytes}")
    rows = self.capacity + 1  # The last row is the spare (written, never read).
    with tf.init_scope():
      self.keys = tf.Variable(tf.zeros([rows, 3], tf.int32), trainable=False,
                              name=f"{name}_keys")
      self.values = tf.Variable(tf.zeros([rows, self.n], tf.float32), trainable=False,
                                name=f"{name}_values")

  @property
  def variables(self):
    return [self.keys, self.values]

  def check_input(self, x, owner):
    """Raises if ``x``'s feature shape or dtype is not the memory's."""
    if x.shape[1:] != self.feature_shape or x.dtype != self.dtype:
      raise ValueError(
          f"{owner}(warm_start=True) built its memory of the training "
          f"examples for inputs of shape [batch] + {self.feature_shape.as_list()} "
          f"and dtype {self.dtype.name}; the inputs changed (a new dataset or "
          f"model needs a new objective). Received: x with shape={x.shape} and "
          f"dtype={x.dtype.name}")

  def lookup(self, key):
    """``(values, hit)``: ``[batch, *feature_shape]`` float32 and ``[batch]`` bool.

    ``values`` is the stored vector where ``hit``, else 0.
    """
    slot = slots(key, self.capacity)
    stored = tf.gather(self.keys, slot)
    hit = tf.logical_and(tf.reduce_all(tf.equal(stored[:, :2], key), axis=-1),
                         tf.equal(stored[:, 2], 1))
    values = tf.gather(self.values, slot)
    values = tf.where(hit[:, None], values, tf.zeros_like(values))
    return tf.reshape(values, tf.concat([[-1], self.feature_shape.as_list()], 0)), hit

  def update(self, key, values):
    """Writes ``values`` (``[batch, *feature_shape]``) under ``key``; returns the op."""
    slot = slots(key, self.capacity)
    slot = tf.where(_last_writer(slot), slot, tf.fill(tf.shape(slot), self.capacity))
    values = tf.reshape(tf.cast(values, tf.float32), [-1, self.n])
    rows = tf.concat([key, tf.ones_like(key[:, :1])], axis=-1)
    write_keys = self.keys.scatter_update(tf.IndexedSlices(rows, slot))
    write_values = self.values.scatter_update(tf.IndexedSlices(values, slot))
    return tf.group(write_keys, write_values)


def feature_shape_of(model):
  """The static ``(shape, dtype)`` of a single-input model's examples, or None."""
  inputs = getattr(model, "inputs", None)
  try:
    if not inputs or len(inputs) != 1:
      return None
  except TypeError:
    return None
  spec = inputs[0]
  shape = tf.TensorShape(spec.shape)[1:]
  if not shape.is_fully_defined():
    return None
  return shape, tf.as_dtype(getattr(spec, "dtype", "float32"))


def check_arguments(warm_start, capacity, max_bytes):
  """The checked ``(warm_start, capacity, max_bytes)`` of a warm-started objective."""
  return bool(warm_start), check_capacity(capacity), check_max_bytes(max_bytes)


def build_for(objective, model):
  """Creates ``objective``'s memory in ``_build_state`` where the input is known.

  The memory is created now when ``model`` has one input of static shape and
  the objective its default view (so that a backup restores into it);
  otherwise at the first step, from the batch (see `memory_for`).
  """
  objective._memory = None  # pylint: disable=protected-access
  if not objective.warm_start:
    return
  check_single_replica(type(objective).__name__)
  spec = feature_shape_of(model) if objective._default_view else None  # pylint: disable=protected-access
  if spec is not None:
    _create(objective, *spec)


def _create(objective, shape, dtype):
  memory = ExampleMemory(shape, dtype, capacity=objective.warm_start_capacity,
                         max_bytes=objective.warm_start_max_bytes,
                         name=f"{objective.name}_memory")
  objective._memory = memory  # pylint: disable=protected-access
  objective._state_vars.extend(memory.variables)  # pylint: disable=protected-access
  return memory


def memory_for(objective, x):
  """``objective``'s memory for the batch ``x`` (created on first use), checked."""
  check_single_replica(type(objective).__name__)
  memory = getattr(objective, "_memory", None)
  if memory is None:
    if not x.shape[1:].is_fully_defined():
      raise ValueError(
          f"{type(objective).__name__}(warm_start=True) needs inputs of a "
          f"static feature shape. Received: x with shape={x.shape}")
    memory = _create(objective, x.shape[1:], x.dtype)
  memory.check_input(x, type(objective).__name__)
  return memory
