# On a machine whose Python lacks keras, the package still attaches and the
# first call says what to install. Each case runs in a fresh R process,
# because reticulate binds one Python per process.

run_r <- function(script, env) {
  # reticulate adds its Python to PATH, PYTHONPATH and VIRTUAL_ENV when it
  # starts one in this process; the child must not inherit that Python.
  python_bin <- file.path(Sys.getenv("VIRTUAL_ENV"), "bin")
  path <- setdiff(strsplit(Sys.getenv("PATH"), ":", fixed = TRUE)[[1]], python_bin)
  clean <- c("-u", "PYTHONPATH", "-u", "VIRTUAL_ENV", paste0("PATH=", paste(path, collapse = ":")))

  output <- suppressWarnings(system2(
    "env", c(clean, shQuote(env), file.path(R.home("bin"), "Rscript"), "-e", shQuote(script)),
    stdout = TRUE, stderr = TRUE
  ))
  paste(output, collapse = "\n")
}

# Create a virtual environment without keras at `path` and return its Python.
make_bare_venv <- function(path) {
  python <- Sys.which("python3")
  skip_if(!nzchar(python), "no python3 on PATH to build an empty environment from")
  status <- system2(python, c("-m", "venv", "--without-pip", path))
  skip_if(status != 0, "python3 could not create a virtual environment")
  file.path(path, "bin", "python")
}

test_that("missing keras gives an install message", {
  bare_python <- make_bare_venv(tempfile("bare-venv"))

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

test_that("r-keras environment is used when present", {
  workon_home <- tempfile("virtualenvs")
  dir.create(workon_home)
  r_keras_python <- make_bare_venv(file.path(workon_home, "r-keras"))

  # With RETICULATE_PYTHON unset, kerasmuon picks the r-keras environment
  # under WORKON_HOME. It has no keras, so the message names its Python.
  output <- run_r(
    "Sys.unsetenv('RETICULATE_PYTHON'); library(kerasmuon); optimizer_muon()",
    env = paste0("WORKON_HOME=", workon_home)
  )

  expect_match(output, "The Python module 'keras' is not installed in", fixed = TRUE)
  expect_match(output, file.path(workon_home, "r-keras"), fixed = TRUE)
})
