"""Engine 3: profile real training steps, store them as versioned JSON, calibrate the planner.

- ``measure``: one configuration in this process (real tensors; CUDA counters on a GPU, the
  storage tracker on CPU).
- ``worker``: ``python -m lora_budget.profile.worker`` runs one configuration in a fresh process.
- ``sweep``: a grid of configurations, each in its own worker; OOM is a result, Ctrl-C keeps rows.
- ``store``: the profile file format (schema, atomic writes, validation on load).
- ``calibrate``: overhead terms per GPU and software version, fitted from stored profiles.

Nothing here imports torch at import time.
"""
