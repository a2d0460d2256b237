"""``lora-budget search``: enumerate set-ups, keep those that fit, rank by cost and wall time."""
