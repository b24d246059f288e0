"""Pure loss functions: keyword-only, per-example outputs (the caller reduces), networks as callables."""
