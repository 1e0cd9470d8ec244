.onLoad <- function(libname, pkgname) {
  # reticulate 1.41 and later read these declarations only when no Python
  # was chosen otherwise (RETICULATE_PYTHON, use_python(), r-keras); nothing
  # is installed or started here.
  if (exists("py_require", envir = asNamespace("reticulate"), inherits = FALSE)) {
    py_require <- get("py_require", envir = asNamespace("reticulate"))
    py_require(python_requirements("tensorflow"))
  }
  register_muon_with_keras()
}
