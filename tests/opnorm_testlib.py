"""numpy references and small models shared by the core tests.

Used by test_operator_norm.py, test_singular_values.py, test_attacks.py and
test_theorem.py. Nothing here calls the library: references are numpy or
``tf.GradientTape.batch_jacobian``.
"""

import math

import keras
import numpy as np
import tensorflow as tf

INF = float("inf")


def np_dual(p):
  """The Hoelder conjugate ``p*`` (``1/p + 1/p* = 1``)."""
  if p == 1.0:
    return INF
  if math.isinf(p):
    return 1.0
  return p / (p - 1.0)


def np_lp_norm(x, p):
  """Per-example lp norm over all non-batch axes, in float64."""
  return np.linalg.norm(np.asarray(x, np.float64).reshape(len(x), -1), ord=p, axis=1)


def np_steepest(g, p):
  """s_p(g) per row: argmax_{||v||_p <= 1} <v, g> (Hoelder's equality case)."""
  g = np.asarray(g, np.float64)
  if math.isinf(p):
    return np.sign(g)
  if p == 1.0:
    out = np.zeros_like(g)
    rows = np.arange(len(g))
    idx = np.argmax(np.abs(g), axis=1)
    out[rows, idx] = np.sign(g[rows, idx])
    return out
  w = np.sign(g) * np.abs(g) ** (np_dual(p) - 1.0)
  return w / np_lp_norm(w, p)[:, None]


def linear(w, b=None):
  """f(x) = x W^T + b, whose Jacobian is W (d x n) at every x."""
  wt = tf.constant(np.asarray(w, np.float32).T)
  bias = tf.constant(np.zeros(w.shape[0], np.float32) if b is None else np.asarray(b, np.float32))
  return lambda x: tf.matmul(x, wt) + bias


def with_singular_values(rng, s, d, n):
  """A d x n matrix with the given singular values and random vectors."""
  a = np.linalg.qr(rng.normal(size=(d, d)))[0][:, :len(s)]
  b = np.linalg.qr(rng.normal(size=(n, n)))[0][:, :len(s)]
  return (a * np.asarray(s)) @ b.T


def exact_jacobian(f, x):
  """[batch, d, n] by batch_jacobian (not the library's products)."""
  x = tf.convert_to_tensor(x)
  with tf.GradientTape() as tape:
    tape.watch(x)
    y = f(x)
  jac = tape.batch_jacobian(y, x).numpy()
  return jac.reshape(jac.shape[0], jac.shape[1], -1).astype(np.float64)


def relu_mlp(n=6, d=4, width=16, seed=0):
  """A 2-hidden-layer ReLU MLP ``R^n -> R^d``."""
  keras.utils.set_random_seed(seed)
  return keras.Sequential([
      keras.Input((n,)),
      keras.layers.Dense(width, activation="relu"),
      keras.layers.Dense(width, activation="relu"),
      keras.layers.Dense(d),
  ])

