"""Where the tool keeps its files, the configuration schema, and the config store."""
