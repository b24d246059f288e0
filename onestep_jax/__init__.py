"""onestep_jax: turn many-step diffusion models into one-step and few-step generators (JAX/Flax)."""
__version__ = '0.1.0'
