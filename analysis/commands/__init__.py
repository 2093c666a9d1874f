"""Console subcommands owned by analysis/ (registered in saegap/cli.py)."""
