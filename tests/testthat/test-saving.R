# Models compiled with optimizer_muon() are saved from this R session and
# loaded in new ones, as a user's next session would load them. Each new
# session is an Rscript process that writes what it restored to files in the
# folder of the saved models.

batch_size <- 16L
first_epochs <- 2L
total_epochs <- 4L

# Both runs execute the same float32 operations on the same batches in the
# same order, so on CPU they agree to the last bit: the largest difference
# measured was 0 (TensorFlow 2.21, 2-core x86-64). The tolerance, 8 float32
# ulps at 1 for weights of magnitude below 1, leaves room for a math library
# that sums in another order in the new process.
resume_tolerance <- 1e-6

several_patterns <- function() {
  optimizer_muon(
    learning_rate = 0.02,
    exclude_layers = c("^regressor/hidden_2/", "output_dense")
  )
}

one_string <- function() {
  optimizer_muon(
    learning_rate = 0.01, exclude_layers = "output_dense", weight_decay = 0.05,
    adam_beta_1 = 0.8, epsilon = 1e-6, adam_lr_ratio = 0.3, momentum = 0.9,
    ns_steps = 4L, nesterov = FALSE, name = "custom_muon"
  )
}

# A Sequential model whose variable paths start with "regressor/" until
# Keras 3.15 loads it, with the same initial weights on every call.
regressor <- function() {
  keras <- keras_module()
  keras$utils$set_random_seed(7L)
  keras$Sequential(list(
    keras$Input(shape = list(8L)),
    keras$layers$Dense(16L, activation = "tanh", name = "hidden_1"),
    keras$layers$Dense(16L, activation = "tanh", name = "hidden_2"),
    keras$layers$Dense(3L, name = "output_dense")
  ), name = "regressor")
}

# This session and the new ones read a model with the same helpers: the new
# sessions run a copy of their source, so they call reticulate by name.
values_of <- function(variables) {
  builtins <- reticulate::import_builtins(convert = FALSE)
  variables <- builtins$list(variables)
  lapply(seq_len(reticulate::py_len(variables)) - 1L, function(i) {
    reticulate::py_get_item(variables, i)$numpy()
  })
}

config_json <- function(optimizer) {
  builtins <- reticulate::import_builtins(convert = FALSE)
  json <- reticulate::import("json", convert = FALSE)
  config <- reticulate::py_call(builtins$getattr(optimizer, "get_config"))
  reticulate::py_to_r(json$dumps(config, sort_keys = TRUE))
}

save_values <- function(path, variables) {
  numpy <- reticulate::import("numpy", convert = FALSE)
  do.call(numpy$savez, c(list(path), values_of(variables)))
}

source_of <- function(names) {
  unlist(lapply(names, function(name) c(paste(name, "<-"), deparse(get(name)))))
}
session_helpers <- source_of(c("values_of", "config_json", "save_values"))

read_values <- function(path) {
  arrays <- np()$load(path)
  count <- reticulate::py_len(arrays$files)
  lapply(seq_len(count) - 1L, function(i) reticulate::py_get_item(arrays, paste0("arr_", i)))
}

as_r <- function(values) {
  lapply(values, function(value) reticulate::py_to_r(np()$asarray(value)))
}

# Load both models after library(kerasmuon), save what was restored, then
# resume from the checkpoint for the remaining epochs.
load_and_resume <- c(
  "library(kerasmuon)",
  'keras <- reticulate::import("keras")',
  session_helpers,
  "for (name in c('checkpoint', 'one_string')) {",
  "  model <- keras$saving$load_model(paste0(name, '.keras'))",
  "  writeLines(c(class(model$optimizer)[[1]], config_json(model$optimizer)),",
  "             paste0(name, '-config.txt'))",
  "  routing <- muon_routing(model, model$optimizer)",
  "  write.csv(routing[c('path', 'step')], paste0(name, '-routing.csv'), row.names = FALSE)",
  "  save_values(paste0(name, '-state.npz'), model$optimizer$variables)",
  "}",
  "data <- reticulate::import('numpy', convert = FALSE)$load('data.npz')",
  "model <- keras$saving$load_model('checkpoint.keras')",
  "model$fit(",
  "  reticulate::py_get_item(data, 'features'), reticulate::py_get_item(data, 'targets'),",
  sprintf("  batch_size = %dL, epochs = %dL, initial_epoch = %dL,", batch_size, total_epochs, first_epochs),
  "  shuffle = FALSE, verbose = 0L",
  ")",
  "save_values('resumed.npz', model$weights)",
  "writeLines(format(model$optimizer$iterations$numpy()), 'iterations.txt')"
)

# Load a model before library(kerasmuon), then after it in the same session.
# The R condition message and the Python exception are saved separately,
# because reticulate 1.28 replaces the message of a Python exception longer
# than getOption("warning.length") with a C++ "basic_string::substr" error.
load_without_package <- c(
  'keras <- reticulate::import("keras")',
  "outcome <- tryCatch({",
  "  keras$saving$load_model('one_string.keras')",
  "  'loaded'",
  "}, error = conditionMessage)",
  "writeLines(outcome, 'without-package.txt')",
  "error <- reticulate::py_last_error()",
  "writeLines(if (is.null(error)) 'no Python error' else error$value, 'python-error.txt')",
  "library(kerasmuon)",
  "model <- keras$saving$load_model('one_string.keras')",
  "writeLines(class(model$optimizer)[[1]], 'after-library.txt')"
)

fit_regressor <- function(model, data, epochs, ...) {
  model$fit(
    data$features, data$targets, batch_size = batch_size, epochs = epochs,
    shuffle = FALSE, verbose = 0L, ...
  )
}

# Train and save both models, run both new sessions and train the reference
# run. Every test reads the same result, or the same error, computed on
# first use.
saved_session <- local({
  result <- NULL
  function() {
    if (is.null(result)) result <<- tryCatch(save_and_load(), error = identity)
    if (inherits(result, "error")) stop(result)
    result
  }
})

save_and_load <- function() {
  keras <- keras_module()
  folder <- tempfile("kerasmuon-saving-")
  dir.create(folder)
  set.seed(3)
  features <- matrix(rnorm(64 * 8), ncol = 8)
  targets <- features %*% matrix(rnorm(8 * 3), ncol = 3)
  data <- list(
    features = np()$array(features, dtype = "float32"),
    targets = np()$array(targets, dtype = "float32")
  )
  np()$savez(file.path(folder, "data.npz"), features = data$features, targets = data$targets)

  first <- regressor()
  first_initial <- as_r(values_of(first$weights))
  first$compile(optimizer = several_patterns(), loss = "mse")
  checkpoint <- keras$callbacks$ModelCheckpoint(file.path(folder, "checkpoint.keras"))
  fit_regressor(first, data, first_epochs, callbacks = list(checkpoint))

  one_string_model <- regressor()
  one_string_model$compile(optimizer = one_string(), loss = "mse")
  fit_regressor(one_string_model, data, first_epochs)
  one_string_model$save(file.path(folder, "one_string.keras"))

  run_new_session(load_and_resume, folder)
  run_new_session(load_without_package, folder)

  reference <- regressor()
  reference_initial <- as_r(values_of(reference$weights))
  reference$compile(optimizer = several_patterns(), loss = "mse")
  fit_regressor(reference, data, total_epochs)

  list(
    folder = folder,
    models = list(checkpoint = first, one_string = one_string_model),
    initial = list(first = first_initial, reference = reference_initial),
    reference = as_r(values_of(reference$weights))
  )
}

read_restored <- function(session, name) {
  lines <- readLines(file.path(session$folder, paste0(name, "-config.txt")))
  list(
    class = lines[[1]],
    config = paste(lines[-1], collapse = "\n"),
    routing = utils::read.csv(file.path(session$folder, paste0(name, "-routing.csv"))),
    state = as_r(read_values(file.path(session$folder, paste0(name, "-state.npz"))))
  )
}

test_that("load_model restores a kerasmuon Muon", {
  skip_if_no_keras()
  session <- saved_session()

  for (name in c("checkpoint", "one_string")) {
    restored <- read_restored(session, name)
    expect_identical(restored$class, "kerasmuon.optimizer.Muon", label = name)
  }
})

test_that("load_model restores every argument", {
  skip_if_no_keras()
  session <- saved_session()

  for (name in c("checkpoint", "one_string")) {
    restored <- read_restored(session, name)
    expect_identical(restored$config, config_json(session$models[[name]]$optimizer), label = name)
  }
  json <- reticulate::import("json")
  one_string_config <- json$loads(read_restored(session, "one_string")$config)
  several_config <- json$loads(read_restored(session, "checkpoint")$config)
  expect_identical(one_string_config$exclude_layers, "output_dense")
  expect_identical(one_string_config$ns_steps, 4L)
  expect_identical(one_string_config$nesterov, FALSE)
  expect_identical(one_string_config$name, "custom_muon")
  expect_identical(several_config$exclude_layers, c("^regressor/hidden_2/", "output_dense"))
})

test_that("load_model restores every buffer", {
  skip_if_no_keras()
  session <- saved_session()

  for (name in c("checkpoint", "one_string")) {
    optimizer <- session$models[[name]]$optimizer
    expected <- as_r(values_of(optimizer$variables))
    restored <- read_restored(session, name)$state

    expect_identical(length(restored), length(expected), label = name)
    for (i in seq_along(expected)) {
      expect_identical(restored[[i]], expected[[i]], label = sprintf("%s variable %d", name, i))
    }
  }
  # The iteration count comes first: 2 epochs of 4 batches.
  expect_equal(as.vector(read_restored(session, "checkpoint")$state[[1]]), 8)
})

test_that("loaded optimizer keeps saved routes", {
  skip_if_no_keras()
  session <- saved_session()
  routing <- read_restored(session, "checkpoint")$routing
  step_of <- setNames(routing$step, routing$path)

  # The loaded path no longer starts with "regressor/", but the kernel of
  # hidden_2 keeps the AdamW step it took before saving.
  expect_identical(step_of[["hidden_2/kernel"]], "adamw")
  expect_identical(step_of[["hidden_1/kernel"]], "muon")
  expect_identical(step_of[["output_dense/kernel"]], "adamw")
})

test_that("resumed fit matches one run", {
  skip_if_no_keras()
  session <- saved_session()
  resumed <- as_r(read_values(file.path(session$folder, "resumed.npz")))
  iterations <- readLines(file.path(session$folder, "iterations.txt"))

  expect_identical(session$initial$first, session$initial$reference)
  expect_identical(length(resumed), length(session$reference))
  for (i in seq_along(resumed)) {
    difference <- max(abs(resumed[[i]] - session$reference[[i]]))
    expect_lte(difference, resume_tolerance, label = sprintf("weight %d", i))
  }
  expect_identical(iterations, "16")
})

test_that("loading without the package says to load it", {
  skip_if_no_keras()
  session <- saved_session()
  outcome <- readLines(file.path(session$folder, "without-package.txt"))
  message <- paste(readLines(file.path(session$folder, "python-error.txt")), collapse = "\n")

  # NOTE: with reticulate 1.28 the R condition message is the C++ substr
  # error, so only reticulate::py_last_error() shows the instructions.
  expect_false(identical(outcome, "loaded"))
  expect_match(message, "Could not locate class 'Muon'", fixed = TRUE)
  expect_match(message, "in R, run library(kerasmuon)", fixed = TRUE)
  expect_match(message, 'system.file("python", package = "kerasmuon")', fixed = TRUE)
  expect_identical(
    readLines(file.path(session$folder, "after-library.txt")),
    "kerasmuon.optimizer.Muon"
  )
})
