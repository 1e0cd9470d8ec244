library(testthat)
library(kerasmuon)

test_check("kerasmuon")
