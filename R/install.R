#' Install the Python packages kerasmuon needs
#'
#' Installs Keras 3 and one backend into a Python virtual environment with
#' pip, creating the environment first when it does not exist. The default
#' environment, `r-keras`, is the one keras3's `install_keras()` creates and
#' the one kerasmuon uses when `RETICULATE_PYTHON` is not set.
#'
#' Restart R after installing, because reticulate binds one Python per
#' session.
#'
#' @param envname Name of, or path to, the virtual environment. Defaults to
#'   `"r-keras"`.
#' @param backend The Keras backend to install: `"tensorflow"` (the
#'   default), `"jax"` or `"torch"`.
#' @param python Python interpreter used to create a new environment, or
#'   `NULL` to let reticulate choose one. Defaults to `NULL`.
#'
#' @returns The path of the environment's Python, invisibly.
#' @seealso [optimizer_muon()]
#' @export
#' @examples
#' \dontrun{
#' install_kerasmuon()
#' install_kerasmuon("~/venvs/muon", backend = "jax")
#' }
install_kerasmuon <- function(envname = "r-keras", backend = c("tensorflow", "jax", "torch"),
                              python = NULL) {
  call <- sys.call()
  check_string(envname, "envname", call)
  if (!is.character(backend) || length(backend) < 1 || anyNA(backend)) {
    abort_argument("backend", "one of \"tensorflow\", \"jax\" or \"torch\"", backend, call)
  }
  backend <- backend[[1]]
  if (!backend %in% c("tensorflow", "jax", "torch")) {
    abort_argument("backend", "one of \"tensorflow\", \"jax\" or \"torch\"", backend, call)
  }
  if (!is.null(python)) check_string(python, "python", call)

  if (!reticulate::virtualenv_exists(envname)) {
    reticulate::virtualenv_create(envname, python = python)
  }
  reticulate::virtualenv_install(envname, python_requirements(backend), ignore_installed = FALSE)

  interpreter <- reticulate::virtualenv_python(envname)
  message(sprintf(
    "Installed keras with the %s backend into %s. Restart R to use it.",
    backend, interpreter
  ))
  invisible(interpreter)
}

# pip requirements for Keras with one backend. reticulate before 1.39 cannot
# exchange arrays with numpy 2, so numpy is pinned below 2 there.
python_requirements <- function(backend, reticulate_version = utils::packageVersion("reticulate")) {
  backend_packages <- switch(backend,
    tensorflow = "tensorflow-cpu",
    jax = c("jax", "jaxlib"),
    torch = "torch"
  )
  numpy <- if (reticulate_version < "1.39") "numpy<2" else "numpy"
  c("keras>=3.0", backend_packages, numpy)
}
