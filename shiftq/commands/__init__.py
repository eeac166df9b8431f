"""One module per `shiftq` subcommand (see shiftq/cli.py for the contract)."""
