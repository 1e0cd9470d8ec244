# Bad input is rejected in R, before Python starts, with a message naming the
# argument, what it must be and what it received. None of these tests needs
# Python: the checks run first.

expect_invalid <- function(call, message) {
  expect_error(call, message, fixed = TRUE, class = "kerasmuon_invalid_argument")
}

test_that("ns_steps rejects fractions and NA", {
  expect_invalid(
    optimizer_muon(ns_steps = 6.5),
    "`ns_steps` must be a whole number of at least 1, not 6.5."
  )
  expect_invalid(optimizer_muon(ns_steps = 0L), "not 0.")
  expect_invalid(optimizer_muon(ns_steps = NA_integer_), "not `NA_integer_`.")
  expect_invalid(optimizer_muon(ns_steps = c(5L, 6L)), "not an integer vector of length 2.")
})

test_that("integer arguments reject fractions", {
  expect_invalid(
    optimizer_muon(gradient_accumulation_steps = 2.5),
    "`gradient_accumulation_steps` must be a whole number of at least 2 or NULL, not 2.5."
  )
  expect_invalid(
    optimizer_muon(gradient_accumulation_steps = 1),
    "`gradient_accumulation_steps` must be a whole number of at least 2 or NULL, not 1."
  )
  expect_invalid(
    optimizer_muon(ema_overwrite_frequency = 0.5),
    "`ema_overwrite_frequency` must be a whole number of at least 1 or NULL, not 0.5."
  )
})

test_that("exclude_layers must be patterns", {
  expect_invalid(
    optimizer_muon(exclude_layers = c("dense", NA)),
    "`exclude_layers` must be a character vector of regular expressions without NA, or NULL, not a character vector of length 2."
  )
  expect_invalid(
    optimizer_muon(exclude_layers = 3),
    "`exclude_layers` must be a character vector of regular expressions without NA, or NULL, not 3."
  )
  expect_invalid(
    optimizer_muon(exclude_layers = list("output_dense")),
    "not a list of length 1."
  )
  expect_invalid(
    optimizer_muon(exclude_layers = c("dense", "(")),
    "`exclude_layers` must be a vector of valid regular expressions, not \"(\"."
  )
})

test_that("ranges match the Python side", {
  expect_invalid(optimizer_muon(momentum = 1), "`momentum` must be a single number in [0, 1), not 1.")
  expect_invalid(optimizer_muon(momentum = -0.1), "`momentum` must be a single number in [0, 1), not -0.1.")
  expect_invalid(optimizer_muon(adam_beta_1 = 1), "`adam_beta_1` must be a single number in [0, 1), not 1.")
  expect_invalid(optimizer_muon(adam_beta_2 = NA_real_), "`adam_beta_2` must be a single number in [0, 1), not `NA_real_`.")
  expect_invalid(optimizer_muon(epsilon = 0), "`epsilon` must be a single number greater than 0, not 0.")
  expect_invalid(optimizer_muon(weight_decay = -0.1), "`weight_decay` must be a single number at least 0 or NULL, not -0.1.")
  expect_invalid(optimizer_muon(adam_lr_ratio = -1), "`adam_lr_ratio` must be a single number at least 0, not -1.")
  expect_invalid(optimizer_muon(ema_momentum = 1.5), "`ema_momentum` must be a single number in [0, 1], not 1.5.")
  expect_invalid(optimizer_muon(muon_a = Inf), "`muon_a` must be a single number (finite), not Inf.")
  expect_invalid(optimizer_muon(clipnorm = 0), "`clipnorm` must be a single number greater than 0 or NULL, not 0.")
  expect_invalid(optimizer_muon(loss_scale_factor = "2"), "`loss_scale_factor` must be a single number greater than 0 or NULL, not \"2\".")
})

test_that("flags and name reject other types", {
  expect_invalid(optimizer_muon(nesterov = "yes"), "`nesterov` must be `TRUE` or `FALSE`, not \"yes\".")
  expect_invalid(optimizer_muon(use_ema = NA), "`use_ema` must be `TRUE` or `FALSE`, not NA.")
  expect_invalid(optimizer_muon(exclude_embeddings = 1), "`exclude_embeddings` must be `TRUE` or `FALSE`, not 1.")
  expect_invalid(optimizer_muon(name = ""), "`name` must be a single non-empty string, not \"\".")
  expect_invalid(optimizer_muon(name = c("a", "b")), "`name` must be a single non-empty string, not a character vector of length 2.")
})

test_that("learning_rate takes numbers, schedules, functions", {
  expect_invalid(
    optimizer_muon(learning_rate = -0.01),
    "`learning_rate` must be a positive number, a Keras LearningRateSchedule or a function of no arguments, not -0.01."
  )
  expect_invalid(
    optimizer_muon(learning_rate = function(step) 0.01),
    "`learning_rate` must be a function of no arguments, not a function."
  )
})

test_that("only one clipping argument is allowed", {
  expect_invalid(
    optimizer_muon(clipnorm = 1, clipvalue = 0.5),
    "Only one of `clipnorm`, `clipvalue` and `global_clipnorm` can be set, not `clipnorm` and `clipvalue`."
  )
})

test_that("checks run before Python starts", {
  script <- paste(
    "library(kerasmuon)",
    "try(optimizer_muon(ns_steps = 6.5), silent = TRUE)",
    "cat(reticulate::py_available(initialize = FALSE))",
    sep = "; "
  )

  output <- system2(file.path(R.home("bin"), "Rscript"), c("-e", shQuote(script)), stdout = TRUE)

  expect_identical(output, "FALSE")
})
