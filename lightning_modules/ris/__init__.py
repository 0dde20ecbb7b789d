"""RIS near-field localization, model side (guide: docs/ris.md).

module.py     RISLocalizer: learned covariance factors blended with the sample covariance, then MUSIC
nets.py       RISBeamspaceNet: the beamspace CNN that emits steering-vector factors (no Lightning)
covariance.py the hybrid covariance and its eigenprojector with a stable backward
losses.py     nmse, subspace, eigengap, count and heat-map losses
music.py      near-field MUSIC + Newton refinement, MDL / AIC source counting
metrics.py    matched-source errors and the epoch scores
crb.py        Cramer-Rao bound of the coded-snapshot model
likelihood.py maximum-likelihood refinement on the coded snapshots, model order from the likelihood
tasks.py      task=ris_classical (classical MUSIC, no training)
callbacks.py  RISCovarianceLogger (covariance statistics, MUSIC spectrum plots)
settings.py   typed settings of the model, net and callback (torch-free)
"""
