# Tests that need Python call this first, so that a machine without Python
# and keras skips them with the reason instead of failing.
skip_if_no_keras <- function() {
  if (!kerasmuon:::python_ready()) {
    skip("Python with the 'keras' module is not available to reticulate")
  }
}

py_builtins <- function() {
  reticulate::import_builtins(convert = FALSE)
}

# The Python type name of attribute `name` of a Python object.
py_type_name <- function(object, name) {
  builtins <- py_builtins()
  value <- builtins$getattr(object, name)
  reticulate::py_to_r(builtins$type(value)$`__name__`)
}

keras_module <- function() {
  reticulate::import("keras")
}

np <- function() {
  reticulate::import("numpy", convert = FALSE)
}

# Read a Keras variable as an R array.
variable_values <- function(variable) {
  values <- variable$numpy()
  if (inherits(values, "python.builtin.object")) reticulate::py_to_r(values) else values
}
