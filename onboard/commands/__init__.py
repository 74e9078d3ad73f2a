"""One module per `anchorvla` subcommand (see onboard.cli.COMMANDS)."""
