# The MirroredStrategy recipe that the vignette "Scaling out" shows is the
# installed script scripts/mirrored-strategy.R. It runs in a new R session,
# because TensorFlow accepts the split into two logical CPU devices only
# before its first operation. The session then trains the same model on one
# device and saves both results.

# Both runs train in float32. The mirrored run sums each batch's gradient
# in another order (one sum per replica, then an all-reduce), which changes
# the gradients by a few float32 roundings (about 1e-7 relative). Over 40
# steps the weights then differ by at most 4e-7 of their largest entry
# (measured on TensorFlow 2.21, 2-core x86-64). A lost replica's gradient
# would move them by more than 1e-2.
mirrored_tolerance <- 1e-5

compare_with_one_device <- c(
  'recipe <- system.file("scripts", "mirrored-strategy.R", package = "kerasmuon")',
  "source(recipe)",
  "mirrored_weights <- model$get_weights()",
  "single_model <- build_model()",
  "compile_model(single_model)",
  "single <- single_model$fit(x, y, batch_size = 64L, epochs = 5L, shuffle = FALSE, verbose = 0L)",
  "saveRDS(list(",
  "  replicas = strategy$num_replicas_in_sync,",
  "  losses = unlist(history$history$loss),",
  "  single_losses = unlist(single$history$loss),",
  "  mirrored_weights = mirrored_weights,",
  "  single_weights = single_model$get_weights(),",
  "  routing = muon_routing(model),",
  "  iterations = as.integer(model$optimizer$iterations$numpy())",
  "), 'result.rds')"
)

test_that("MirroredStrategy recipe matches one device", {
  skip_if_no_keras()
  skip_if_quick()
  folder <- tempfile("mirrored")
  dir.create(folder)

  output <- run_new_session(compare_with_one_device, folder)
  result <- readRDS(file.path(folder, "result.rds"))

  expect_true(any(grepl("^Replicas: 2$", output)))
  expect_identical(result$replicas, 2L)
  # 512 rows in batches of 64 for 5 epochs.
  expect_identical(result$iterations, 40L)
  step_of <- setNames(result$routing$step, result$routing$path)
  expect_identical(step_of[["sequential/hidden_1/kernel"]], "muon")
  expect_identical(step_of[["sequential/output/kernel"]], "adamw")

  expect_length(result$mirrored_weights, length(result$single_weights))
  differences <- mapply(
    function(single, mirrored) max(abs(mirrored - single)) / max(1, abs(single)),
    result$single_weights, result$mirrored_weights
  )
  expect_lte(max(differences), mirrored_tolerance)
  expect_equal(result$losses, result$single_losses, tolerance = mirrored_tolerance)
  expect_lt(result$losses[[5]], result$losses[[1]])
})
