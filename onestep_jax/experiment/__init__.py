"""Running experiments: default config sections, train / sample / evaluate, metrics.json."""
