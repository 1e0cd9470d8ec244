# The bundled Python module, imported on first use so that the package
# attaches on a machine without Python.
.python <- new.env(parent = emptyenv())

#' Import the bundled Python module
#'
#' Starts Python on first use. `RETICULATE_PYTHON` is honoured; without it,
#' and with no Python started yet, the `r-keras` virtual environment that
#' keras3's `install_keras()` creates is used when it exists.
#'
#' @returns The `kerasmuon` Python module.
#' @noRd
kerasmuon_module <- function() {
  if (!is.null(.python$module)) {
    return(.python$module)
  }

  use_r_keras_environment()
  started <- tryCatch(
    reticulate::py_available(initialize = TRUE),
    error = function(e) conditionMessage(e)
  )
  if (!isTRUE(started)) {
    problem <- if (is.character(started)) started else "No Python could be found."
    stop(python_missing_message(paste("Python failed to start:", problem)), call. = FALSE)
  }
  if (!reticulate::py_module_available("keras")) {
    python <- reticulate::py_config()$python
    stop(python_missing_message(sprintf(
      "The Python module 'keras' is not installed in %s.", python
    )), call. = FALSE)
  }

  path <- system.file("python", package = "kerasmuon", mustWork = TRUE)
  .python$module <- reticulate::import_from_path("kerasmuon", path = path)
  .python$module
}

# Registers `kerasmuon.Muon` with Keras as soon as Python has imported keras,
# so that load_model() finds the class of a saved optimizer without
# `custom_objects`. Called from .onLoad(), it never starts Python.
register_muon_with_keras <- function() {
  if (reticulate::py_available(initialize = FALSE) && keras_imported()) {
    import_for_keras()
  } else {
    # reticulate runs the hooks named "reticulate::<module>::load" once,
    # after Python first imports that module from anywhere. Its own
    # py_register_load_hook() stores hooks under the same name (read in
    # reticulate 1.28 and in its current source).
    setHook("reticulate::keras::load", import_for_keras)
  }
  invisible(NULL)
}

keras_imported <- function() {
  reticulate::py_eval("'keras' in __import__('sys').modules")
}

import_for_keras <- function() {
  tryCatch(
    kerasmuon_module(),
    error = function(e) {
      warning(
        "kerasmuon.Muon could not be registered with Keras, so load_model() ",
        "cannot restore it: ", conditionMessage(e),
        call. = FALSE
      )
    }
  )
  invisible(NULL)
}

use_r_keras_environment <- function() {
  chosen <- nzchar(Sys.getenv("RETICULATE_PYTHON")) ||
    reticulate::py_available(initialize = FALSE)
  if (!chosen && reticulate::virtualenv_exists("r-keras")) {
    reticulate::use_virtualenv("r-keras", required = FALSE)
  }
}

python_missing_message <- function(problem) {
  paste(
    problem,
    "kerasmuon needs Python with 'keras' (>= 3.0) and a backend. To install them",
    "into the 'r-keras' virtual environment, run kerasmuon::install_kerasmuon()",
    "and restart R. To use another Python that has them, set RETICULATE_PYTHON",
    "to its path before the first kerasmuon call.",
    sep = "\n"
  )
}

# TRUE when the bundled module imports, so examples and tests can be skipped
# on machines without Python and keras.
python_ready <- function() {
  tryCatch(
    {
      kerasmuon_module()
      TRUE
    },
    error = function(e) FALSE
  )
}
