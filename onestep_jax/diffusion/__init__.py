"""Continuous-time diffusion maths: preconditioning, parameterisations, samplers, guidance."""
