# Every argument of optimizer_muon() must reach Python with the R value and
# the intended Python type: float for numbers, int for whole-number
# arguments, bool for flags, a list for exclude_layers, None for NULL.

expected_formals <- list(
  learning_rate = 0.001, adam_beta_1 = 0.9, adam_beta_2 = 0.999, epsilon = 1e-07,
  weight_decay = 0.1, clipnorm = NULL, clipvalue = NULL, global_clipnorm = NULL,
  use_ema = FALSE, ema_momentum = 0.99, ema_overwrite_frequency = NULL,
  loss_scale_factor = NULL, gradient_accumulation_steps = NULL, name = "muon",
  exclude_layers = NULL, exclude_embeddings = TRUE, muon_a = 3.4445, muon_b = -4.775,
  muon_c = 2.0315, adam_lr_ratio = 0.1, momentum = 0.95, ns_steps = 6L, nesterov = TRUE
)

# The Python type each argument must have when it is not None.
python_types <- c(
  adam_beta_1 = "float", adam_beta_2 = "float", epsilon = "float",
  weight_decay = "float", clipnorm = "float", clipvalue = "float",
  global_clipnorm = "float", use_ema = "bool", ema_momentum = "float",
  ema_overwrite_frequency = "int", loss_scale_factor = "float",
  gradient_accumulation_steps = "int", name = "str", exclude_embeddings = "bool",
  muon_a = "float", muon_b = "float", muon_c = "float", adam_lr_ratio = "float",
  momentum = "float", ns_steps = "int", nesterov = "bool"
)

# Compare each Python attribute with the R value it came from.
expect_python_holds <- function(opt, values) {
  for (arg in names(python_types)) {
    value <- values[[arg]]
    held <- reticulate::py_to_r(py_builtins()$getattr(opt, arg))
    type <- py_type_name(opt, arg)

    if (is.null(value)) {
      expect_null(held, label = arg)
      expect_identical(type, "NoneType", label = arg)
    } else {
      expect_equal(held, value, label = arg)
      expect_identical(type, python_types[[arg]], label = arg)
    }
  }

  learning_rate <- variable_values(opt$learning_rate)
  # The rate is stored in a float32 Keras variable.
  expect_equal(learning_rate, values$learning_rate, tolerance = 1e-7)

  patterns <- py_builtins()$getattr(opt, "exclude_layers")
  expect_true(reticulate::py_to_r(py_builtins()$isinstance(patterns, py_builtins()$list)))
  held <- reticulate::py_to_r(py_builtins()$list(patterns))
  expect_identical(as.character(unlist(held)), as.character(values$exclude_layers))
  expect_identical(length(held), length(values$exclude_layers))
}

test_that("formals match the documented signature", {
  actual <- lapply(formals(optimizer_muon)[names(expected_formals)], eval)

  expect_identical(names(formals(optimizer_muon)), c(names(expected_formals), "..."))
  expect_identical(actual, expected_formals)
})

test_that("defaults reach Python with their types", {
  skip_if_no_keras()

  opt <- optimizer_muon()

  expect_python_holds(opt, expected_formals)
})

test_that("non-default values reach Python", {
  skip_if_no_keras()
  values <- list(
    learning_rate = 0.02, adam_beta_1 = 0.8, adam_beta_2 = 0.99, epsilon = 1e-6,
    weight_decay = NULL, clipnorm = 1.5, clipvalue = NULL, global_clipnorm = NULL,
    use_ema = TRUE, ema_momentum = 0.9, ema_overwrite_frequency = 5L,
    loss_scale_factor = 128, gradient_accumulation_steps = 3L, name = "hidden_muon",
    exclude_layers = c("output_dense", "^head/"), exclude_embeddings = FALSE,
    muon_a = 2, muon_b = -1.5, muon_c = 0.5, adam_lr_ratio = 0.5, momentum = 0.9,
    ns_steps = 4L, nesterov = FALSE
  )

  opt <- do.call(optimizer_muon, values)

  expect_python_holds(opt, values)
})

test_that("whole doubles become Python integers", {
  skip_if_no_keras()

  opt <- optimizer_muon(ns_steps = 6, gradient_accumulation_steps = 4, use_ema = TRUE,
                        ema_overwrite_frequency = 10)

  for (arg in c("ns_steps", "gradient_accumulation_steps", "ema_overwrite_frequency")) {
    expect_identical(py_type_name(opt, arg), "int", label = arg)
  }
  expect_identical(reticulate::py_to_r(py_builtins()$getattr(opt, "ns_steps")), 6L)
})

test_that("clipping arguments reach Python", {
  skip_if_no_keras()

  by_value <- optimizer_muon(clipvalue = 0.5)
  by_global_norm <- optimizer_muon(global_clipnorm = 2)

  expect_identical(by_value$clipvalue, 0.5)
  expect_identical(py_type_name(by_value, "clipvalue"), "float")
  expect_identical(by_global_norm$global_clipnorm, 2)
  expect_identical(py_type_name(by_global_norm, "global_clipnorm"), "float")
})

test_that("one exclude_layers string is a list of one", {
  skip_if_no_keras()

  opt <- optimizer_muon(exclude_layers = "output_dense")
  patterns <- py_builtins()$getattr(opt, "exclude_layers")

  expect_true(reticulate::py_to_r(py_builtins()$isinstance(patterns, py_builtins()$list)))
  expect_identical(reticulate::py_to_r(py_builtins()$len(patterns)), 1L)
  expect_identical(reticulate::py_to_r(patterns[0L]), "output_dense")
})

test_that("dots are forwarded to Python", {
  skip_if_no_keras()

  error <- tryCatch(optimizer_muon(not_an_argument = 1), error = function(e) e)

  expect_match(conditionMessage(error), "not_an_argument")
})
