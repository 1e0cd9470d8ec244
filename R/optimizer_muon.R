#' Muon optimizer for Keras 3
#'
#' Builds a `kerasmuon.Muon` optimizer, a subclass of Keras 3's `Optimizer`,
#' ready for `compile()`. Muon orthogonalizes the momentum of each weight
#' matrix with a quintic Newton-Schulz iteration; every other variable takes
#' an AdamW step.
#'
#' @section Which step each variable takes:
#' The route of each variable is decided once, when the optimizer is built:
#'
#' * AdamW for variables whose rank is not 2, 3 or 4 (norms, rank-1 biases).
#' * AdamW for biases (variables named `bias`, including the 2D biases of
#'   MultiHeadAttention's query, key and value projections).
#' * AdamW, when `exclude_embeddings = TRUE`, for the tables of Embedding
#'   layers (variables named `embeddings`). A layer whose name merely contains
#'   "embedding" keeps Muon.
#' * AdamW for variables whose path (for example `output_dense/kernel`)
#'   matches any regular expression in `exclude_layers`.
#' * AdamW for kernels whose matrix view has a side of length 1, such as
#'   DepthwiseConv2D kernels with a depth multiplier of 1.
#' * Muon for every other variable.
#'
#' The matrix view is the linear map a kernel holds, as (fan_in, fan_out):
#' Dense kernels as they are; Conv1D and Conv2D kernels, shaped
#' (..., in, out), as (product of all axes but the last, out);
#' MultiHeadAttention's query, key and value kernels, shaped
#' (d, heads, head_dim), as (d, heads * head_dim); its output kernel, shaped
#' (heads, head_dim, d), as (heads * head_dim, d). [muon_routing()] shows the
#' route and the view of every variable of a model.
#'
#' @section The two steps:
#' Muon keeps a momentum buffer `m <- momentum * m + g`, takes
#' `u <- g + momentum * m` (or `u <- m` without Nesterov), divides the matrix
#' view of `u` by its Frobenius norm, runs `ns_steps` iterations of
#' `X <- a X + (b A + c A A) X` with `A = X X^T`, scales the result by
#' `sqrt(max(1, fan_out / fan_in))` and subtracts `learning_rate` times it.
#' Both steps of a float16 or bfloat16 variable run in float32, with float32
#' optimizer state, and the result is rounded once when it is stored.
#'
#' AdamW uses the learning rate `learning_rate * adam_lr_ratio` with bias
#' correction. Weight decay is decoupled and applied before either step,
#' scaled by the learning rate of the variable's own step.
#'
#' @section Saving, loading and resuming:
#' `library(kerasmuon)` registers `kerasmuon.Muon` with Keras as soon as
#' Python imports keras. `keras$saving$load_model()` then restores the
#' optimizer of a `.keras` file without `custom_objects`: its arguments, its
#' momentum and velocity buffers and its iteration count. In Python, add the
#' folder that `system.file("python", package = "kerasmuon")` returns to
#' `sys.path` and run `import kerasmuon` before loading. Without the package,
#' Keras fails with "Could not locate class 'Muon'" followed by the saved
#' config, whose first entry, `how_to_load`, says what to load. reticulate
#' 1.28 cannot show a Python error message longer than
#' `getOption("warning.length")` and reports a "basic_string::substr" error
#' instead. `reticulate::py_last_error()` then shows the Keras message.
#'
#' To resume training, save checkpoints with
#' `keras$callbacks$ModelCheckpoint("checkpoint.keras")`, load the file in
#' the new session and call `fit()` with `initial_epoch` set to the number of
#' epochs done. With `shuffle = FALSE` and the same data, the weights then
#' match those of one uninterrupted run on CPU. Load a model trained under
#' the `mixed_float16` policy under that policy too, because Keras 3.15
#' wraps the optimizer in a `LossScaleOptimizer` only when it is set.
#'
#' The saved config lists the step each variable took, and the loaded
#' optimizer keeps those steps. Keras 3.15 drops the model name from the
#' variable paths of a loaded Sequential model, so a pattern in
#' `exclude_layers` that names the model would otherwise route the variable
#' differently and the saved buffers would not fit.
#'
#' A learning rate given as an R function is saved in a form Keras cannot
#' load: `load_model()` fails with "Could not locate function
#' 'python_function'". Use a Keras `LearningRateSchedule` for models you
#' save.
#'
#' @section Attaching keras3 as well:
#' keras3 exports an `optimizer_muon()` of its own, which builds Keras's
#' built-in Muon with other defaults and rules. Whichever package is attached
#' last masks the other, so call this one as `kerasmuon::optimizer_muon()`
#' when both are attached.
#'
#' @param learning_rate The Muon step's learning rate: a positive number, a
#'   Keras `LearningRateSchedule`, or an R function of no arguments returning
#'   the rate. Defaults to `0.001`.
#' @param adam_beta_1,adam_beta_2 Decay rates of the AdamW first and second
#'   moments, in \[0, 1). Default to `0.9` and `0.999`.
#' @param epsilon Positive constant added to the AdamW denominator. Defaults
#'   to `1e-07`.
#' @param weight_decay Decoupled weight decay rate, at least 0, or `NULL` for
#'   none. Defaults to `0.1`.
#' @param clipnorm,clipvalue,global_clipnorm Gradient clipping by norm, by
#'   value, or by the global norm of all gradients; at most one of them, each
#'   positive or `NULL`. Default to `NULL`.
#' @param use_ema Whether to keep an exponential moving average of the
#'   weights. Defaults to `FALSE`.
#' @param ema_momentum Momentum of that average, in \[0, 1]. Defaults to
#'   `0.99`.
#' @param ema_overwrite_frequency Every how many iterations the weights are
#'   overwritten with their moving average: a whole number of at least 1, or
#'   `NULL` for never. Defaults to `NULL`.
#' @param loss_scale_factor Positive factor the loss is multiplied by and the
#'   gradients divided by, or `NULL`. Defaults to `NULL`.
#' @param gradient_accumulation_steps Number of batches whose gradients are
#'   averaged before each update: a whole number of at least 2, or `NULL`.
#'   Defaults to `NULL`.
#' @param name Name of the optimizer. Defaults to `"muon"`.
#' @param exclude_layers Character vector of regular expressions, or `NULL`.
#'   Variables whose path matches any of them take the AdamW step. A single
#'   string is one pattern. Defaults to `NULL`.
#' @param exclude_embeddings Whether Embedding tables take the AdamW step.
#'   Defaults to `TRUE`.
#' @param muon_a,muon_b,muon_c Coefficients of the quintic Newton-Schulz
#'   iteration. Default to `3.4445`, `-4.775` and `2.0315`.
#' @param adam_lr_ratio The AdamW learning rate as a fraction of
#'   `learning_rate`, at least 0. Defaults to `0.1`.
#' @param momentum Momentum of the Muon step, in \[0, 1). Defaults to `0.95`.
#' @param ns_steps Number of Newton-Schulz iterations, a whole number of at
#'   least 1. Defaults to `6L`.
#' @param nesterov Whether the Muon step uses Nesterov momentum. Defaults to
#'   `TRUE`.
#' @param ... Further arguments passed on to the Python constructor.
#'
#' @returns A `kerasmuon.Muon` Python object, a Keras 3 optimizer.
#' @seealso [muon_routing()] to see which step each variable of a model takes.
#' @export
#' @examplesIf reticulate::py_module_available("keras")
#' keras <- reticulate::import("keras")
#' inputs <- keras$Input(shape = list(8L))
#' hidden <- keras$layers$Dense(16L, activation = "relu")(inputs)
#' outputs <- keras$layers$Dense(1L, name = "output_dense")(hidden)
#' model <- keras$Model(inputs, outputs)
#'
#' opt <- optimizer_muon(learning_rate = 0.02, exclude_layers = "output_dense")
#' model$compile(optimizer = opt, loss = "mse")
#' muon_routing(model, opt)
optimizer_muon <- function(learning_rate = 0.001, adam_beta_1 = 0.9, adam_beta_2 = 0.999,
                           epsilon = 1e-07, weight_decay = 0.1, clipnorm = NULL,
                           clipvalue = NULL, global_clipnorm = NULL, use_ema = FALSE,
                           ema_momentum = 0.99, ema_overwrite_frequency = NULL,
                           loss_scale_factor = NULL, gradient_accumulation_steps = NULL,
                           name = "muon", exclude_layers = NULL, exclude_embeddings = TRUE,
                           muon_a = 3.4445, muon_b = -4.775, muon_c = 2.0315,
                           adam_lr_ratio = 0.1, momentum = 0.95, ns_steps = 6L,
                           nesterov = TRUE, ...) {
  call <- sys.call()
  check_learning_rate(learning_rate, "learning_rate", call)
  check_number(adam_beta_1, "adam_beta_1", call, 0, 1, open = c(lower = FALSE, upper = TRUE))
  check_number(adam_beta_2, "adam_beta_2", call, 0, 1, open = c(lower = FALSE, upper = TRUE))
  check_number(epsilon, "epsilon", call, 0, open = c(lower = TRUE, upper = FALSE))
  check_number(weight_decay, "weight_decay", call, 0, allow_null = TRUE)
  check_number(clipnorm, "clipnorm", call, 0, open = c(lower = TRUE, upper = FALSE), allow_null = TRUE)
  check_number(clipvalue, "clipvalue", call, 0, open = c(lower = TRUE, upper = FALSE), allow_null = TRUE)
  check_number(global_clipnorm, "global_clipnorm", call, 0, open = c(lower = TRUE, upper = FALSE), allow_null = TRUE)
  check_one_clipping(clipnorm, clipvalue, global_clipnorm, call)
  check_bool(use_ema, "use_ema", call)
  check_number(ema_momentum, "ema_momentum", call, 0, 1)
  check_whole_number(ema_overwrite_frequency, "ema_overwrite_frequency", call, 1, allow_null = TRUE)
  check_number(loss_scale_factor, "loss_scale_factor", call, 0, open = c(lower = TRUE, upper = FALSE), allow_null = TRUE)
  check_whole_number(gradient_accumulation_steps, "gradient_accumulation_steps", call, 2, allow_null = TRUE)
  check_string(name, "name", call)
  check_patterns(exclude_layers, "exclude_layers", call)
  check_bool(exclude_embeddings, "exclude_embeddings", call)
  check_number(muon_a, "muon_a", call)
  check_number(muon_b, "muon_b", call)
  check_number(muon_c, "muon_c", call)
  check_number(adam_lr_ratio, "adam_lr_ratio", call, 0)
  check_number(momentum, "momentum", call, 0, 1, open = c(lower = FALSE, upper = TRUE))
  check_whole_number(ns_steps, "ns_steps", call, 1)
  check_bool(nesterov, "nesterov", call)

  module <- kerasmuon_module()
  module$Muon(
    learning_rate = as_py_learning_rate(learning_rate),
    adam_beta_1 = as.double(adam_beta_1),
    adam_beta_2 = as.double(adam_beta_2),
    epsilon = as.double(epsilon),
    weight_decay = as_double_or_null(weight_decay),
    clipnorm = as_double_or_null(clipnorm),
    clipvalue = as_double_or_null(clipvalue),
    global_clipnorm = as_double_or_null(global_clipnorm),
    use_ema = use_ema,
    ema_momentum = as.double(ema_momentum),
    ema_overwrite_frequency = as_integer_or_null(ema_overwrite_frequency),
    loss_scale_factor = as_double_or_null(loss_scale_factor),
    gradient_accumulation_steps = as_integer_or_null(gradient_accumulation_steps),
    name = name,
    exclude_layers = as_py_list(exclude_layers),
    exclude_embeddings = exclude_embeddings,
    muon_a = as.double(muon_a),
    muon_b = as.double(muon_b),
    muon_c = as.double(muon_c),
    adam_lr_ratio = as.double(adam_lr_ratio),
    momentum = as.double(momentum),
    ns_steps = as.integer(ns_steps),
    nesterov = nesterov,
    ...
  )
}

# Conversions made on purpose, so that reticulate's defaults never decide a
# Python type: an R double 6 would otherwise arrive as the float 6.0, and a
# single string as a `str` that Python would iterate character by character.

as_double_or_null <- function(x) {
  if (is.null(x)) NULL else as.double(x)
}

as_integer_or_null <- function(x) {
  if (is.null(x)) NULL else as.integer(x)
}

as_py_list <- function(x) {
  if (is.null(x)) NULL else reticulate::r_to_py(as.list(x))
}

as_py_learning_rate <- function(x) {
  if (is.numeric(x)) as.double(x) else x
}
