"""The `kerasmuon.Muon` optimizer."""

import contextlib

import keras
from keras import ops

from kerasmuon import routing
from kerasmuon import validation
from kerasmuon.newton_schulz import compute_dtype
from kerasmuon.newton_schulz import muon_update

# Keras prints the config of an optimizer whose class it cannot find, so the
# config of every saved `Muon` starts with this entry, which names what to
# load. The entry also makes Keras's own `keras.optimizers.Muon`, which
# `keras.optimizers.deserialize()` would otherwise build from this config by
# its class name, reject the config. It carries no setting.
LOAD_INSTRUCTIONS_KEY = "how_to_load"
LOAD_INSTRUCTIONS = (
    "This optimizer is kerasmuon.Muon from the R package kerasmuon. Load the "
    "package before loading the model: in R, run library(kerasmuon). In "
    'Python, add the folder returned by system.file("python", package = '
    '"kerasmuon") in R to sys.path, then run import kerasmuon.'
)

# The config of a built `Muon` stores the step and shape of each variable it
# was built for. Keras rebuilds a loaded optimizer before it restores the
# optimizer variables, so the rebuilt optimizer must take the same steps to
# create the same buffers. Routing by the rules alone can differ, because the
# paths of a Sequential model's variables lose the model's name when Keras
# 3.15 loads the model, and an `exclude_layers` pattern can match one form and
# not the other.
ROUTES_KEY = "routes"


@keras.saving.register_keras_serializable(package="kerasmuon")
class Muon(keras.optimizers.Optimizer):
    """Muon for weight matrices, AdamW for every other variable.

    Each variable is routed once, when the optimizer is built. These take the
    AdamW step: variables whose rank is not 2, 3 or 4, biases, Embedding
    tables (with `exclude_embeddings=True`), variables whose path matches an
    entry of `exclude_layers`, and kernels whose matrix view has a side of
    length 1. Every other variable takes the Muon step. See
    `kerasmuon.routing.matrix_view()` for how 3D and 4D kernels are viewed
    as matrices.

    The Muon step keeps a momentum buffer `m`, forms `u = g + momentum * m`
    (Nesterov) or `u = m`, orthogonalizes `u` with `ns_steps` quintic
    Newton-Schulz iterations, scales it by `sqrt(max(1, fan_out / fan_in))`
    and subtracts `learning_rate` times the result. The AdamW step is
    Adam with bias correction at learning rate
    `learning_rate * adam_lr_ratio`. Weight decay is decoupled and uses the
    learning rate of the variable's own step.

    Both steps of a float16 or bfloat16 variable are computed in float32,
    with float32 optimizer state, and the new value is rounded to the
    variable's dtype when it is stored.

    Args:
        learning_rate: A positive number, a
            `keras.optimizers.schedules.LearningRateSchedule` or a callable of
            no arguments. The Muon step's learning rate. Defaults to `0.001`.
        adam_beta_1: Decay rate of the AdamW first moment. Defaults to `0.9`.
        adam_beta_2: Decay rate of the AdamW second moment. Defaults to `0.999`.
        epsilon: Added to the AdamW denominator. Defaults to `1e-7`.
        weight_decay: Decoupled weight decay rate, or `None` for none.
            Defaults to `0.1`.
        exclude_layers: A regular expression or a list of them; a variable
            whose path matches any of them takes the AdamW step. A single
            string is one pattern. Defaults to `None`.
        exclude_embeddings: Whether Embedding tables take the AdamW step.
            Defaults to `True`.
        muon_a, muon_b, muon_c: Coefficients of the quintic Newton-Schulz
            iteration. Default to `3.4445`, `-4.775` and `2.0315`.
        adam_lr_ratio: The AdamW learning rate as a fraction of
            `learning_rate`. Defaults to `0.1`.
        momentum: Momentum of the Muon step, in [0, 1). Defaults to `0.95`.
        ns_steps: Number of Newton-Schulz iterations. Defaults to `6`.
        nesterov: Whether the Muon step uses Nesterov momentum.
            Defaults to `True`.
        clipnorm, clipvalue, global_clipnorm, use_ema, ema_momentum,
        ema_overwrite_frequency, loss_scale_factor,
        gradient_accumulation_steps, name: As for `keras.optimizers.Optimizer`,
            but checked whatever `use_ema` is. `clipnorm`, `clipvalue`,
            `global_clipnorm` and `loss_scale_factor` must be positive or
            `None`, `ema_momentum` in [0, 1], `ema_overwrite_frequency` an
            integer of at least 1 or `None`, `gradient_accumulation_steps`
            an integer of at least 2 or `None`, and `name` a string.

    Every numeric argument must be finite. A wrong type raises `TypeError`
    and a value out of range raises `ValueError`, naming the argument.

    `get_config()` adds two entries that are not arguments. `how_to_load`
    contains the steps to load kerasmuon, for a user who loads a saved model
    without it, and the constructor ignores it. `routes` is `None` until the
    optimizer is built, and then lists the step and shape of each variable.
    An optimizer created from such a config takes the same steps when it is
    built for variables of the same shapes, whatever their paths.
    """

    def __init__(
        self,
        learning_rate=0.001,
        adam_beta_1=0.9,
        adam_beta_2=0.999,
        epsilon=1e-7,
        weight_decay=0.1,
        clipnorm=None,
        clipvalue=None,
        global_clipnorm=None,
        use_ema=False,
        ema_momentum=0.99,
        ema_overwrite_frequency=None,
        loss_scale_factor=None,
        gradient_accumulation_steps=None,
        name="muon",
        exclude_layers=None,
        exclude_embeddings=True,
        muon_a=3.4445,
        muon_b=-4.775,
        muon_c=2.0315,
        adam_lr_ratio=0.1,
        momentum=0.95,
        ns_steps=6,
        nesterov=True,
        **kwargs,
    ):
        kwargs.pop(LOAD_INSTRUCTIONS_KEY, None)
        saved_routes = kwargs.pop(ROUTES_KEY, None)
        base_arguments = dict(
            clipnorm=clipnorm,
            clipvalue=clipvalue,
            global_clipnorm=global_clipnorm,
            use_ema=use_ema,
            ema_momentum=ema_momentum,
            ema_overwrite_frequency=ema_overwrite_frequency,
            loss_scale_factor=loss_scale_factor,
            gradient_accumulation_steps=gradient_accumulation_steps,
            name=name,
        )
        validation.check_base_arguments(learning_rate=learning_rate, **base_arguments)
        if not callable(learning_rate):
            # Keras accepts only a Python float, so an int or a NumPy number
            # is converted.
            learning_rate = float(learning_rate)
        super().__init__(
            learning_rate=learning_rate,
            weight_decay=weight_decay,
            **base_arguments,
            **kwargs,
        )
        validation.check_float("adam_beta_1", adam_beta_1, 0, 1, high_open=True)
        validation.check_float("adam_beta_2", adam_beta_2, 0, 1, high_open=True)
        validation.check_float("epsilon", epsilon, 0, low_open=True)
        if weight_decay is not None:
            validation.check_float("weight_decay", weight_decay, 0)
        validation.check_bool("exclude_embeddings", exclude_embeddings)
        validation.check_float("muon_a", muon_a)
        validation.check_float("muon_b", muon_b)
        validation.check_float("muon_c", muon_c)
        validation.check_float("adam_lr_ratio", adam_lr_ratio, 0)
        validation.check_float("momentum", momentum, 0, 1, high_open=True)
        validation.check_int("ns_steps", ns_steps, 1)
        validation.check_bool("nesterov", nesterov)

        self.adam_beta_1 = adam_beta_1
        self.adam_beta_2 = adam_beta_2
        self.epsilon = epsilon
        self.exclude_layers = routing.as_pattern_list(exclude_layers)
        self.exclude_embeddings = exclude_embeddings
        self.muon_a = muon_a
        self.muon_b = muon_b
        self.muon_c = muon_c
        self.adam_lr_ratio = adam_lr_ratio
        self.momentum = momentum
        self.ns_steps = ns_steps
        self.nesterov = nesterov
        self._patterns = routing.compile_patterns(self.exclude_layers)
        self._saved_routes = routing.check_saved_routes(saved_routes)

    def routes(self, variables):
        """Return the `kerasmuon.routing.Route` of each of `variables`.

        Once built, the optimizer returns the routes it uses for the
        variables it was built for. Other variables are routed by the rules,
        and the list is read as one model's variables, which is how
        MultiHeadAttention projections are recognised.
        """
        variables = list(variables)
        if self.built and all(
            self._var_key(variable) in self._trainable_variables_indices
            for variable in variables
        ):
            return [self._routes[self._get_variable_index(v)] for v in variables]
        return routing.route_variables(
            variables, self._patterns, self.exclude_embeddings
        )

    def route(self, variable):
        """Return the `kerasmuon.routing.Route` of a single variable.

        Once built, the optimizer returns the route it uses. Before that the
        variable is routed on its own, so a MultiHeadAttention projection
        kernel, whose layer cannot be recognised from it alone, gets the
        general view of rank-3 kernels.
        """
        if self.built and self._var_key(variable) in self._trainable_variables_indices:
            return self._routes[self._get_variable_index(variable)]
        return self.routes([variable])[0]

    def build(self, var_list):
        """Route every variable and create its optimizer state.

        Every variable gets a momentum buffer, and variables on the AdamW
        step also get a velocity buffer. An optimizer created from the config
        of a built one takes the steps stored in it, so that a loaded
        optimizer has the buffers that were saved.
        """
        if self.built:
            return
        super().build(var_list)

        routes = routing.route_variables(
            list(var_list), self._patterns, self.exclude_embeddings
        )
        if self._saved_routes is not None:
            routes = routing.apply_saved_routes(routes, var_list, self._saved_routes)
        self._routes = tuple(routes)
        self._momentums = [None] * len(var_list)
        self._velocities = [None] * len(var_list)
        for index, variable in enumerate(var_list):
            if self._overwrite_variable_with_gradient(variable):
                continue
            self._momentums[index] = self._add_state(variable, "momentum")
            if self._routes[index].step == routing.ADAMW:
                self._velocities[index] = self._add_state(variable, "velocity")

    def _add_state(self, variable, name):
        """Create a zero state buffer for `variable`, in its compute dtype.

        The buffers of float16 and bfloat16 variables are float32, because
        with the default adam_beta_2 a float16 second moment underflows to
        zero for gradients below about 8e-3 and overflows for gradients
        above 256.
        """
        dtype = compute_dtype(variable.dtype)
        if dtype == keras.backend.standardize_dtype(variable.dtype):
            return self.add_variable_from_reference(variable, name=name)
        with self._placed_beside(variable):
            return self.add_variable(
                shape=variable.shape,
                dtype=dtype,
                name=f"{variable.path.replace('/', '_')}_{name}",
                layout=getattr(variable, "_layout", None),
            )

    def _placed_beside(self, variable):
        """Return a context in which new variables are placed with `variable`.

        On TensorFlow, Keras's optimizer keeps the tf.distribute strategy in
        scope when it was created, and `add_variable_from_reference`
        colocates each buffer with its variable through it. This does the
        same for the float32 buffers of 16-bit variables. JAX places them by
        the layout passed to `add_variable`, and PyTorch has no strategy.
        """
        strategy = getattr(self, "_distribution_strategy", None)
        if strategy is None:
            return contextlib.nullcontext()
        return strategy.extended.colocate_vars_with(getattr(variable, "value", variable))

    def update_step(self, gradient, variable, learning_rate):
        """Apply weight decay and the variable's own step.

        Both steps of a float16 or bfloat16 variable run in float32, and the
        new value is rounded to the variable's dtype once, when it is stored.
        """
        index = self._get_variable_index(variable)
        route = self._routes[index]
        dtype = compute_dtype(variable.dtype)
        gradient = ops.cast(gradient, dtype)
        value = ops.cast(variable, dtype)

        if route.step == routing.MUON:
            step_lr = ops.cast(learning_rate, dtype)
            update = self._muon_direction(gradient, index, route.matrix_view)
            update_lr = step_lr
        else:
            step_lr = ops.cast(learning_rate * self.adam_lr_ratio, dtype)
            update, correction = self._adamw_direction(gradient, index, dtype)
            update_lr = step_lr * correction

        # The scalar factors are multiplied first, so that the new value
        # takes three element-wise operations: value - update_lr * update,
        # with the value first scaled by 1 - decay * step_lr.
        if self.weight_decay is not None and self._use_weight_decay(variable):
            value = value * (1 - ops.cast(self.weight_decay, dtype) * step_lr)
        new_value = value - update_lr * update
        self.assign(variable, ops.cast(new_value, variable.dtype))

    def _muon_direction(self, gradient, index, view):
        buffer = self._momentums[index]
        new_buffer = self.momentum * buffer + gradient
        self.assign(buffer, new_buffer)

        if self.nesterov:
            direction = gradient + self.momentum * new_buffer
        else:
            direction = new_buffer
        coefficients = (self.muon_a, self.muon_b, self.muon_c)
        return muon_update(direction, view, coefficients, self.ns_steps)

    def _adamw_direction(self, gradient, index, dtype):
        """Update the moments and return the AdamW direction and its bias correction.

        The correction is a scalar, which the caller folds into the
        learning rate instead of multiplying the direction by it.
        """
        first_moment = self._momentums[index]
        second_moment = self._velocities[index]
        new_first = first_moment + (gradient - first_moment) * (1 - self.adam_beta_1)
        new_second = second_moment + (ops.square(gradient) - second_moment) * (
            1 - self.adam_beta_2
        )
        self.assign(first_moment, new_first)
        self.assign(second_moment, new_second)

        step = ops.cast(self.iterations + 1, dtype)
        beta_1_power = ops.power(ops.cast(self.adam_beta_1, dtype), step)
        beta_2_power = ops.power(ops.cast(self.adam_beta_2, dtype), step)
        correction = ops.sqrt(1 - beta_2_power) / (1 - beta_1_power)
        return new_first / (ops.sqrt(new_second) + self.epsilon), correction

    def _apply_weight_decay(self, variables):
        # Weight decay is applied in update_step instead, because it uses the
        # learning rate of each variable's own step.
        return

    def get_config(self):
        config = {LOAD_INSTRUCTIONS_KEY: LOAD_INSTRUCTIONS}
        config.update(super().get_config())
        if self.built:
            routes = routing.describe_routes(self._routes, self._trainable_variables)
        else:
            routes = self._saved_routes
        config.update(
            {
                "adam_beta_1": self.adam_beta_1,
                "adam_beta_2": self.adam_beta_2,
                "epsilon": self.epsilon,
                "exclude_layers": list(self.exclude_layers),
                "exclude_embeddings": self.exclude_embeddings,
                "muon_a": self.muon_a,
                "muon_b": self.muon_b,
                "muon_c": self.muon_c,
                "adam_lr_ratio": self.adam_lr_ratio,
                "momentum": self.momentum,
                "ns_steps": self.ns_steps,
                "nesterov": self.nesterov,
                ROUTES_KEY: routes,
            }
        )
        return config

