# Train a Keras model from R with optimizer_muon() on two devices, with
# TensorFlow's MirroredStrategy. Run it with
#   Rscript mirrored-strategy.R
# The vignette "Scaling out" shows this script step by step.

library(kerasmuon)
library(reticulate)

tf <- import("tensorflow")
keras <- import("keras")

# 1. The devices. This machine may have one CPU and no GPU, so the CPU is
# split into two logical devices. TensorFlow accepts this only before it
# runs its first operation. With several GPUs, skip this step: then
# MirroredStrategy() with no argument takes every GPU.
cpu <- tf$config$list_physical_devices("CPU")[[1]]
tf$config$set_logical_device_configuration(
  cpu,
  list(tf$config$LogicalDeviceConfiguration(), tf$config$LogicalDeviceConfiguration())
)
strategy <- tf$distribute$MirroredStrategy(list("/cpu:0", "/cpu:1"))

# 2. The data: 512 points in 20 dimensions, labelled by which of 4 random
# directions they lie furthest along. The labels are a 1D array, because
# reticulate passes a plain R vector to Python as a list, which fit() rejects.
set.seed(1)
x <- matrix(rnorm(512 * 20), nrow = 512)
directions <- matrix(rnorm(20 * 4), nrow = 20)
y <- as.array(as.integer(max.col(x %*% directions) - 1L))

# 3. The model and the optimizer are created inside the strategy's scope, so
# that each weight and each optimizer buffer has one copy per device.
build_model <- function() {
  keras$utils$set_random_seed(1L)
  keras$Sequential(list(
    keras$Input(shape = list(20L)),
    keras$layers$Dense(64L, activation = "relu", name = "hidden_1"),
    keras$layers$Dense(64L, activation = "relu", name = "hidden_2"),
    keras$layers$Dense(4L, name = "output")
  ))
}

compile_model <- function(model) {
  model$compile(
    optimizer = optimizer_muon(learning_rate = 0.02, exclude_layers = "output"),
    loss = keras$losses$SparseCategoricalCrossentropy(from_logits = TRUE),
    metrics = list("accuracy")
  )
}

with(strategy$scope(), {
  model <- build_model()
  compile_model(model)
})

# 4. fit() splits each batch of 64 into one batch of 32 per device. The
# replicas sum their gradients, and each applies the same Muon step.
history <- model$fit(x, y, batch_size = 64L, epochs = 5L, shuffle = FALSE, verbose = 0L)

cat(sprintf("Replicas: %d\n", strategy$num_replicas_in_sync))
cat(sprintf("Loss per epoch: %s\n", paste(sprintf("%.4f", unlist(history$history$loss)), collapse = ", ")))
print(muon_routing(model))
