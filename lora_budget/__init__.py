"""lora-budget: will this fine-tuning job fit on this GPU, and how fast will it run?"""

__version__ = "0.1.0"
