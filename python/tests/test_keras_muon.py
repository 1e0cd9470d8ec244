"""`kerasmuon.Muon` next to `keras.optimizers.Muon`, where the installed Keras has it.

Read from the source of keras.optimizers.Muon in Keras 3.15.1, the two agree on:

- the quintic Newton-Schulz iteration, for the same coefficients and number
  of steps, up to Keras's 1e-7 added to the Frobenius norm;
- the momentum buffer, momentum * m + g, and the Nesterov direction;
- the AdamW step with bias correction at `learning_rate * adam_lr_ratio`.

They differ in these ways, and a test below pins down each of them:

- Defaults. Keras has weight_decay=0.004, adam_weight_decay=0.004,
  adam_lr_ratio=1, ns_steps=5, rms_rate=0.2 and an automatic name. This
  package has weight_decay=0.1, adam_lr_ratio=0.1, ns_steps=6 and "muon".
- Scale of the Muon update. Keras multiplies it by
  rms_rate * sqrt(max(rows, columns)), which, according to its docstring,
  lets Muon use the learning rate and weight decay of Adam. This package
  multiplies it by sqrt(max(1, fan_out / fan_in)).
- Normalization. Keras divides by the Frobenius norm plus 1e-7, so a
  direction with a norm near 1e-7 or below is shrunk and comes out far from
  orthogonal. This package divides by the norm itself, so the output does not
  depend on the scale of the direction.
- Routing. Keras gives the Muon step to every 2D variable that it does not
  exclude and to no other variable, so Conv1D, Conv2D and MultiHeadAttention
  kernels take AdamW and the 2D (heads, key_dim) biases of MultiHeadAttention
  take Muon. It excludes every variable whose lowercased path contains
  "embedding", which catches a Dense layer named "embedding_proj". This
  package views 3D and 4D kernels as matrices, sends biases to AdamW and
  excludes variables named `embeddings`.
- `exclude_layers` as one string. Keras iterates over it, so each character
  is a pattern and "output_dense" excludes every path that contains one of
  its letters. This package takes a string as one pattern.
- Weight decay. Keras decays Muon variables by `weight_decay` and AdamW
  variables by `adam_weight_decay`, both times `learning_rate`. This package
  decays every variable by `weight_decay` times the learning rate of its own
  step, which is `learning_rate * adam_lr_ratio` for AdamW.
"""

import inspect

import keras
import numpy as np
import pytest
from keras import layers

import kerasmuon
import reference
from kerasmuon.newton_schulz import orthogonalize
from reference import Hyperparameters
from trajectory import to_numpy

pytestmark = pytest.mark.skipif(
    not hasattr(keras.optimizers, "Muon"),
    reason="the installed Keras has no keras.optimizers.Muon",
)

# Keras adds this to the Frobenius norm before dividing by it.
KERAS_NORM_EPSILON = 1e-7

# Both iterations run in float32 and round differently, because this package
# divides by the largest magnitude before taking the norm. On the shapes
# below, over 5 seeds, the outputs differed by at most 2.1e-6 on the
# TensorFlow 2.21, JAX 0.4.38 and PyTorch 2.13 CPU backends (2-core AMD
# EPYC). A change of a coefficient or of the number of steps moves the
# output by far more than 1e-5.
NEWTON_SCHULZ_TOLERANCE = 1e-5

SHAPES = [(8, 8), (12, 5), (5, 12)]


def keras_orthogonalize(matrix, hyper):
    """Run keras.optimizers.Muon's iteration with the coefficients of `hyper`."""
    optimizer = keras.optimizers.Muon(
        muon_a=hyper.muon_a, muon_b=hyper.muon_b, muon_c=hyper.muon_c
    )
    tensor = keras.ops.convert_to_tensor(matrix.astype("float32"))
    return to_numpy(optimizer.zeropower_via_newtonschulz5(tensor, hyper.ns_steps))


def kerasmuon_orthogonalize(matrix, hyper):
    tensor = keras.ops.convert_to_tensor(matrix.astype("float32"))
    coefficients = (hyper.muon_a, hyper.muon_b, hyper.muon_c)
    return to_numpy(orthogonalize(tensor, coefficients, hyper.ns_steps))


ITERATIONS = {
    "defaults, 6 steps": Hyperparameters(),
    "defaults, 5 steps": Hyperparameters(ns_steps=5),
    "cubic, 4 steps": Hyperparameters(muon_a=1.5, muon_b=-0.5, muon_c=0.0, ns_steps=4),
}


@pytest.mark.parametrize("hyper", ITERATIONS.values(), ids=ITERATIONS.keys())
@pytest.mark.parametrize("shape", SHAPES)
def test_newton_schulz_agrees(shape, hyper, rng):
    matrix = 10.0 * rng.standard_normal(shape)
    # From a norm of 2 on, 1e-7 is below half a float32 ulp of the norm, so
    # Keras's norm + 1e-7 rounds to the norm itself.
    assert np.linalg.norm(matrix) >= 2.0

    ours = kerasmuon_orthogonalize(matrix, hyper)
    theirs = keras_orthogonalize(matrix, hyper)

    assert ours.shape == theirs.shape == shape
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=NEWTON_SCHULZ_TOLERANCE)


@pytest.mark.parametrize("norm", [1e-7, 1e-12])
def test_newton_schulz_small_norm_differs(norm, rng):
    # Each iteration keeps the singular vectors and maps each singular value
    # on its own, so the output's singular values follow from the input's.
    # The map is not monotonic, so both sides are compared sorted. This
    # package normalizes by the norm, Keras by the norm plus 1e-7.
    hyper = Hyperparameters()
    matrix = rng.standard_normal((8, 6))
    matrix *= norm / np.linalg.norm(matrix)
    normalized = np.linalg.svd(matrix, compute_uv=False) / norm

    ours = np.linalg.svd(kerasmuon_orthogonalize(matrix, hyper), compute_uv=False)
    theirs = np.linalg.svd(keras_orthogonalize(matrix, hyper), compute_uv=False)

    shrink = norm / (norm + KERAS_NORM_EPSILON)
    expected_ours = np.sort(reference.iterate_singular_values(normalized, hyper))
    expected_theirs = np.sort(
        reference.iterate_singular_values(normalized * shrink, hyper)
    )
    np.testing.assert_allclose(np.sort(ours), expected_ours, rtol=0, atol=1e-5)
    np.testing.assert_allclose(np.sort(theirs), expected_theirs, rtol=0, atol=1e-5)
    assert np.max(np.abs(np.sort(ours) - np.sort(theirs))) > 0.1


def paired_variables(rng, shape, name):
    """Return two variables with the same initial value, one per optimizer."""
    initial = rng.uniform(-1.0, 1.0, shape).astype("float32")
    return (
        keras.Variable(initial, name=name),
        keras.Variable(initial, name=name),
    )


def test_steps_agree_without_scale_and_decay(rng):
    # On a kernel with fan_in >= fan_out this package does not scale the
    # update, and Keras does not either with rms_rate=None. Without weight
    # decay, both steps of the two optimizers are the same.
    hyper = Hyperparameters(learning_rate=0.02, weight_decay=None)
    ours = kerasmuon.Muon(**hyper.as_kwargs())
    theirs = keras.optimizers.Muon(
        learning_rate=hyper.learning_rate,
        weight_decay=None,
        adam_weight_decay=None,
        adam_lr_ratio=hyper.adam_lr_ratio,
        ns_steps=hyper.ns_steps,
        rms_rate=None,
    )
    kernels = paired_variables(rng, (10, 4), "kernel")
    biases = paired_variables(rng, (4,), "bias")
    initial = {"kernel": to_numpy(kernels[0]), "bias": to_numpy(biases[0])}

    for _ in range(5):
        # Gradients with a Frobenius norm far above 2, so that Keras's 1e-7
        # vanishes in the norm.
        kernel_gradient = keras.ops.convert_to_tensor(
            (3.0 * rng.standard_normal((10, 4))).astype("float32")
        )
        bias_gradient = keras.ops.convert_to_tensor(
            rng.standard_normal(4).astype("float32")
        )
        ours.apply_gradients([(kernel_gradient, kernels[0]), (bias_gradient, biases[0])])
        theirs.apply_gradients([(kernel_gradient, kernels[1]), (bias_gradient, biases[1])])

    # The values stay below 1.1, where a float32 ulp is at most 1.2e-7. Each
    # of the 5 steps may round differently on the two sides, by up to two
    # ulps, and the iterations differ by up to NEWTON_SCHULZ_TOLERANCE times
    # the learning rate, so 5 * (2.4e-7 + 0.02 * 1e-5) = 2.2e-6 bounds the
    # difference. The kernel moves by about 0.1 in total.
    for name, pair in [("kernel", kernels), ("bias", biases)]:
        ours_moved = to_numpy(pair[0]) - initial[name]
        theirs_moved = to_numpy(pair[1]) - initial[name]
        np.testing.assert_allclose(
            ours_moved, theirs_moved, rtol=0, atol=2.2e-6, err_msg=name
        )


@pytest.mark.parametrize("shape", [(10, 4), (4, 10)])
def test_muon_scale_differs(shape, rng):
    # One step from a fresh state, without weight decay, is
    # -learning_rate * scale * orthogonalized gradient. Only the scale differs.
    hyper = Hyperparameters(learning_rate=0.02, weight_decay=None)
    ours = kerasmuon.Muon(**hyper.as_kwargs())
    theirs = keras.optimizers.Muon(
        learning_rate=hyper.learning_rate, weight_decay=None, ns_steps=hyper.ns_steps
    )
    kernels = paired_variables(rng, shape, "kernel")
    initial = to_numpy(kernels[0])
    gradient = keras.ops.convert_to_tensor(
        (3.0 * rng.standard_normal(shape)).astype("float32")
    )

    ours.apply_gradients([(gradient, kernels[0])])
    theirs.apply_gradients([(gradient, kernels[1])])

    fan_in, fan_out = shape
    ours_scale = np.sqrt(max(1.0, fan_out / fan_in))
    theirs_scale = theirs.rms_rate * np.sqrt(max(shape))
    ours_moved = to_numpy(kernels[0]) - initial
    theirs_moved = to_numpy(kernels[1]) - initial
    # Two float32 ulps of values below 1.1 (2.4e-7) and the difference of the
    # iterations (0.02 * 1e-5), divided by the smaller scale, 0.2 * sqrt(10).
    allowed = (2.4e-7 + 0.02 * NEWTON_SCHULZ_TOLERANCE) / min(ours_scale, theirs_scale)
    np.testing.assert_allclose(
        ours_moved / ours_scale, theirs_moved / theirs_scale, rtol=0, atol=allowed
    )


def test_adamw_weight_decay_differs(rng):
    # A zero gradient leaves both AdamW steps at zero, so only weight decay
    # moves the bias.
    ours = kerasmuon.Muon(learning_rate=0.02, weight_decay=0.5, adam_lr_ratio=0.1)
    theirs = keras.optimizers.Muon(
        learning_rate=0.02, weight_decay=0.5, adam_weight_decay=0.3, adam_lr_ratio=0.1
    )
    biases = paired_variables(rng, (6,), "bias")
    initial = to_numpy(biases[0])
    zero = keras.ops.zeros((6,))

    ours.apply_gradients([(zero, biases[0])])
    theirs.apply_gradients([(zero, biases[1])])

    np.testing.assert_allclose(
        to_numpy(biases[0]), initial * (1 - 0.5 * 0.02 * 0.1), rtol=1e-6
    )
    np.testing.assert_allclose(to_numpy(biases[1]), initial * (1 - 0.3 * 0.02), rtol=1e-6)


def routing_model():
    """Build a model with variables that the two route differently, and two they agree on."""
    tokens = keras.Input((5,), dtype="int32")
    image = keras.Input((6, 6, 3))
    x = layers.Embedding(20, 6, name="lookup")(tokens)
    x = layers.MultiHeadAttention(num_heads=2, key_dim=3, name="attention")(x, x)
    x = layers.GlobalAveragePooling1D()(x)
    y = layers.Conv2D(4, 3, name="conv2d")(image)
    y = layers.GlobalAveragePooling2D()(y)
    z = layers.Concatenate()([x, y])
    z = layers.Dense(8, name="embedding_proj")(z)
    z = layers.Dense(8, name="hidden")(z)
    output = layers.Dense(2, name="output_dense")(z)
    return keras.Model([tokens, image], output)


def adamw_paths(optimizer, model, state_of):
    """Return the paths that got a velocity buffer, that is, the AdamW step."""
    optimizer.build(model.trainable_variables)
    return {
        variable.path
        for variable in model.trainable_variables
        if "velocity" in state_of(optimizer, variable)
    }


# (path, takes AdamW in kerasmuon.Muon, takes AdamW in keras.optimizers.Muon)
ROUTING_DIFFERENCES = [
    ("conv2d/kernel", False, True),
    ("attention/query/kernel", False, True),
    ("attention/attention_output/kernel", False, True),
    ("attention/query/bias", True, False),
    ("embedding_proj/kernel", False, True),
    ("lookup/embeddings", True, True),
    ("hidden/kernel", False, False),
    ("hidden/bias", True, True),
]


def test_routing_differs(state_of):
    model = routing_model()

    ours = adamw_paths(kerasmuon.Muon(), model, state_of)
    theirs = adamw_paths(keras.optimizers.Muon(), model, state_of)

    for path, ours_adamw, theirs_adamw in ROUTING_DIFFERENCES:
        assert (path in ours) == ours_adamw, f"kerasmuon {path}"
        assert (path in theirs) == theirs_adamw, f"keras {path}"


def test_one_string_pattern_differs(state_of):
    # Keras reads "output_dense" as the patterns "o", "u", "t", ..., and "d"
    # alone matches "hidden/kernel".
    model = routing_model()

    ours = adamw_paths(kerasmuon.Muon(exclude_layers="output_dense"), model, state_of)
    theirs = adamw_paths(
        keras.optimizers.Muon(exclude_layers="output_dense"), model, state_of
    )

    assert "output_dense/kernel" in ours
    assert "output_dense/kernel" in theirs
    assert "hidden/kernel" not in ours
    assert "hidden/kernel" in theirs


def defaults(optimizer_class):
    parameters = inspect.signature(optimizer_class.__init__).parameters
    return {
        name: parameter.default
        for name, parameter in parameters.items()
        if parameter.default is not inspect.Parameter.empty
    }


SHARED_DEFAULTS = [
    "learning_rate",
    "adam_beta_1",
    "adam_beta_2",
    "epsilon",
    "exclude_layers",
    "exclude_embeddings",
    "muon_a",
    "muon_b",
    "muon_c",
    "momentum",
    "nesterov",
]

# (argument, kerasmuon default, keras default), as the module docstring lists.
DIFFERENT_DEFAULTS = [
    ("weight_decay", 0.1, 0.004),
    ("adam_lr_ratio", 0.1, 1),
    ("ns_steps", 6, 5),
    ("name", "muon", None),
]


def test_defaults_compared():
    ours = defaults(kerasmuon.Muon)
    theirs = defaults(keras.optimizers.Muon)

    for name in SHARED_DEFAULTS:
        assert ours[name] == theirs[name], name
    for name, ours_default, theirs_default in DIFFERENT_DEFAULTS:
        assert ours[name] == ours_default, name
        assert theirs[name] == theirs_default, name
    # Arguments that only Keras has.
    assert theirs["adam_weight_decay"] == 0.004
    assert theirs["rms_rate"] == 0.2
    assert "adam_weight_decay" not in ours
    assert "rms_rate" not in ours
