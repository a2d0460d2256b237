"""Speed and cost: FLOPs per step (flops.py), GPU utilization (utilization.py), time and cost (time.py).

Pure Python like the planner; never on the fit search's path (one estimate per planned spec).
"""
