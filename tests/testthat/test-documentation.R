# The defaults live in three places: the R formals, the help page and the
# Python signature. These tests hold them together so they cannot drift.

# Read "name: ... Defaults to `x`." items from the installed help page and
# return the documented default text of each argument.
documented_defaults <- function(topic) {
  rd <- tools::Rd_db("kerasmuon")[[paste0(topic, ".Rd")]]
  text <- capture.output(tools::Rd2txt(
    rd,
    options = list(underline_titles = FALSE, code_quote = TRUE, width = 1000)
  ))
  text <- gsub("[\u2018\u2019]", "'", text)

  items <- regmatches(text, regexec("^\\s*([A-Za-z0-9_, .]+): (.*)$", text))
  defaults <- list()
  for (item in Filter(length, items)) {
    names <- strsplit(item[[2]], ",\\s*")[[1]]
    phrase <- regmatches(item[[3]], regexpr("Defaults? to .*\\.$", item[[3]]))
    if (length(phrase) == 0) next
    values <- regmatches(phrase, gregexpr("'[^']*'", phrase))[[1]]
    values <- gsub("^'|'$", "", values)
    if (length(values) == 1) values <- rep(values, length(names))
    defaults[names] <- as.list(values)
  }
  defaults
}

test_that("help page states every default", {
  documented <- documented_defaults("optimizer_muon")
  arguments <- setdiff(names(formals(optimizer_muon)), "...")

  expect_setequal(names(documented), arguments)
  for (arg in arguments) {
    formal <- paste(deparse(formals(optimizer_muon)[[arg]]), collapse = "")
    expect_identical(documented[[arg]], formal, label = arg)
  }
})

test_that("python signature matches R formals", {
  skip_if_no_keras()
  inspect <- reticulate::import("inspect", convert = FALSE)
  module <- reticulate::import_from_path(
    "kerasmuon",
    path = system.file("python", package = "kerasmuon")
  )

  parameters <- inspect$signature(module$Muon)$parameters
  python_names <- reticulate::py_to_r(py_builtins()$list(parameters$keys()))
  python_names <- setdiff(unlist(python_names), "kwargs")
  r_names <- setdiff(names(formals(optimizer_muon)), "...")

  expect_identical(python_names, r_names)
  for (arg in r_names) {
    python_default <- reticulate::py_to_r(parameters[[arg]]$default)
    expect_identical(python_default, eval(formals(optimizer_muon)[[arg]]), label = arg)
  }
})

test_that("python requirements pin numpy for old reticulate", {
  old <- python_requirements("tensorflow", reticulate_version = package_version("1.28"))
  new <- python_requirements("jax", reticulate_version = package_version("1.41"))

  expect_identical(old, c("keras>=3.0", "tensorflow-cpu", "numpy<2"))
  expect_identical(new, c("keras>=3.0", "jax", "jaxlib", "numpy"))
  expect_identical(python_requirements("torch", package_version("1.39"))[[2]], "torch")
})

test_that("install_kerasmuon checks its arguments", {
  expect_snapshot(error = TRUE, install_kerasmuon(backend = "theano"))
  expect_snapshot(error = TRUE, install_kerasmuon(envname = NA_character_))
})
