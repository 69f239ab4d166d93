"""Property-based tests (Hypothesis) of the public math functions and attacks.

Over dtypes (float16, bfloat16, float32, float64; integers must be refused
with a TypeError naming the argument), shapes (rank 2-4), batch sizes
(including 0 and 1) and exponents ``p, q in {1, 1.5, 2, 3, inf}``:

* every output is finite (never NaN), with the documented shape;
* never a silent zero: a nonzero input has a nonzero norm, a nonzero linear
  model a nonzero operator norm;
* the values agree with numpy in float64 (norms, dual pairing, projections,
  closed-form operator norms, singular values of a linear map);
* every attack's output lies in the eps-ball (float tolerance) and in
  ``clip``.

The examples are derived (``derandomize=True``), so CI sees the same ones on
every run; models are built once per module. Properties that fail on a real
bug are ``xfail(strict=True)`` with the bug in ``reason`` (reported).
"""

import math

from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_opnorm
from keras_opnorm import norms
from keras_opnorm.attacks import apgd

INF = float("inf")
EXPONENTS = [1.0, 1.5, 2.0, 3.0, INF]
FLOAT_DTYPES = ["float16", "bfloat16", "float32", "float64"]
# Relative tolerance of each dtype against a float64 numpy reference.
RTOL = {"float16": 2e-2, "bfloat16": 5e-2, "float32": 1e-4, "float64": 1e-9}

settings.register_profile(
    "keras_opnorm", derandomize=True, deadline=None, max_examples=25, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile("keras_opnorm")

exponents = st.sampled_from(EXPONENTS)
dtypes = st.sampled_from(FLOAT_DTYPES)
batch_sizes = st.sampled_from([0, 1, 2, 3])
example_shapes = st.lists(st.integers(1, 3), min_size=1, max_size=3).map(tuple)  # rank 2-4
scales = st.sampled_from([1e-2, 1.0, 10.0])
seeds = st.integers(0, 2**16)


def _np_norm(x, p):
  """Per-example lp norm in float64 (numpy), over all non-batch axes."""
  x = np.asarray(x, np.float64)
  flat = np.abs(x.reshape(len(x), int(np.prod(x.shape[1:]))))
  if math.isinf(p):
    return flat.max(axis=1, initial=0.0)
  return np.sum(flat ** p, axis=1) ** (1.0 / p)


def _batch(seed, batch, shape, scale, zero_rows=True):
  """A float64 batch; with ``zero_rows`` its second example is all zeros."""
  x = np.random.default_rng(seed).standard_normal((batch,) + shape) * scale
  if zero_rows and batch > 1:
    x[1] = 0.0
  return x


def _as(x, dtype):
  return tf.cast(tf.constant(x, tf.float64), dtype)


def _np(t):
  return np.asarray(tf.cast(t, tf.float64))


def _dual(p):
  return 1.0 if math.isinf(p) else (INF if p == 1.0 else p / (p - 1.0))


# ----------------------------------------------------------------------------
# keras_opnorm.norms


@given(dtype=dtypes, batch=batch_sizes, shape=example_shapes, p=exponents, scale=scales,
       seed=seeds)
def test_lp_norm_matches_numpy_and_is_never_a_silent_zero(dtype, batch, shape, p, scale, seed):
  x = _as(_batch(seed, batch, shape, scale), dtype)
  out = norms.lp_norm(x, p)
  assert out.shape == (batch,) and out.dtype == x.dtype
  got, want = _np(out), _np_norm(_np(x), p)
  assert np.all(np.isfinite(got))
  np.testing.assert_allclose(got, want, rtol=RTOL[dtype], atol=0)
  assert np.all((got > 0) == (want > 0))  # zero exactly for the zero rows


@given(p=exponents)
def test_dual_exponent_pairs(p):
  q = norms.dual_exponent(p)
  assert 1.0 <= q <= INF
  inverse = lambda e: 0.0 if math.isinf(e) else 1.0 / e
  assert math.isclose(inverse(p) + inverse(q), 1.0, rel_tol=1e-12)


@given(p=st.sampled_from([0.0, 0.5, -1.0, float("nan"), -INF]))
def test_dual_exponent_refuses_p_outside_1_inf(p):
  with pytest.raises(ValueError, match="`p`"):
    norms.dual_exponent(p)


@given(dtype=dtypes, batch=batch_sizes, shape=example_shapes, p=exponents, seed=seeds)
def test_steepest_ascent_is_a_unit_dual_maximiser(dtype, batch, shape, p, seed):
  # <g, s_p(g)> = ||g||_{p*} with ||s_p(g)||_p = 1 (Hoelder equality), s(0) = 0.
  g = _as(_batch(seed, batch, shape, 1.0), dtype)
  s = norms.steepest_ascent(g, p)
  assert s.shape == g.shape
  s_np, g_np = _np(s), _np(g)
  assert np.all(np.isfinite(s_np))
  dual_norm = _np_norm(g_np, _dual(p))
  nonzero = dual_norm > 0
  np.testing.assert_allclose(_np_norm(s_np, p)[nonzero], 1.0, rtol=RTOL[dtype])
  pairing = np.sum((s_np * g_np).reshape(batch, int(np.prod(shape))), axis=1)
  np.testing.assert_allclose(pairing, dual_norm, rtol=RTOL[dtype], atol=1e-12)


@given(dtype=dtypes, batch=batch_sizes, shape=example_shapes, p=exponents, scale=scales,
       seed=seeds)
def test_normalize_gives_unit_norm(dtype, batch, shape, p, scale, seed):
  x = _as(_batch(seed, batch, shape, scale), dtype)
  out = _np(norms.normalize(x, p))
  assert np.all(np.isfinite(out))
  nonzero = _np_norm(_np(x), p) > 0
  np.testing.assert_allclose(_np_norm(out, p)[nonzero], 1.0, rtol=RTOL[dtype])


_PROJECTION_OPTIONS = dict(dtype=dtypes, batch=batch_sizes, shape=example_shapes, scale=scales,
                           epsilon=st.sampled_from([0.05, 0.5, 2.0]), seed=seeds)


@given(p=st.sampled_from([1.0, 2.0, INF]), **_PROJECTION_OPTIONS)
def test_project_lp_ball_closed_forms(dtype, batch, shape, p, scale, epsilon, seed):
  _projection_property(dtype, batch, shape, p, scale, epsilon, seed)


@settings(max_examples=4)  # the eager bisection for 1 < p < inf, p != 2 is slow
@given(p=st.sampled_from([1.5, 3.0]), **_PROJECTION_OPTIONS)
def test_project_lp_ball_bisection(dtype, batch, shape, p, scale, epsilon, seed):
  _projection_property(dtype, batch, shape, p, scale, epsilon, seed)


@pytest.mark.slow
@settings(max_examples=40)
@given(p=st.sampled_from([1.5, 3.0]), **_PROJECTION_OPTIONS)
def test_project_lp_ball_bisection_more_examples(dtype, batch, shape, p, scale, epsilon, seed):
  _projection_property(dtype, batch, shape, p, scale, epsilon, seed)


def _projection_property(dtype, batch, shape, p, scale, epsilon, seed):
  """In the ball, inner points kept, no farther from ``delta`` than rescaling."""
  delta = _as(_batch(seed, batch, shape, scale), dtype)
  out = _np(norms.project_lp_ball(delta, epsilon, p))
  assert out.shape == tuple(delta.shape) and np.all(np.isfinite(out))
  # The bisection (1 < p < inf, p != 2) meets the ball to ~1e-7 relative.
  assert np.all(_np_norm(out, p) <= epsilon * (1 + max(RTOL[dtype], 1e-6)))
  inside = _np_norm(_np(delta), p) <= epsilon * (1 - RTOL[dtype])
  np.testing.assert_allclose(out[inside], _np(delta)[inside], rtol=RTOL[dtype], atol=1e-6)
  # The projection is no farther than the rescaled point eps * d / ||d||_p.
  norm = _np_norm(_np(delta), p).reshape((batch,) + (1,) * len(shape))
  rescaled = _np(delta) * np.minimum(1.0, epsilon / np.where(norm > 0, norm, 1.0))
  dist = lambda a: _np_norm(a - _np(delta), 2.0)
  assert np.all(dist(out) <= dist(rescaled) * (1 + RTOL[dtype]) + 1e-6)


@given(batch=batch_sizes, n=st.integers(1, 8), epsilon=st.sampled_from([0.1, 0.5, 3.0]),
       seed=seeds)
def test_project_l1_box_lands_in_ball_and_box(batch, n, epsilon, seed):
  rng = np.random.default_rng(seed)
  x = rng.uniform(0, 1, (batch, n)).astype(np.float32)
  delta = rng.standard_normal((batch, n)).astype(np.float32)
  out = apgd.project_l1_box(tf.constant(delta), tf.constant(x), epsilon, 0.0, 1.0).numpy()
  assert np.all(np.isfinite(out))
  assert np.all(np.abs(out).sum(axis=1) <= epsilon * (1 + 1e-5) + 1e-6)
  assert np.all(x + out >= -1e-6) and np.all(x + out <= 1 + 1e-6)


@settings(max_examples=6)
@given(fn=st.sampled_from(["lp_norm", "steepest_ascent", "normalize", "project_lp_ball",
                           "project_l1_ball"]),
       dtype=st.sampled_from(["int32", "int64"]), p=exponents)
def test_norms_refuse_integer_tensors_naming_the_argument(fn, dtype, p):
  x = tf.ones([2, 3], dtype)
  call = {
      "lp_norm": lambda: norms.lp_norm(x, p),
      "steepest_ascent": lambda: norms.steepest_ascent(x, p),
      "normalize": lambda: norms.normalize(x, p),
      "project_lp_ball": lambda: norms.project_lp_ball(x, 0.5, p),
      "project_l1_ball": lambda: norms.project_l1_ball(x, 0.5),
  }[fn]
  with pytest.raises(TypeError, match=r"`(x|g|delta)`.*int"):
    call()


# ----------------------------------------------------------------------------
# operator_norm and singular_values

_N_IN, _N_OUT = 5, 3
_W = np.random.default_rng(7).standard_normal((_N_IN, _N_OUT))  # f(x) = x W: J = W^T
_MODELS = {}


def _linear():
  if "linear" not in _MODELS:
    model = keras.Sequential([keras.Input((_N_IN,)), keras.layers.Dense(_N_OUT, use_bias=False)])
    model.layers[0].kernel.assign(_W.astype(np.float32))
    _MODELS["linear"] = model
  return _MODELS["linear"]


def _relu():
  if "relu" not in _MODELS:
    keras.utils.set_random_seed(3)
    _MODELS["relu"] = keras.Sequential([
        keras.Input((_N_IN,)), keras.layers.Dense(8, activation="relu"),
        keras.layers.Dense(_N_OUT)])
  return _MODELS["relu"]


def _np_operator_norm_closed_form(j, p, q):
  """``||J||_{p,q}`` where a closed form exists (see `operator_norm.closed_form`)."""
  if p == 1.0:
    return np.max(np.linalg.norm(j, ord=q, axis=0))
  if math.isinf(q):
    return np.max(np.linalg.norm(j, ord=_dual(p), axis=1))
  if p == 2.0 and q == 2.0:
    return np.linalg.svd(j, compute_uv=False)[0]
  return None


@settings(max_examples=10)
@given(dtype=dtypes, batch=batch_sizes, p=exponents, q=exponents, seed=seeds)
def test_operator_norm_of_a_linear_model(dtype, batch, p, q, seed):
  x = _as(_batch(seed, batch, (_N_IN,), 1.0, zero_rows=False), dtype)
  result = keras_opnorm.operator_norm(_linear(), x, p, q, seed=0)
  assert result.norm.shape == (batch,) and result.v.shape == x.shape
  got = _np(result.norm)
  assert np.all(np.isfinite(got)) and np.all(got > 0)  # a nonzero map: never 0
  np.testing.assert_allclose(_np_norm(_np(result.v), p), 1.0, rtol=RTOL[dtype])
  j = _W.T
  want = _np_operator_norm_closed_form(j, p, q)
  if want is not None:
    np.testing.assert_allclose(got, want, rtol=1e-3)
  else:
    # Any estimate is ||J v||_q for some unit v, so below the true norm, which
    # is at most ||J||_{1,q} * ||v||_1 / ||v||_p <= ||J||_{1,q} n^(1 - 1/p);
    # and at least the best column ||J e_j||_q / ||e_j||_p.
    upper = np.max(np.linalg.norm(j, ord=q, axis=0)) * _N_IN ** (1 - 1 / p)
    assert np.all(got <= upper * (1 + 1e-4))


@settings(max_examples=8)
@given(dtype=dtypes, batch=batch_sizes, p=exponents, q=exponents, seed=seeds)
def test_operator_norm_of_a_relu_model_is_finite_and_positive(dtype, batch, p, q, seed):
  x = _as(_batch(seed, batch, (_N_IN,), 1.0, zero_rows=False), dtype)
  got = _np(keras_opnorm.operator_norm(_relu(), x, p, q, seed=0).norm)
  assert got.shape == (batch,) and np.all(np.isfinite(got)) and np.all(got >= 0)


@settings(max_examples=10)
@given(dtype=dtypes, batch=batch_sizes, k=st.integers(1, _N_OUT), seed=seeds)
def test_singular_values_of_a_linear_model(dtype, batch, k, seed):
  x = _as(_batch(seed, batch, (_N_IN,), 1.0, zero_rows=False), dtype)
  values = keras_opnorm.singular_values(_linear(), x, k, seed=0)
  values = values[0] if isinstance(values, (tuple, list)) else values
  got = _np(values)
  assert got.shape == (batch, k) and np.all(np.isfinite(got))
  want = np.linalg.svd(_W, compute_uv=False)[:k]
  np.testing.assert_allclose(got, np.broadcast_to(want, (batch, k)), rtol=1e-3)


@pytest.mark.parametrize("fn", ["operator_norm", "singular_values"])
def test_integer_inputs_are_refused_naming_x(fn):
  with pytest.raises(TypeError, match="`x`.*int32"):
    getattr(keras_opnorm, fn)(_linear(), tf.ones([2, _N_IN], tf.int32))


# ----------------------------------------------------------------------------
# Attacks: the output lies in the eps-ball around x and in clip.


def _attack_inputs(seed, batch, dtype):
  rng = np.random.default_rng(seed)
  x = rng.uniform(0, 1, (batch, _N_IN))
  y = rng.integers(0, _N_OUT, batch).astype(np.int32)
  return _as(x, dtype), tf.constant(y)


def _check_in_ball_and_clip(x, x_adv, epsilon, p, clip, dtype):
  assert x_adv.shape == x.shape
  a, x0 = _np(x_adv), _np(x)
  assert np.all(np.isfinite(a))
  # Slack: the ball is met in float32 (or x's dtype), then rounded to x's dtype.
  slack = epsilon * RTOL[dtype] + (1e-3 if dtype in ("float16", "bfloat16") else 1e-6)
  assert np.all(_np_norm(a - x0, p) <= epsilon + slack)
  if clip is not None:
    assert np.all(a >= clip[0]) and np.all(a <= clip[1])


def _pgd_property(dtype, batch, p, epsilon, clip, random_start, loss, seed):
  x, y = _attack_inputs(seed, batch, dtype)
  x_adv = keras_opnorm.attacks.pgd_attack(
      _relu(), x, y, epsilon=epsilon, p=p, num_steps=2, clip=clip, random_start=random_start,
      loss=loss)
  _check_in_ball_and_clip(x, x_adv, epsilon, p, clip, dtype)


_PGD_OPTIONS = dict(
    dtype=dtypes, batch=batch_sizes, epsilon=st.sampled_from([0.05, 0.3, 1.0]),
    clip=st.sampled_from([None, (0.0, 1.0)]), random_start=st.booleans(),
    loss=st.sampled_from(["crossentropy", "logit"]), seed=seeds)


@settings(max_examples=10)
@given(p=st.sampled_from([1.0, 2.0, INF]), **_PGD_OPTIONS)
def test_pgd_attack_stays_in_ball_and_clip(dtype, batch, p, epsilon, clip, random_start, loss,
                                           seed):
  _pgd_property(dtype, batch, p, epsilon, clip, random_start, loss, seed)


@pytest.mark.parametrize("p, batch, dtype", [(1.5, 3, "float32"), (3.0, 1, "float16")])
def test_pgd_attack_other_p_stays_in_ball_and_clip(p, batch, dtype):
  # 1 < p < inf, p != 2: each p costs a trace of the bisection projection
  # (seconds); the property over all options is the slow test below.
  _pgd_property(dtype, batch, p, 0.3, (0.0, 1.0), True, "crossentropy", 0)


@pytest.mark.slow
@settings(max_examples=20)
@given(p=st.sampled_from([1.5, 3.0]), **_PGD_OPTIONS)
def test_pgd_attack_other_p_property(dtype, batch, p, epsilon, clip, random_start, loss, seed):
  _pgd_property(dtype, batch, p, epsilon, clip, random_start, loss, seed)


@settings(max_examples=12)
@given(dtype=dtypes, batch=batch_sizes, p=st.sampled_from([1.0, 2.0, INF]),
       epsilon=st.sampled_from([0.05, 0.3, 1.0]), clip=st.sampled_from([None, (0.0, 1.0)]),
       seed=seeds)
def test_apgd_attack_stays_in_ball_and_clip(dtype, batch, p, epsilon, clip, seed):
  x, y = _attack_inputs(seed, batch, dtype)
  x_adv = keras_opnorm.attacks.apgd_attack(
      _relu(), x, y, epsilon=epsilon, p=p, num_steps=4, clip=clip, seed=0)
  _check_in_ball_and_clip(x, x_adv, epsilon, p, clip, dtype)


@given(p=st.sampled_from([1.5, 3.0]))
def test_apgd_refuses_other_p_naming_it(p):
  x, y = _attack_inputs(0, 2, "float32")
  with pytest.raises(ValueError, match="`?p`?.*Received: p="):
    keras_opnorm.attacks.apgd_attack(_relu(), x, y, epsilon=0.1, p=p, num_steps=2)


@pytest.mark.parametrize("attack", ["pgd_attack", "apgd_attack"])
def test_attacks_refuse_integer_inputs_naming_x(attack):
  x = tf.ones([2, _N_IN], tf.int32)
  with pytest.raises(TypeError, match="`x`.*int32"):
    getattr(keras_opnorm.attacks, attack)(_relu(), x, tf.zeros([2], tf.int32), epsilon=0.1,
                                          num_steps=2)
