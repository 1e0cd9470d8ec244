# Run `lines` as an R script in a new Rscript process whose working folder is
# `folder`, with this session's Python and library paths. Returns the
# output lines, and stops with the end of the output if the process fails.
run_new_session <- function(lines, folder) {
  script <- file.path(folder, "session.R")
  writeLines(c(sprintf("setwd(%s)", encodeString(folder, quote = '"')), lines), script)
  session_environment <- c(
    paste0("RETICULATE_PYTHON=", reticulate::py_config()$python),
    paste0("R_LIBS=", paste(.libPaths(), collapse = .Platform$path.sep))
  )
  output <- suppressWarnings(system2(
    file.path(R.home("bin"), "Rscript"), shQuote(script),
    stdout = TRUE, stderr = TRUE, env = session_environment
  ))
  status <- attr(output, "status")
  if (!is.null(status) && status != 0) {
    stop(
      "The new R session exited with status ", status, ". Its output ends with:\n",
      paste(utils::tail(output, 30), collapse = "\n")
    )
  }
  invisible(output)
}

# Tests that start several processes or devices call this first, so that
# the quick test command (make test-quick) can leave them out.
skip_if_quick <- function() {
  if (identical(Sys.getenv("KERASMUON_QUICK_TESTS"), "true")) {
    skip("KERASMUON_QUICK_TESTS=true skips multi-device tests")
  }
}
