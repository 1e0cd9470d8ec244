"""float16 and bfloat16 variables, and the mixed_float16 and mixed_bfloat16 policies."""

import keras
import numpy as np
import pytest
from keras import layers

import kerasmuon
import reference
from kerasmuon import newton_schulz
from kerasmuon.newton_schulz import muon_update
from reference import ADAMW
from reference import MUON
from reference import Hyperparameters
from trajectory import ADAMW_TOLERANCE
from trajectory import MUON_TOLERANCE
from trajectory import Case
from trajectory import error_and_bound
from trajectory import run_both
from trajectory import to_numpy

LOW_PRECISION = ["float16", "bfloat16"]

# Unit roundoff, half an ulp relative: float16 keeps 11 significant bits and
# bfloat16 keeps 8.
HALF_ULP = {"float16": 2.0**-11, "bfloat16": 2.0**-8}

# The steps of a 16-bit variable are computed in float32, and the new value
# is rounded to the variable's dtype once per step. The second rounding of
# the bound covers the float32 arithmetic before it, which is 2**13 (float16)
# or 2**16 (bfloat16) times finer.
ROUNDINGS_PER_STEP = 2

# Per-step gradient scales. For gradients of 1e-3, the second-moment term
# (1 - adam_beta_2) * g**2 = 1e-9 is below the smallest float16 subnormal
# (6e-8), so a float16 second moment stays zero. Gradients of 300 have
# squares above the largest float16 value (65504).
GRADIENT_SCALES = {
    "small": [1e-3, 1e-3, 1e-3, 1e-3],
    "large then unit": [300.0, 300.0, 1.0, 1.0],
    "unit": [1.0, 0.5, 2.0, 1.0],
}


def low_precision_case(rng, dtype, step):
    """Return a Case holding a 16-bit AdamW bias or a 16-bit Muon kernel."""
    if step == ADAMW:
        shape, name, view = (6,), "bias", None
    else:
        shape, name, view = (6, 4), "kernel", reference.dense_view((6, 4))
    initial = rng.uniform(-1.0, 1.0, shape).astype("float32")
    variable = keras.Variable(initial, dtype=dtype, name=name)
    return Case(f"{dtype} {name}", variable, step, view)


def gradients_for(rng, case, scales):
    """Return one gradient per scale, rounded to the variable's dtype."""
    shape = tuple(case.variable.shape)
    gradients = []
    for scale in scales:
        value = scale * rng.standard_normal(shape)
        gradient = keras.ops.cast(value.astype("float32"), case.variable.dtype)
        gradients.append([gradient])
    return gradients


def as_float64(gradients):
    """Return the 16-bit gradients as float64 arrays, for the reference."""
    return [
        [to_numpy(keras.ops.cast(gradient, "float32")) for gradient in step]
        for step in gradients
    ]


def assert_within_16bit_rounding(case, trajectory, tolerance):
    dtype = keras.backend.standardize_dtype(case.variable.dtype)
    bounds = error_and_bound(
        trajectory, tolerance, HALF_ULP[dtype], ROUNDINGS_PER_STEP
    )
    for step, (error, allowed) in enumerate(bounds, start=1):
        # A NaN error fails this comparison as well.
        assert error <= allowed, (
            f"{case.label} after step {step}: error {error:.3g} "
            f"exceeds {allowed:.3g}"
        )


@pytest.mark.parametrize("scales", GRADIENT_SCALES.values(), ids=GRADIENT_SCALES.keys())
@pytest.mark.parametrize("dtype", LOW_PRECISION)
def test_adamw_16bit_matches_reference(dtype, scales, rng):
    # With the moments stored and updated in the variable's dtype, float16
    # steps became NaN after gradients of 300 and hundreds of times too large
    # after gradients of 1e-3. bfloat16 variables never moved, because
    # adam_beta_2 = 0.999 rounds to 1 in bfloat16, which made the bias
    # correction sqrt(1 - adam_beta_2**t) zero.
    hyper = Hyperparameters(learning_rate=0.1, adam_lr_ratio=1.0)
    case = low_precision_case(rng, dtype, ADAMW)
    gradients = gradients_for(rng, case, scales)

    trajectories = run_both(
        [case], gradients, hyper, reference_gradients=as_float64(gradients)
    )

    trajectory = trajectories[case.label]
    assert keras.backend.standardize_dtype(case.variable.dtype) == dtype
    assert np.all(np.isfinite(to_numpy(case.variable)))
    assert_within_16bit_rounding(case, trajectory, ADAMW_TOLERANCE)


@pytest.mark.parametrize("scales", GRADIENT_SCALES.values(), ids=GRADIENT_SCALES.keys())
@pytest.mark.parametrize("dtype", LOW_PRECISION)
def test_muon_16bit_matches_reference(dtype, scales, rng):
    hyper = Hyperparameters(learning_rate=0.1)
    case = low_precision_case(rng, dtype, MUON)
    gradients = gradients_for(rng, case, scales)

    trajectories = run_both(
        [case], gradients, hyper, reference_gradients=as_float64(gradients)
    )

    assert keras.backend.standardize_dtype(case.variable.dtype) == dtype
    assert_within_16bit_rounding(case, trajectories[case.label], MUON_TOLERANCE)


@pytest.mark.parametrize("dtype", LOW_PRECISION)
def test_optimizer_state_float32(dtype, rng, state_of):
    # The moments of 16-bit variables are kept in float32, because a float16
    # second moment underflows below 6e-8 and overflows above 65504.
    cases = [low_precision_case(rng, dtype, step) for step in (MUON, ADAMW)]
    optimizer = kerasmuon.Muon()

    optimizer.build([case.variable for case in cases])

    for case in cases:
        for kind, state in state_of(optimizer, case.variable).items():
            assert state.dtype == np.float32, f"{case.label} {kind}"


@pytest.mark.parametrize("shape", [(8, 8), (16, 6), (5, 12)])
@pytest.mark.parametrize("dtype", LOW_PRECISION)
def test_muon_update_computed_in_float32(dtype, shape, rng):
    # Run in float16, the iteration is off by up to 0.35 on these shapes, and
    # in bfloat16 by up to 0.44 (measured on the JAX 0.4.38 CPU backend). Run
    # in float32 and rounded once, the result is within half an ulp of the
    # 16-bit dtype of the float64 reference.
    hyper = Hyperparameters()
    coefficients = (hyper.muon_a, hyper.muon_b, hyper.muon_c)
    direction = keras.ops.cast(rng.standard_normal(shape).astype("float32"), dtype)
    exact_input = to_numpy(keras.ops.cast(direction, "float32"))

    update = muon_update(direction, shape, coefficients, hyper.ns_steps)

    expected = reference.orthogonalize(exact_input, shape, hyper)
    actual = to_numpy(keras.ops.cast(update, "float32"))
    assert keras.backend.standardize_dtype(update.dtype) == dtype
    # 1e-5 covers the float32 iteration, far below the 16-bit rounding.
    allowed = HALF_ULP[dtype] * np.abs(expected) + 1e-5
    assert np.all(np.abs(actual - expected) <= allowed)


@pytest.fixture
def global_policy(request):
    """Set the Keras dtype policy named by the parameter for one test."""
    keras.mixed_precision.set_global_policy(request.param)
    yield request.param
    keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize(
    "global_policy", ["mixed_float16", "mixed_bfloat16"], indirect=True
)
def test_mixed_policy_fit(global_policy, rng, state_of, monkeypatch):
    # Record the dtype of every matrix the optimizer orthogonalizes. fit()
    # traces the step once, so the records come from the traced code.
    orthogonalized = []
    original = newton_schulz.orthogonalize

    def recording_orthogonalize(matrix, *args, **kwargs):
        orthogonalized.append(keras.backend.standardize_dtype(matrix.dtype))
        return original(matrix, *args, **kwargs)

    monkeypatch.setattr(newton_schulz, "orthogonalize", recording_orthogonalize)
    hyper = Hyperparameters(learning_rate=0.05, weight_decay=None)
    features = rng.standard_normal((32, 8)).astype("float32")
    targets = (0.3 * features @ rng.standard_normal((8, 2))).astype("float32")
    model = keras.Sequential(
        [
            keras.Input((8,)),
            layers.Dense(16, activation="tanh", name="hidden"),
            layers.Dense(2, name="output_dense"),
        ]
    )
    model.compile(
        optimizer=kerasmuon.Muon(**hyper.as_kwargs(), exclude_layers="output_dense"),
        loss="mse",
    )
    kernel = model.get_layer("hidden").kernel
    before = to_numpy(kernel)

    first_fit = model.fit(features, targets, batch_size=32, epochs=1, verbose=0)
    displacement = to_numpy(kernel) - before
    later_fit = model.fit(features, targets, batch_size=8, epochs=10, verbose=0)

    muon = getattr(model.optimizer, "inner_optimizer", model.optimizer)
    if global_policy == "mixed_float16":
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert isinstance(muon, kerasmuon.Muon)
    # Mixed policies keep variables in float32 and compute layers in 16 bits.
    assert keras.backend.standardize_dtype(kernel.dtype) == "float32"
    assert state_of(muon, kernel)["momentum"].dtype == np.float32
    assert orthogonalized, "the Muon step never reached orthogonalize()"
    assert set(orthogonalized) == {"float32"}

    losses = first_fit.history["loss"] + later_fit.history["loss"]
    assert np.all(np.isfinite(losses))
    assert losses[-1] < losses[0]

    # The first step is -learning_rate * sqrt(16 / 8) * orthogonalized
    # direction, so its singular values, divided by that factor, lie in the
    # band of the iteration. The lower end of the band assumes that the
    # gradient, from random data, has full rank 8 and no normalized singular
    # value below 5e-4.
    low, high = reference.singular_value_band(hyper, 5e-4)
    singular_values = np.linalg.svd(
        displacement / (hyper.learning_rate * np.sqrt(2.0)), compute_uv=False
    )
    # A LossScaleOptimizer skips a step with non-finite gradients, so the
    # step count shows that none was skipped.
    assert int(keras.ops.convert_to_numpy(muon.iterations)) == 1 + 10 * 4
    # The kernel is rounded to float32 before and after the step. That moves
    # each entry of the quotient by at most 2 * 2**-24 * max |W| / 0.07, about
    # 1e-6 here, and each singular value by at most the Frobenius norm of
    # those moves, which is below 2e-5 for 128 entries.
    assert singular_values.min() >= low - 2e-5
    assert singular_values.max() <= high + 2e-5
