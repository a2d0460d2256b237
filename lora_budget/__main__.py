from lora_budget.cli import main

main()
