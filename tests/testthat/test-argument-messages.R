# The exact wording of every argument error, pinned by snapshots: at least one
# bad input per argument of optimizer_muon(). All are raised in R, before
# Python starts, so these tests need no Python.

test_that("learning_rate errors", {
  expect_snapshot(error = TRUE, optimizer_muon(learning_rate = -0.01))
  expect_snapshot(error = TRUE, optimizer_muon(learning_rate = "0.01"))
  expect_snapshot(error = TRUE, optimizer_muon(learning_rate = NA_real_))
  expect_snapshot(error = TRUE, optimizer_muon(learning_rate = function(step) 0.01))
})

test_that("AdamW argument errors", {
  expect_snapshot(error = TRUE, optimizer_muon(adam_beta_1 = 1))
  expect_snapshot(error = TRUE, optimizer_muon(adam_beta_2 = NA_real_))
  expect_snapshot(error = TRUE, optimizer_muon(epsilon = 0))
  expect_snapshot(error = TRUE, optimizer_muon(weight_decay = -0.1))
  expect_snapshot(error = TRUE, optimizer_muon(adam_lr_ratio = -1))
})

test_that("clipping argument errors", {
  expect_snapshot(error = TRUE, optimizer_muon(clipnorm = 0))
  expect_snapshot(error = TRUE, optimizer_muon(clipvalue = -1))
  expect_snapshot(error = TRUE, optimizer_muon(global_clipnorm = "1"))
  expect_snapshot(error = TRUE, optimizer_muon(clipnorm = 1, global_clipnorm = 2))
})

test_that("moving average argument errors", {
  expect_snapshot(error = TRUE, optimizer_muon(use_ema = NA))
  expect_snapshot(error = TRUE, optimizer_muon(ema_momentum = 1.5))
  expect_snapshot(error = TRUE, optimizer_muon(ema_overwrite_frequency = 0.5))
})

test_that("base argument errors", {
  expect_snapshot(error = TRUE, optimizer_muon(loss_scale_factor = "2"))
  expect_snapshot(error = TRUE, optimizer_muon(gradient_accumulation_steps = 1))
  expect_snapshot(error = TRUE, optimizer_muon(gradient_accumulation_steps = 2.5))
  expect_snapshot(error = TRUE, optimizer_muon(name = ""))
  expect_snapshot(error = TRUE, optimizer_muon(name = c("a", "b")))
})

test_that("routing argument errors", {
  expect_snapshot(error = TRUE, optimizer_muon(exclude_layers = c("dense", NA)))
  expect_snapshot(error = TRUE, optimizer_muon(exclude_layers = 3))
  expect_snapshot(error = TRUE, optimizer_muon(exclude_layers = list("output_dense")))
  expect_snapshot(error = TRUE, optimizer_muon(exclude_layers = c("dense", "(")))
  expect_snapshot(error = TRUE, optimizer_muon(exclude_embeddings = 1))
})

test_that("Muon argument errors", {
  expect_snapshot(error = TRUE, optimizer_muon(muon_a = Inf))
  expect_snapshot(error = TRUE, optimizer_muon(muon_b = NA_real_))
  expect_snapshot(error = TRUE, optimizer_muon(muon_c = c(1, 2)))
  expect_snapshot(error = TRUE, optimizer_muon(momentum = 1))
  expect_snapshot(error = TRUE, optimizer_muon(momentum = -0.1))
  expect_snapshot(error = TRUE, optimizer_muon(ns_steps = 6.5))
  expect_snapshot(error = TRUE, optimizer_muon(ns_steps = 0L))
  expect_snapshot(error = TRUE, optimizer_muon(nesterov = "yes"))
})

test_that("routing table argument errors", {
  expect_snapshot(error = TRUE, muon_routing("not a model"))
})

test_that("routing table rejects other optimizers", {
  skip_if_no_keras()
  keras <- keras_module()
  model <- keras$Sequential(list(keras$Input(shape = list(4L)), keras$layers$Dense(2L)))

  expect_snapshot(error = TRUE, muon_routing(model, keras$optimizers$Adam()))
})
