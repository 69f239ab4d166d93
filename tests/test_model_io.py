"""Tests of keras_opnorm.logits_view: probability outputs, several inputs, several outputs.

The models are linear in their perturbed inputs, so every expected value is a
closed form: ``logits = W a (+ B b) + E[ids]`` has the Jacobian ``W`` (or
``[W B]``) with respect to the float inputs, whatever the fixed ids.
"""

import warnings

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf

import keras_opnorm
from keras_opnorm import callbacks
from keras_opnorm import objectives
from keras_opnorm.evaluation import robust_accuracy

D, N_A, N_B, VOCAB = 3, 4, 2, 5


def _w(rows, cols, seed):
  return np.random.default_rng(seed).standard_normal((rows, cols)).astype("float32")


W = _w(D, N_A, 0)   # logits = W a + ...
B = _w(D, N_B, 1)   # ... + B b
E = _w(VOCAB, D, 2)  # ... + E[ids]


def _dense(units, kernel, name=None, activation=None):
  layer = keras.layers.Dense(units, activation=activation, name=name)
  layer.build((None, kernel.shape[1]))
  layer.set_weights([kernel.T, np.zeros(units, "float32")])
  return layer


def _multi_io_model(two_floats=False, dict_outputs=False):
  """{'a': [B, 4] float, ('b': [B, 2] float,) 'ids': [B, 1] int} -> logits (+ aux)."""
  a = keras.Input((N_A,), name="a")
  ids = keras.Input((1,), dtype="int32", name="ids")
  embedding = keras.layers.Embedding(VOCAB, D)
  embedding.build((None, 1))
  embedding.set_weights([E])
  h = keras.layers.Add()([_dense(D, W)(a), keras.layers.Flatten()(embedding(ids))])
  inputs = {"a": a, "ids": ids}
  if two_floats:
    b = keras.Input((N_B,), name="b")
    h = keras.layers.Add()([h, _dense(D, B)(b)])
    inputs["b"] = b
  logits = keras.layers.Identity(name="logits")(h)
  aux = keras.layers.Dense(1, name="aux")(h)
  outputs = {"logits": logits, "aux": aux} if dict_outputs else [logits, aux]
  return keras.Model(inputs, outputs)


def _inputs(batch=4, two_floats=False, seed=3):
  rng = np.random.default_rng(seed)
  x = {"a": rng.standard_normal((batch, N_A)).astype("float32"),
       "ids": rng.integers(0, VOCAB, (batch, 1)).astype("int32")}
  if two_floats:
    x["b"] = rng.standard_normal((batch, N_B)).astype("float32")
  return x


def _softmax_np(z):
  z = z - z.max(-1, keepdims=True)
  e = np.exp(z)
  return e / e.sum(-1, keepdims=True)


class ProbabilityOutputTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.named_parameters(
      ("dense_softmax", lambda: keras.Sequential(
          [keras.Input((N_A,)), keras.layers.Dense(D, activation="softmax", name="probs")]),
       "softmax", "probs"),
      ("activation_sigmoid", lambda: keras.Sequential(
          [keras.Input((N_A,)), keras.layers.Dense(D), keras.layers.Activation("sigmoid", name="act")]),
       "sigmoid", "act"),
      ("softmax_layer_functional", lambda: keras.Model(
          *(lambda i: (i, keras.layers.Softmax(name="sm")(keras.layers.Dense(D)(i))))(keras.Input((N_A,)))),
       "softmax", "sm"),
  )
  def test_public_functions_refuse_probability_models(self, make, activation, layer_name):
    # Today: accepted silently (only the callbacks noticed).
    model = make()
    x = tf.constant(_inputs()["a"])
    y = tf.constant([0, 1, 2, 0])
    pattern = f"{activation} activation on layer '{layer_name}'.*from_logits=False"
    with self.assertRaisesRegex(ValueError, pattern):
      keras_opnorm.operator_norm(model, x)
    with self.assertRaisesRegex(ValueError, pattern):
      keras_opnorm.pgd_attack(model, x, y, epsilon=0.1, num_steps=1)
    with self.assertRaisesRegex(ValueError, pattern):
      keras_opnorm.singular_values(model, x)
    with self.assertRaisesRegex(ValueError, pattern):
      robust_accuracy(model, x.numpy(), y.numpy(), epsilons=[0.1], num_steps=1)

  def test_declared_probabilities_give_log_softmax_operator_norm(self):
    # f = softmax(W a): the declared view uses log p = W a - lse(W a), whose
    # Jacobian is (I - 1 p^T) W; its largest singular value, by numpy.
    model = keras.Sequential([keras.Input((N_A,)), _dense(D, W, activation="softmax")])
    view = keras_opnorm.LogitsView(model, from_logits=False)
    x = _inputs()["a"]
    result = keras_opnorm.operator_norm(view, tf.constant(x))
    p = _softmax_np(x @ W.T)
    expected = [np.linalg.svd((np.eye(D) - np.outer(np.ones(D), pi)) @ W, compute_uv=False)[0]
                for pi in p]
    self.assertAllClose(result.norm, expected, rtol=1e-4)

  def test_declared_probabilities_attack_like_the_logits(self):
    # CE(y, log softmax z) = CE(y, z): PGD on the declared softmax model and on
    # its logits follows the same gradients.
    probs = keras.Sequential([keras.Input((N_A,)), _dense(D, W, activation="softmax")])
    logits = keras.Sequential([keras.Input((N_A,)), _dense(D, W)])
    x = tf.constant(_inputs()["a"])
    y = tf.constant([0, 1, 2, 0])
    kw = dict(epsilon=0.3, p=2, num_steps=3, random_start=False)
    got = keras_opnorm.pgd_attack(keras_opnorm.LogitsView(probs, from_logits=False), x, y, **kw)
    self.assertAllClose(got, keras_opnorm.pgd_attack(logits, x, y, **kw), atol=1e-5)

  def test_single_sigmoid_column_becomes_two_logits(self):
    # p = sigmoid(t) -> logits (log(1 - p), log p): their difference is t.
    model = keras.Sequential([keras.Input((N_A,)), _dense(1, W[:1], activation="sigmoid")])
    x = _inputs()["a"]
    out = keras_opnorm.LogitsView(model, from_logits=False)(tf.constant(x))
    self.assertEqual(out.shape, (4, 2))
    self.assertAllClose(out[:, 1] - out[:, 0], x @ W[0], atol=1e-4)

  def test_subclassed_softmax_model_warns_once(self):

    class Probs(keras.Model):

      def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(D)

      def call(self, x):
        return tf.nn.softmax(self.dense(x))

    model = Probs()
    x = tf.constant(_inputs()["a"])
    with warnings.catch_warnings(record=True) as caught:
      warnings.simplefilter("always")
      keras_opnorm.operator_norm(model, x)
      keras_opnorm.operator_norm(model, x)
    messages = [str(w.message) for w in caught if "looks like probabilities" in str(w.message)]
    self.assertLen(messages, 1)

  def test_evaluation_and_layer_accept_the_declaration(self):
    # Clean accuracy through the view is the argmax of W a (softmax is monotone).
    model = keras.Sequential([keras.Input((N_A,)), _dense(D, W, activation="softmax")])
    x = _inputs(batch=8)["a"]
    y = np.array([0, 1, 2, 0, 1, 2, 0, 1])
    result = robust_accuracy(keras_opnorm.LogitsView(model, from_logits=False), x, y,
                             epsilons=[0.1], num_steps=1)
    self.assertAllClose(result.clean_accuracy, np.mean(np.argmax(x @ W.T, -1) == y))
    with self.assertRaisesRegex(ValueError, "softmax"):
      keras_opnorm.layers.OperatorNormRegularizer(model, epsilon=0.1).build((None, N_A))
    layer = keras_opnorm.layers.OperatorNormRegularizer(model, epsilon=0.1, from_logits=False)
    layer.build((None, N_A))
    self.assertFalse(keras_opnorm.layers.OperatorNormRegularizer.from_config(
        layer.get_config()).objective.from_logits)

  def test_objectives_accept_the_declaration(self):
    model = keras.Sequential([keras.Input((N_A,)), keras.layers.Dense(D, activation="softmax")])
    with self.assertRaisesRegex(ValueError, "softmax"):
      objectives.AdversarialTraining(epsilon=0.1).build(model)
    objective = objectives.AdversarialTraining(epsilon=0.1, from_logits=False)
    objective.build(model)
    self.assertFalse(objective.get_config()["from_logits"])
    restored = objectives.AdversarialTraining.from_config(objective.get_config())
    self.assertFalse(restored.from_logits)
    x = tf.constant(_inputs()["a"])
    y = tf.constant([0, 1, 2, 0])
    loss, _ = objective(model, x, y, model(x))
    self.assertTrue(np.isfinite(float(loss)))


class MultiInputTest(tf.test.TestCase):

  def test_operator_norm_acts_on_the_float_inputs(self):
    # Jacobian of W a + E[ids] with respect to a: W (ids held fixed).
    model = keras_opnorm.LogitsView(_multi_io_model(), output="logits")
    x = _inputs()
    result = keras_opnorm.operator_norm(model, x)
    sigma = np.linalg.svd(W, compute_uv=False)
    self.assertAllClose(result.norm, np.full(4, sigma[0]), rtol=1e-5)
    self.assertEqual(set(result.v), {"a"})  # a direction in the float input only
    self.assertAllClose(np.linalg.norm(result.v["a"], axis=-1), np.ones(4), rtol=1e-5)
    power = keras_opnorm.operator_norm(model, x, method="power", num_iters=30)
    self.assertAllClose(power.norm, np.full(4, sigma[0]), rtol=1e-4)

  def test_joint_ball_over_two_float_inputs(self):
    # Perturbing a and b jointly: the Jacobian is [W B] (one l2 ball on the
    # concatenation); perturbing b alone: B.
    model = keras_opnorm.LogitsView(_multi_io_model(two_floats=True), output=0)
    x = _inputs(two_floats=True)
    joint = keras_opnorm.operator_norm(model, x)
    self.assertAllClose(joint.norm, np.full(4, np.linalg.svd(np.hstack([W, B]), compute_uv=False)[0]),
                        rtol=1e-5)
    only_b = keras_opnorm.LogitsView(_multi_io_model(two_floats=True), output=0, inputs="b")
    values = keras_opnorm.singular_values(only_b, x, k=2)
    self.assertAllClose(values.values, np.tile(np.linalg.svd(B, compute_uv=False)[:2], (4, 1)),
                        rtol=1e-5)
    self.assertEqual(set(values.vectors), {"b"})
    self.assertEqual(values.vectors["b"].shape, (4, 2, N_B))

  def test_pgd_one_step_closed_form_and_fixed_ids(self):
    # One l2 step of size eps from x (no random start): a* = a + eps g/||g||
    # with g = W^T (softmax(W a + E[ids]) - e_y), the CE gradient.
    model = keras_opnorm.LogitsView(_multi_io_model(), output="logits")
    x = _inputs()
    y = np.array([0, 1, 2, 0])
    eps = 0.25
    x_adv = keras_opnorm.pgd_attack(model, x, y, epsilon=eps, p=2, num_steps=1, step_size=eps,
                                    random_start=False)
    self.assertEqual(set(x_adv), {"a", "ids"})
    self.assertAllEqual(x_adv["ids"], x["ids"])
    z = x["a"] @ W.T + E[x["ids"][:, 0]]
    g = (_softmax_np(z) - np.eye(D)[y]) @ W
    expected = x["a"] + eps * g / np.linalg.norm(g, axis=-1, keepdims=True)
    self.assertAllClose(x_adv["a"], expected, atol=1e-5)

  def test_list_inputs_and_errors(self):
    a = keras.Input((N_A,))
    ids = keras.Input((1,), dtype="int32")
    emb = keras.layers.Flatten()(keras.layers.Embedding(VOCAB, D)(ids))
    model = keras.Model([a, ids], keras.layers.Add()([_dense(D, W)(a), emb]))
    x = _inputs()
    result = keras_opnorm.operator_norm(model, [x["a"], x["ids"]])
    self.assertAllClose(result.norm, np.full(4, np.linalg.svd(W, compute_uv=False)[0]), rtol=1e-5)
    self.assertIsNone(result.v[1])
    with self.assertRaisesRegex(TypeError, "`inputs` must name floating-point inputs"):
      keras_opnorm.operator_norm(keras_opnorm.LogitsView(model, inputs=[1]), [x["a"], x["ids"]])
    # The batching evaluation functions take list inputs too: the clean
    # accuracy is that of argmax(W a + E[ids]).
    y = np.zeros(4, "int32")
    clean = robust_accuracy(model, [x["a"], x["ids"]], y, epsilons=[0.0]).clean_accuracy
    self.assertAllClose(clean, np.mean(np.argmax(x["a"] @ W.T + E[x["ids"][:, 0]], -1) == y))


class MultiOutputTest(tf.test.TestCase, parameterized.TestCase):

  def test_unnamed_logits_output_is_a_clear_error(self):
    model = _multi_io_model()
    with self.assertRaisesRegex(ValueError, r"2 outputs \['logits', 'aux'\].*output="):
      keras_opnorm.operator_norm(model, _inputs())
    with self.assertRaisesRegex(ValueError, r"`output` must be one of"):
      keras_opnorm.LogitsView(model, output="nope")
    with self.assertRaisesRegex(ValueError, "output="):
      objectives.AdversarialTraining(epsilon=0.1).build(model)

  def _fit(self, model, y, callback=None, robust_objective=None):
    losses = {"logits": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
              "aux": "mse"}
    if isinstance(y, list):
      losses = [losses["logits"], losses["aux"]]
    if robust_objective is not None:
      model = keras_opnorm.RobustModel(
          keras_opnorm.LogitsView(model, output="logits"), [robust_objective])
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss=losses)
    history = model.fit(_inputs(batch=8), y, batch_size=4, epochs=1, verbose=0,
                        callbacks=[] if callback is None else [callback])
    return model, history.history

  @parameterized.named_parameters(("list_outputs", False), ("dict_outputs", True))
  def test_adversarial_training_callback_on_two_outputs(self, dict_outputs):
    # Today: TypeError inside the library (a list of labels cast to int32).
    model = _multi_io_model(dict_outputs=dict_outputs)
    labels = np.array([0, 1, 2, 0, 1, 2, 0, 1])
    aux = np.zeros((8, 1), "float32")
    y = {"logits": labels, "aux": aux} if dict_outputs else [labels, aux]
    _, logs = self._fit(model, y, callbacks.AdversarialTraining(0.1, p=2, num_steps=2,
                                                                output="logits"))
    self.assertTrue(np.isfinite(logs["adv_loss"][0]))
    self.assertBetween(logs["adv_accuracy"][0], 0.0, 1.0)

  def test_operator_norm_regularization_in_robust_model(self):
    model = _multi_io_model(dict_outputs=True)
    y = {"logits": np.zeros(8, "int32"), "aux": np.zeros((8, 1), "float32")}
    robust, logs = self._fit(model, y, robust_objective=objectives.OperatorNormRegularization(
        epsilon=0.1, num_iters=2))
    # The penalty is on the Jacobian of the logits w.r.t. a: sigma_max(W) at the start.
    self.assertAllClose(logs["opnorm"][0], np.linalg.svd(W, compute_uv=False)[0], rtol=0.1)
    config = robust.get_config()
    self.assertEqual(config["logits_view"]["output"], "logits")
    restored = keras_opnorm.RobustModel.from_config(config)
    self.assertEqual(restored.logits_view.output, "logits")

  def test_objective_settings_are_serialised(self):
    objective = objectives.OperatorNormRegularization(epsilon=0.1, output="logits", inputs=["a"])
    config = objective.get_config()
    self.assertEqual((config["output"], config["inputs"], config["from_logits"]),
                     ("logits", ["a"], True))
    restored = objectives.OperatorNormRegularization.from_config(config)
    self.assertEqual((restored.output, restored.inputs), ("logits", ("a",)))
    self.assertNotIn("output", objectives.OperatorNormRegularization(epsilon=0.1).get_config())


if __name__ == "__main__":
  tf.test.main()
