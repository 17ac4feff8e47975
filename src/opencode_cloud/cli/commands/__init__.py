"""One module per command (group); each renders through `cli.output`."""
