# Argument checks run in R before Python is touched. Each raises an error of
# class `kerasmuon_invalid_argument` whose message names the argument, what
# it must be and what it received, e.g.
# "`ns_steps` must be a whole number of at least 1, not 6.5."

abort_argument <- function(arg, must, x, call) {
  message <- sprintf("`%s` must be %s, not %s.", arg, must, describe_value(x))
  stop(errorCondition(message, class = "kerasmuon_invalid_argument", call = call))
}

describe_value <- function(x) {
  if (is.null(x)) {
    return("`NULL`")
  }
  if (inherits(x, "python.builtin.object")) {
    return(sprintf("a Python object of class <%s>", class(x)[[1]]))
  }
  if (is.function(x)) {
    return("a function")
  }
  if (is.list(x)) {
    return(sprintf("a list of length %d", length(x)))
  }
  if (length(x) != 1) {
    return(sprintf("%s vector of length %d", with_article(typeof_vector(x)), length(x)))
  }
  if (is.na(x)) {
    return("`NA`")
  }
  if (is.character(x)) {
    return(encodeString(x, quote = "\""))
  }
  if (is.numeric(x) || is.logical(x)) {
    return(format(x, digits = 15))
  }
  with_article(typeof_vector(x))
}

typeof_vector <- function(x) {
  if (is.factor(x)) "factor" else if (is.double(x)) "numeric" else typeof(x)
}

with_article <- function(noun) {
  article <- if (grepl("^[aeiou]", noun)) "an" else "a"
  paste(article, noun)
}

is_number <- function(x) {
  is.numeric(x) && !is.factor(x) && length(x) == 1 && !is.na(x) && is.finite(x)
}

# `bounds` is c(lower, upper); `open` says which ends are excluded.
check_number <- function(x, arg, call, lower = -Inf, upper = Inf,
                         open = c(lower = FALSE, upper = FALSE),
                         allow_null = FALSE) {
  if (allow_null && is.null(x)) {
    return(invisible(x))
  }

  inside <- is_number(x) &&
    (if (open[["lower"]]) x > lower else x >= lower) &&
    (if (open[["upper"]]) x < upper else x <= upper)
  if (!inside) {
    must <- trimws(paste("a single finite number", describe_range(lower, upper, open)))
    if (allow_null) must <- paste0(must, ", or `NULL`")
    abort_argument(arg, must, x, call)
  }
  invisible(x)
}

describe_range <- function(lower, upper, open) {
  if (is.infinite(lower) && is.infinite(upper)) {
    return("")
  }
  if (is.infinite(upper)) {
    relation <- if (open[["lower"]]) "greater than" else "greater than or equal to"
    return(sprintf("%s %s", relation, format(lower)))
  }
  sprintf(
    "in %s%s, %s%s",
    if (open[["lower"]]) "(" else "[", format(lower),
    format(upper), if (open[["upper"]]) ")" else "]"
  )
}

check_whole_number <- function(x, arg, call, min, allow_null = FALSE) {
  if (allow_null && is.null(x)) {
    return(invisible(x))
  }

  valid <- is_number(x) && x == trunc(x) && x >= min &&
    x <= .Machine$integer.max
  if (!valid) {
    must <- sprintf("a whole number of at least %d", min)
    if (allow_null) must <- paste0(must, ", or `NULL`")
    abort_argument(arg, must, x, call)
  }
  invisible(x)
}

check_bool <- function(x, arg, call) {
  if (!(is.logical(x) && length(x) == 1 && !is.na(x))) {
    abort_argument(arg, "`TRUE` or `FALSE`", x, call)
  }
  invisible(x)
}

check_string <- function(x, arg, call) {
  if (!(is.character(x) && length(x) == 1 && !is.na(x) && nzchar(x))) {
    abort_argument(arg, "a single non-empty string", x, call)
  }
  invisible(x)
}

# Each entry is checked with PCRE, whose syntax is close to Python's `re`;
# Python compiles the patterns again and has the last word.
check_patterns <- function(x, arg, call) {
  if (is.null(x)) {
    return(invisible(x))
  }
  if (!is.character(x) || anyNA(x)) {
    abort_argument(arg, "a character vector of regular expressions without `NA`, or `NULL`", x, call)
  }

  for (pattern in x) {
    problem <- pcre_problem(pattern)
    if (!is.null(problem)) {
      message <- sprintf(
        "Every entry of `%s` must be a valid regular expression, not %s (%s).",
        arg, describe_value(pattern), problem
      )
      stop(errorCondition(message, class = "kerasmuon_invalid_argument", call = call))
    }
  }
  invisible(x)
}

# NULL when `pattern` compiles, else PCRE's reason.
pcre_problem <- function(pattern) {
  reason <- NULL
  withCallingHandlers(
    tryCatch(grepl(pattern, "", perl = TRUE), error = function(e) {
      if (is.null(reason)) reason <<- conditionMessage(e)
    }),
    warning = function(w) {
      # PCRE's warning reads "PCRE pattern compilation error\n\t'reason'\n\tat '...'".
      quoted <- regmatches(conditionMessage(w), regexpr("'[^']*'", conditionMessage(w)))
      reason <<- if (length(quoted) == 1) gsub("'", "", quoted) else conditionMessage(w)
      invokeRestart("muffleWarning")
    }
  )
  reason
}

check_learning_rate <- function(x, arg, call) {
  must <- "a positive number, a Keras LearningRateSchedule or a function of no arguments"

  # Callable Python objects are R functions too, so they are told apart first.
  if (inherits(x, "python.builtin.object")) {
    if (!any(grepl("LearningRateSchedule$", class(x)))) {
      abort_argument(arg, must, x, call)
    }
    return(invisible(x))
  }
  if (is.function(x)) {
    required <- vapply(formals(x), function(value) identical(value, quote(expr = )), logical(1))
    if (any(required)) {
      abort_argument(arg, "a function of no arguments", x, call)
    }
    return(invisible(x))
  }
  if (!(is_number(x) && x > 0)) {
    abort_argument(arg, must, x, call)
  }
  invisible(x)
}

check_one_clipping <- function(clipnorm, clipvalue, global_clipnorm, call) {
  given <- c(
    clipnorm = !is.null(clipnorm),
    clipvalue = !is.null(clipvalue),
    global_clipnorm = !is.null(global_clipnorm)
  )
  if (sum(given) > 1) {
    message <- sprintf(
      "Only one of `clipnorm`, `clipvalue` and `global_clipnorm` can be set, not %s.",
      paste0("`", names(given)[given], "`", collapse = " and ")
    )
    stop(errorCondition(message, class = "kerasmuon_invalid_argument", call = call))
  }
  invisible(TRUE)
}
