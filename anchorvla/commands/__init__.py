"""One module per `anchorvla` subcommand (see anchorvla.cli.COMMANDS)."""
