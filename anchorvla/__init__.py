"""The `anchorvla` command line (cli.py, commands/) and the errors every layer raises (errors.py)."""
