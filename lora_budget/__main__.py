import sys

from lora_budget.cli import run

sys.exit(run())
