# optimizer_muon(exclude_layers = "output_dense") must keep the hidden kernels
# on the Muon step and send output_dense to AdamW. One string is one pattern:
# read character by character it would match every variable.

build_dense_model <- function() {
  keras <- keras_module()
  keras$utils$set_random_seed(7L)
  inputs <- keras$Input(shape = list(8L))
  hidden <- keras$layers$Dense(16L, activation = "relu", name = "hidden_1")(inputs)
  hidden <- keras$layers$Dense(12L, activation = "relu", name = "hidden_2")(hidden)
  outputs <- keras$layers$Dense(3L, name = "output_dense")(hidden)
  keras$Model(inputs, outputs)
}

# The first Muon step from a zero momentum buffer, written from the
# definition: u = g + momentum * g with Nesterov, Frobenius normalization,
# quintic Newton-Schulz on the wide orientation, then the shape scale.
muon_first_step <- function(g, learning_rate, momentum = 0.95, steps = 6L,
                            a = 3.4445, b = -4.775, c = 2.0315) {
  x <- g + momentum * g
  tall <- nrow(x) > ncol(x)
  if (tall) x <- t(x)
  x <- x / sqrt(sum(x^2))
  for (i in seq_len(steps)) {
    gram <- x %*% t(x)
    x <- a * x + (b * gram + c * gram %*% gram) %*% x
  }
  if (tall) x <- t(x)
  -learning_rate * sqrt(max(1, ncol(g) / nrow(g))) * x
}

# The first AdamW step from zero moments (t = 1).
adamw_first_step <- function(g, learning_rate, beta_1 = 0.9, beta_2 = 0.999, epsilon = 1e-7) {
  m <- (1 - beta_1) * g
  v <- (1 - beta_2) * g^2
  -learning_rate * sqrt(1 - beta_2) / (1 - beta_1) * m / (sqrt(v) + epsilon)
}

test_that("one exclude_layers string routes output_dense only", {
  skip_if_no_keras()
  model <- build_dense_model()

  routing <- muon_routing(model, optimizer_muon(exclude_layers = "output_dense"))
  step_of <- setNames(routing$step, routing$path)

  expect_identical(step_of[["hidden_1/kernel"]], "muon")
  expect_identical(step_of[["hidden_2/kernel"]], "muon")
  expect_identical(step_of[["output_dense/kernel"]], "adamw")
  expect_identical(routing$reason[routing$path == "output_dense/kernel"], "excluded by 'output_dense'")
  expect_identical(step_of[["hidden_1/bias"]], "adamw")
  expect_identical(routing$matrix_view[routing$path == "hidden_1/kernel"], "8 x 16")
  expect_true(is.na(routing$matrix_view[routing$path == "output_dense/bias"]))
})

test_that("routing of a compiled model uses its optimizer", {
  skip_if_no_keras()
  model <- build_dense_model()
  model$compile(optimizer = optimizer_muon(exclude_layers = "output_dense"), loss = "mse")

  routing <- muon_routing(model)
  step_of <- setNames(routing$step, routing$path)

  expect_identical(step_of[["output_dense/kernel"]], "adamw")
  expect_identical(step_of[["hidden_1/kernel"]], "muon")
})

test_that("pattern that matches one character stays a pattern", {
  skip_if_no_keras()
  model <- build_dense_model()

  # "_2" as one pattern matches hidden_2 only; its characters "_" and "2"
  # read separately would match every path.
  routing <- muon_routing(model, optimizer_muon(exclude_layers = "_2"))
  step_of <- setNames(routing$step, routing$path)

  expect_identical(step_of[["hidden_2/kernel"]], "adamw")
  expect_identical(step_of[["hidden_1/kernel"]], "muon")
  expect_identical(step_of[["output_dense/kernel"]], "muon")
})

test_that("applied steps follow the routing", {
  skip_if_no_keras()
  model <- build_dense_model()
  variables <- model$trainable_variables
  learning_rate <- 0.02
  opt <- optimizer_muon(learning_rate = learning_rate, exclude_layers = "output_dense",
                        weight_decay = NULL)

  set.seed(11)
  before <- lapply(variables, variable_values)
  gradients <- lapply(before, function(value) array(rnorm(length(value)), dim = dim(value)))
  opt$apply(lapply(gradients, function(g) np()$array(g, dtype = "float32")), variables)
  after <- lapply(variables, variable_values)
  names(before) <- names(after) <- names(gradients) <-
    vapply(variables, function(v) v$path, character(1))

  # Float32 arithmetic against a double reference: six Newton-Schulz
  # iterations amplify rounding to about 1e-6, well inside 1e-4.
  for (path in c("hidden_1/kernel", "hidden_2/kernel")) {
    expected <- muon_first_step(gradients[[path]], learning_rate)
    expect_equal(after[[path]] - before[[path]], expected, tolerance = 1e-4, label = path)
  }
  for (path in c("output_dense/kernel", "output_dense/bias", "hidden_1/bias")) {
    expected <- adamw_first_step(gradients[[path]], learning_rate * 0.1)
    expect_equal(as.vector(after[[path]] - before[[path]]), as.vector(expected),
                 tolerance = 1e-4, label = path)
  }
})

test_that("compile and fit from R train the model", {
  skip_if_no_keras()
  model <- build_dense_model()
  opt <- optimizer_muon(learning_rate = 0.02, exclude_layers = "output_dense")
  model$compile(optimizer = opt, loss = "sparse_categorical_crossentropy")

  set.seed(3)
  x <- matrix(rnorm(256 * 8), ncol = 8)
  y <- np()$array(as.integer((x[, 1] > 0) + (x[, 2] > 0)), dtype = "int32")
  x <- np()$array(x, dtype = "float32")
  history <- model$fit(x, y, epochs = 5L, batch_size = 32L, verbose = 0L)
  losses <- unlist(history$history$loss)

  expect_identical(model$optimizer$name, "muon")
  expect_true(inherits(model$optimizer, "kerasmuon.optimizer.Muon"))
  expect_identical(as.integer(variable_values(opt$iterations)), 40L)
  expect_lt(losses[[5]], losses[[1]])
})

test_that("an R function works as the learning rate", {
  skip_if_no_keras()
  keras <- keras_module()
  kernel <- keras$Variable(matrix(0, 4, 6), name = "kernel", dtype = "float32")
  opt <- optimizer_muon(learning_rate = function() 0.05, weight_decay = NULL)

  set.seed(5)
  gradient <- matrix(rnorm(24), 4, 6)
  opt$apply(list(np()$array(gradient, dtype = "float32")), list(kernel))

  expect_equal(variable_values(kernel), muon_first_step(gradient, 0.05), tolerance = 1e-4)
})

test_that("a Keras schedule works as the learning rate", {
  skip_if_no_keras()
  keras <- keras_module()
  schedule <- keras$optimizers$schedules$ExponentialDecay(0.04, decay_steps = 1L, decay_rate = 0.5)
  kernel <- keras$Variable(matrix(0, 6, 4), name = "kernel", dtype = "float32")
  opt <- optimizer_muon(learning_rate = schedule, weight_decay = NULL)

  set.seed(6)
  gradient <- matrix(rnorm(24), 6, 4)
  opt$apply(list(np()$array(gradient, dtype = "float32")), list(kernel))

  # The schedule gives 0.04 at iteration 0.
  expect_equal(variable_values(kernel), muon_first_step(gradient, 0.04), tolerance = 1e-4)
})
