"""The generic trainer. Modules (import them directly; this package imports nothing so that
`export.load_exported` works without orbax or the trainer):

  spec      Group, Phase, Stage: what a method declares.
  trainer   Trainer: jits each phase with shardings and runs the stage schedules.
  state     TrainState: everything an exact resume needs.
  checkpoint  Checkpointer (orbax, async, keep-N, teacher identity), params_fingerprint.
  ema       EDM-style EMA with a half-life in samples.
  mesh      make_mesh and shardings over ('data', 'fsdp').
  metrics   MetricWriter for metrics.jsonl.
  export    export_params (gathers sharded params) / load_exported (onestep_jax.export_format).
  compilation_cache  enable_compilation_cache.
  executable_cache   ExecutableCache: compiled phases kept on disk, loaded without tracing.
"""
