"""One module per ``loadtest`` subcommand: its options, its handler, and what it does beyond the engine."""
