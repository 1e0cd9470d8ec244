#' Which step each variable of a model takes
#'
#' Lists every trainable variable of a Keras model with the step the Muon
#' optimizer gives it and why. Use it after choosing `exclude_layers`: a
#' pattern that matches nothing, or everything, shows up here at once.
#'
#' @param model A built Keras 3 model (a Python object).
#' @param optimizer An optimizer made by [optimizer_muon()], or `NULL` for
#'   the one `model` was compiled with. A model compiled with another
#'   optimizer, or not compiled, is then routed by the rules of
#'   `optimizer_muon()` with its defaults.
#'
#' @returns A data frame with one row per trainable variable and the columns
#'   `path`, `shape`, `matrix_view` (the (fan_in, fan_out) matrix the Muon
#'   step orthogonalizes, `NA` for variables of rank other than 2, 3 or 4),
#'   `step` (`"muon"` or `"adamw"`) and `reason`.
#' @seealso [optimizer_muon()] for the routing rules.
#' @export
#' @examplesIf reticulate::py_module_available("keras")
#' keras <- reticulate::import("keras")
#' inputs <- keras$Input(shape = list(8L))
#' hidden <- keras$layers$Dense(16L, activation = "relu")(inputs)
#' outputs <- keras$layers$Dense(1L, name = "output_dense")(hidden)
#' model <- keras$Model(inputs, outputs)
#' muon_routing(model, optimizer_muon(exclude_layers = "output_dense"))
muon_routing <- function(model, optimizer = NULL) {
  if (!inherits(model, "python.builtin.object") ||
      !reticulate::py_has_attr(model, "trainable_variables")) {
    abort_argument("model", "a Keras model", model, sys.call())
  }
  if (!is.null(optimizer) && !is_muon_optimizer(optimizer)) {
    abort_argument("optimizer", "an optimizer made by `optimizer_muon()`, or `NULL`", optimizer, sys.call())
  }

  rows <- kerasmuon_module()$routing_table(model, optimizer)
  data.frame(
    path = vapply(rows, function(row) row$path, character(1)),
    shape = vapply(rows, function(row) format_shape(row$shape), character(1)),
    matrix_view = vapply(rows, function(row) format_shape(row$matrix_view), character(1)),
    step = vapply(rows, function(row) row$step, character(1)),
    reason = vapply(rows, function(row) row$reason, character(1)),
    stringsAsFactors = FALSE
  )
}

# TRUE for a kerasmuon.Muon, also inside the LossScaleOptimizer that
# compile() wraps it in under the mixed_float16 policy.
is_muon_optimizer <- function(optimizer) {
  if (!inherits(optimizer, "python.builtin.object")) {
    return(FALSE)
  }
  if (reticulate::py_has_attr(optimizer, "inner_optimizer")) {
    optimizer <- optimizer$inner_optimizer
  }
  inherits(optimizer, "kerasmuon.optimizer.Muon")
}

format_shape <- function(dims) {
  if (is.null(dims)) NA_character_ else paste(unlist(dims), collapse = " x ")
}
