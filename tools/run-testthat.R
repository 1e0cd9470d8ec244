# Run the testthat suite against the installed package and finish with one
# line "testthat: N passed, N failed, N skipped", exiting 1 on any failure.
# Snapshot tests are skipped unless NOT_CRAN is set.
Sys.setenv(NOT_CRAN = "true")

results <- as.data.frame(testthat::test_dir(
  "tests/testthat",
  package = "kerasmuon",
  load_package = "installed",
  reporter = testthat::ProgressReporter$new(show_praise = FALSE),
  stop_on_failure = FALSE
))

# One row per test: a test fails on a failed expectation or an error.
failed <- sum(results$failed > 0 | results$error)
skipped <- sum(results$skipped & !(results$failed > 0 | results$error))
passed <- nrow(results) - failed - skipped
cat(sprintf("testthat: %d passed, %d failed, %d skipped\n", passed, failed, skipped))
quit(status = if (failed > 0) 1 else 0)
