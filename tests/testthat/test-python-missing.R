# On a machine whose Python lacks keras, the package still attaches and the
# first call says what to install. Each case runs in a fresh R process,
# because reticulate binds one Python per process.

run_r <- function(script, env) {
  output <- suppressWarnings(system2(
    file.path(R.home("bin"), "Rscript"), c("-e", shQuote(script)),
    stdout = TRUE, stderr = TRUE, env = env
  ))
  paste(output, collapse = "\n")
}

test_that("missing keras gives an install message", {
  python <- Sys.which("python3")
  skip_if(!nzchar(python), "no python3 on PATH to build an empty environment from")
  venv <- file.path(tempfile("bare-venv"))
  status <- system2(python, c("-m", "venv", "--without-pip", venv))
  skip_if(status != 0, "python3 could not create a virtual environment")
  bare_python <- file.path(venv, "bin", "python")

  output <- run_r(
    "library(kerasmuon); cat('attached\\n'); optimizer_muon()",
    env = paste0("RETICULATE_PYTHON=", bare_python)
  )

  expect_match(output, "attached", fixed = TRUE)
  expect_match(output, "The Python module 'keras' is not installed in", fixed = TRUE)
  expect_match(output, bare_python, fixed = TRUE)
  expect_match(output, "kerasmuon::install_kerasmuon()", fixed = TRUE)
})

test_that("missing Python gives an install message", {
  output <- run_r(
    "library(kerasmuon); cat('attached\\n'); optimizer_muon()",
    env = paste0("RETICULATE_PYTHON=", file.path(tempdir(), "no-such-python"))
  )

  expect_match(output, "attached", fixed = TRUE)
  expect_match(output, "Python failed to start", fixed = TRUE)
  expect_match(output, "kerasmuon::install_kerasmuon()", fixed = TRUE)
})
