"""Small top-level ``lnm`` subcommands that compose other stages (run, config-check)."""
