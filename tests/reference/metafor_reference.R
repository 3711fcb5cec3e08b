# Reference values for metaeval.classic, computed with metafor's rma.uni.
#
# Run from the repository root:
#   Rscript tests/reference/metafor_reference.R
# Needs R with metafor, metadat and jsonlite (Debian: r-base-core r-cran-metafor r-cran-metadat).
# Writes tests/reference/metafor_reference.json; the Python tests only read that JSON (R is not a test
# dependency).
#
# metafor's default control stops Fisher scoring (ML, REML, EB) at a tau^2 step of 1e-5 and uniroot (PM)
# at a tolerance of .Machine$double.eps^0.25 (about 1.2e-4), which leaves tau^2 off by up to about 1e-3
# relative. The fits below use threshold = 1e-12 (Fisher scoring step), tol = 1e-12 (uniroot tolerance,
# also the ll0check margin) and maxiter = 10000 so that the stored values are converged to full precision.
#
# Datasets (all effect sizes from metafor's escalc or as shipped in metadat):
#   bcg        dat.bcg, log risk ratio: escalc(measure = "RR", ai = tpos, bi = tneg, ci = cpos, di = cneg)
#   normand    dat.normand1999, raw mean difference in length of hospital stay (days):
#              escalc(measure = "MD", m1i, sd1i, n1i, m2i, sd2i, n2i)
#   hackshaw   dat.hackshaw1998, log odds ratio (yi, vi as shipped)
#   schools    eight schools (Rubin 1981): yi = 28, 8, -3, 7, -1, 1, 18, 12; sei = 15, 10, 16, 11, 9, 11, 10, 18
# Numerical edges (the estimators' tolerances must not depend on the units or on one extreme study):
#   raudenbush_huge  dat.raudenbush1985 (yi, vi as shipped) plus one uninformative study: yi = 0, sei = 1e6
#   wide             dat.raudenbush1985's yi with sampling variances 10^-12 ... 10^12 (19 steps)
# A fit metafor cannot complete on an edge dataset (Fisher scoring does not converge) is listed under
# "not_converged", and metaeval must refuse it too.

suppressPackageStartupMessages({
  library(metafor)
  library(jsonlite)
})

ctrl <- list(threshold = 1e-12, tol = 1e-12, maxiter = 10000)
methods <- c("FE", "DL", "REML", "PM", "ML", "HS", "SJ", "EB")
tests <- c("z", "knha")

# Inputs are rounded to 15 significant digits before fitting so that the numbers written to the JSON
# (15 significant digits) are exactly the numbers metafor used.
r15 <- function(x) signif(as.numeric(x), 15)

bcg <- escalc(measure = "RR", ai = tpos, bi = tneg, ci = cpos, di = cneg, data = dat.bcg)
normand <- escalc(measure = "MD", m1i = m1i, sd1i = sd1i, n1i = n1i,
                  m2i = m2i, sd2i = sd2i, n2i = n2i, data = dat.normand1999)
hackshaw <- dat.hackshaw1998

datasets <- list(
  bcg = list(
    description = "BCG vaccine trials (dat.bcg), log risk ratio, escalc(measure='RR', ai=tpos, bi=tneg, ci=cpos, di=cneg)",
    measure = "RR", slab = paste(bcg$author, bcg$year),
    yi = r15(bcg$yi), vi = r15(bcg$vi),
    mods = list(ablat = as.numeric(bcg$ablat), year = as.numeric(bcg$year))),
  normand = list(
    description = "Normand 1999 (dat.normand1999), raw mean difference in length of stay (days), escalc(measure='MD')",
    measure = "MD", slab = as.character(dat.normand1999$source),
    yi = r15(normand$yi), vi = r15(normand$vi)),
  hackshaw = list(
    description = "Hackshaw 1998 (dat.hackshaw1998), log odds ratio of lung cancer, yi and vi as shipped",
    measure = "OR", slab = paste(hackshaw$author, hackshaw$year),
    yi = r15(hackshaw$yi), vi = r15(hackshaw$vi)),
  schools = list(
    description = "Eight schools (Rubin 1981), coaching effects on SAT-V, vi = sei^2",
    measure = "GEN", slab = LETTERS[1:8],
    yi = c(28, 8, -3, 7, -1, 1, 18, 12),
    vi = c(15, 10, 16, 11, 9, 11, 10, 18)^2),
  raudenbush_huge = list(
    description = "Raudenbush 1985 (dat.raudenbush1985), yi and vi as shipped, plus one study with yi = 0, sei = 1e6",
    measure = "SMD", slab = c(as.character(dat.raudenbush1985$study), "huge"),
    yi = c(r15(dat.raudenbush1985$yi), 0), vi = c(r15(dat.raudenbush1985$vi), 1e12)),
  wide = list(
    description = "Raudenbush 1985's yi with sampling variances 10^-12 to 10^12 in 19 log-even steps",
    measure = "GEN", slab = as.character(dat.raudenbush1985$study),
    yi = r15(dat.raudenbush1985$yi), vi = r15(10^seq(-12, 12, length.out = 19)))
)
edge <- c("raudenbush_huge", "wide")

num <- function(x) if (is.null(x)) NULL else as.numeric(x)

fit_record <- function(res, name, mods_names, level) {
  pr <- if (is.null(mods_names)) predict(res) else NULL
  bl <- blup(res)
  out <- list(
    dataset = name, method = res$method, test = res$test, level = level,
    mods = if (is.null(mods_names)) list() else as.list(mods_names),
    k = res$k, p = res$p,
    beta = num(res$beta), se = num(res$se), zval = num(res$zval), pval = num(res$pval),
    ci_lb = num(res$ci.lb), ci_ub = num(res$ci.ub),
    tau2 = num(res$tau2), I2 = num(res$I2), H2 = num(res$H2),
    QE = num(res$QE), QEp = num(res$QEp),
    QM = num(res$QM), QMp = num(res$QMp), QMdf = num(res$QMdf[!is.na(res$QMdf)]),
    ddf = if (is.na(res$ddf[1])) NULL else num(res$ddf),
    blup = list(pred = num(bl$pred), se = num(bl$se), pi_lb = num(bl$pi.lb), pi_ub = num(bl$pi.ub))
  )
  if (!is.null(pr)) {
    out$predict <- list(pred = num(pr$pred), se = num(pr$se), ci_lb = num(pr$ci.lb), ci_ub = num(pr$ci.ub),
                        pi_lb = num(pr$pi.lb), pi_ub = num(pr$pi.ub))
  }
  out
}

fits <- list()
regtests <- list()
not_converged <- list()
for (name in names(datasets)) {
  d <- datasets[[name]]
  for (method in methods) {
    for (test in tests) {
      res <- tryCatch(suppressWarnings(rma(yi = d$yi, vi = d$vi, method = method, test = test, control = ctrl)),
                      error = function(e) if (name %in% edge) conditionMessage(e) else stop(e))
      if (is.character(res)) {
        not_converged[[length(not_converged) + 1]] <- list(dataset = name, method = method, test = test, error = res)
        next
      }
      fits[[length(fits) + 1]] <- fit_record(res, name, NULL, 0.95)
      if (name %in% edge) next
      # Egger's regression test, metafor's default for a model object: model = "rma", predictor = "sei",
      # with the model's own method, test and control.
      rt <- suppressWarnings(regtest(res))
      regtests[[length(regtests) + 1]] <- list(
        dataset = name, method = method, test = test, level = 0.95,
        zval = num(rt$zval), pval = num(rt$pval),
        ddf = if (is.na(rt$ddf[1])) NULL else num(rt$ddf),
        est = num(rt$est), ci_lb = num(rt$ci.lb), ci_ub = num(rt$ci.ub),
        beta = num(rt$fit$beta), se = num(rt$fit$se), tau2 = num(rt$fit$tau2))
    }
  }
}

# A few fits at a non-default level.
for (name in c("bcg", "schools")) {
  d <- datasets[[name]]
  for (method in c("REML", "DL")) {
    for (test in tests) {
      res <- rma(yi = d$yi, vi = d$vi, method = method, test = test, level = 90, control = ctrl)
      fits[[length(fits) + 1]] <- fit_record(res, name, NULL, 0.90)
    }
  }
}

# Meta-regression on the BCG trials: absolute latitude (every estimator, both tests) and
# latitude + year (REML and DL), with predictions at new moderator values.
metareg <- list()
newmods_sets <- list(ablat = cbind(c(10, 30, 50)), `ablat+year` = cbind(c(10, 30, 50), c(1950, 1960, 1970)))
d <- datasets$bcg
for (spec in list(list(names = "ablat", methods = methods), list(names = c("ablat", "year"), methods = c("REML", "DL")))) {
  X <- do.call(cbind, d$mods[spec$names])
  colnames(X) <- spec$names
  newmods <- newmods_sets[[paste(spec$names, collapse = "+")]]
  for (method in spec$methods) {
    for (test in tests) {
      res <- suppressWarnings(rma(yi = d$yi, vi = d$vi, mods = X, method = method, test = test, control = ctrl))
      rec <- fit_record(res, "bcg", spec$names, 0.95)
      pr <- predict(res, newmods = newmods)
      rec$newmods <- unname(lapply(seq_len(nrow(newmods)), function(i) as.numeric(newmods[i, ])))
      rec$predict <- list(pred = num(pr$pred), se = num(pr$se), ci_lb = num(pr$ci.lb), ci_ub = num(pr$ci.ub),
                          pi_lb = num(pr$pi.lb), pi_ub = num(pr$pi.ub))
      metareg[[length(metareg) + 1]] <- rec
    }
  }
}

out <- list(
  meta = list(
    R_version = R.version.string,
    metafor_version = as.character(packageVersion("metafor")),
    metadat_version = as.character(packageVersion("metadat")),
    control = ctrl,
    generated = format(Sys.Date()),
    notes = paste(
      "tau2 for FE is 0 by definition; predict() gives no prediction interval for FE (pi_lb/pi_ub absent).",
      "I2/H2 use metafor's default i2def: typical within-study variance (k - p) / tr(P).",
      "regtest: model='rma', predictor='sei' on the fitted model (same method, test, control).")
  ),
  datasets = datasets,
  fits = fits,
  not_converged = not_converged,
  metareg = metareg,
  regtest = regtests
)

out_file <- file.path("tests", "reference", "metafor_reference.json")
writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE, null = "null"), out_file)
cat("wrote", out_file, ":", length(fits), "fits,", length(metareg), "meta-regressions,",
    length(regtests), "regtests\n")
