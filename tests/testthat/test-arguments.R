# Bad input is rejected in R, before Python starts, with an error of class
# `kerasmuon_invalid_argument` that names the argument. The exact messages
# are pinned in test-argument-messages.R.

bad_arguments <- list(
  learning_rate = list(-0.01, "0.01", NA_real_, c(0.1, 0.2), function(step) 0.01),
  adam_beta_1 = list(1, -0.1, NA_real_),
  adam_beta_2 = list(1.5, "0.9"),
  epsilon = list(0, -1e-7),
  weight_decay = list(-0.1, NaN),
  clipnorm = list(0, "1"),
  clipvalue = list(-1, TRUE),
  global_clipnorm = list(0, c(1, 2)),
  use_ema = list(NA, "TRUE", 1),
  ema_momentum = list(1.5, -0.5),
  ema_overwrite_frequency = list(0, 0.5, NA_integer_),
  loss_scale_factor = list(0, "2"),
  gradient_accumulation_steps = list(1, 2.5, -3L),
  name = list("", c("a", "b"), NA_character_, 3),
  exclude_layers = list(c("dense", NA), 3, list("output_dense"), "(", c("ok", "[z-a]")),
  exclude_embeddings = list(1, NA, "yes"),
  muon_a = list(Inf, NA_real_),
  muon_b = list(-Inf, "1"),
  muon_c = list(c(1, 2), NULL),
  adam_lr_ratio = list(-1, NA_real_),
  momentum = list(1, -0.1, 0.95 + 0i),
  ns_steps = list(6.5, 0L, NA_integer_, "6", 3e9),
  nesterov = list("yes", NA, c(TRUE, FALSE))
)

test_that("every argument rejects bad input", {
  for (arg in names(bad_arguments)) {
    for (value in bad_arguments[[arg]]) {
      args <- setNames(list(value), arg)
      if (is.null(value)) args <- structure(list(NULL), names = arg)

      error <- tryCatch(do.call(optimizer_muon, args), error = function(e) e)

      expect_s3_class(error, "kerasmuon_invalid_argument")
      expect_match(conditionMessage(error), paste0("`", arg, "`"), fixed = TRUE)
    }
  }
})

test_that("ns_steps message names value", {
  expect_error(
    optimizer_muon(ns_steps = 6.5),
    "`ns_steps` must be a whole number of at least 1, not 6.5.",
    fixed = TRUE,
    class = "kerasmuon_invalid_argument"
  )
})

test_that("only one clipping argument is allowed", {
  expect_error(
    optimizer_muon(clipnorm = 1, clipvalue = 0.5),
    "Only one of `clipnorm`, `clipvalue` and `global_clipnorm` can be set, not `clipnorm` and `clipvalue`.",
    fixed = TRUE,
    class = "kerasmuon_invalid_argument"
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
