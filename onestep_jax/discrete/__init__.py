"""Masked (absorbing-state) discrete diffusion, MDLM (Sahoo et al. 2024, arXiv 2406.07524):
the log-linear schedule, the forward masking process and SUBS parameterisation, the
continuous-time NELBO, and the ancestral sampler with caching."""
