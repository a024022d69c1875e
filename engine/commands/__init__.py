"""One module per `gen404` subcommand (see engine/cli.py)."""
