"""Trajectories of `kerasmuon.Muon` under jit compilation and inside `model.fit()`.

On TensorFlow, apply_gradients runs inside tf.function(jit_compile=True), and
model.fit runs with jit_compile=True (XLA) and False (a tf.function graph).
On JAX, stateless_apply runs inside jax.jit, which is how Keras's JAX trainer
runs an optimizer, and model.fit runs with jit_compile=True (the default on
JAX) and False. On PyTorch, model.fit runs with jit_compile=False. For
jit_compile=True, Keras 3.15 compiles with torch.compile on PyTorch, which
this suite does not run.

The error bounds are those of trajectory.py. They were measured with the
suite's seed on the TensorFlow 2.21, JAX 0.4.38 and PyTorch 2.13 CPU
backends (2-core AMD EPYC). Compiled or not, the Muon error stayed within
the rounding term, and the AdamW error beyond it was at most 8.0e-6 * path,
as without jit.
"""

import keras
import pytest

import kerasmuon
from known_gradient import WeightHistory
from known_gradient import assert_fit_matches
from known_gradient import batch_gradients
from known_gradient import fit_steps
from known_gradient import linear_model
from known_gradient import make_batches
from known_gradient import reference_values
from known_gradient import trajectories
from known_gradient import weights
from reference import Hyperparameters
from trajectory import assert_matches_reference
from trajectory import build_cases
from trajectory import random_gradients
from trajectory import run_both

STEPS = 25
BACKEND = keras.backend.backend()


def tensorflow_xla_step(variables, optimizer):
    """Return an apply_step for run_both that runs in one XLA cluster."""
    import tensorflow as tf

    optimizer.build(variables)

    @tf.function(jit_compile=True)
    def apply(gradients):
        optimizer.apply_gradients(zip(gradients, variables))

    def apply_step(optimizer, pairs):
        apply([gradient for gradient, _ in pairs])

    return apply_step


def jax_jit_step(variables, optimizer):
    """Return an apply_step for run_both that runs stateless_apply under jax.jit.

    The new values are written back to the variables after each step, so
    that run_both reads them as it reads those of apply_gradients.
    """
    import jax

    optimizer.build(variables)
    stateless_apply = jax.jit(optimizer.stateless_apply)

    def apply_step(optimizer, pairs):
        gradients = [gradient for gradient, _ in pairs]
        new_values, new_state = stateless_apply(
            [slot.value for slot in optimizer.variables],
            gradients,
            [variable.value for variable in variables],
        )
        for variable, value in zip(variables, new_values):
            variable.assign(value)
        for slot, value in zip(optimizer.variables, new_state):
            slot.assign(value)

    return apply_step


JIT_STEPS = {"tensorflow": tensorflow_xla_step, "jax": jax_jit_step}

SETTINGS = {
    "defaults": {},
    "nesterov off": {"nesterov": False, "weight_decay": None},
}


@pytest.mark.skipif(
    BACKEND not in JIT_STEPS, reason=f"no jit of optimizer steps on {BACKEND}"
)
@pytest.mark.parametrize("changes", SETTINGS.values(), ids=SETTINGS.keys())
def test_jit_steps_match_reference(changes, rng):
    hyper = Hyperparameters(**{"learning_rate": 0.02, **changes})
    cases = build_cases()
    optimizer = kerasmuon.Muon(**hyper.as_kwargs())
    apply_step = JIT_STEPS[BACKEND]([case.variable for case in cases], optimizer)
    gradients = random_gradients(rng, cases, STEPS)

    trajectories_by_label = run_both(
        cases, gradients, hyper, optimizer, apply_step=apply_step
    )

    assert_matches_reference(cases, trajectories_by_label)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_fit_matches_reference(jit_compile, rng):
    if jit_compile and BACKEND == "torch":
        pytest.skip("jit_compile=True on PyTorch runs torch.compile, not tested here")
    hyper = Hyperparameters(learning_rate=0.05)
    batches = make_batches(rng, STEPS, batch_size=8)
    model = linear_model(
        optimizer=kerasmuon.Muon(**hyper.as_kwargs()), jit_compile=jit_compile
    )
    initial = weights(model)
    history = WeightHistory()

    # One batch per epoch, so that each epoch is one step.
    fit_steps(model, batches, callbacks=[history])

    gradients = [batch_gradients(*batch) for batch in batches]
    expected = reference_values(hyper, initial, gradients)
    assert model.jit_compile == jit_compile
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == STEPS
    assert_fit_matches(trajectories(initial, history.values, expected))
