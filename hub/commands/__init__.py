"""hedgerow-hub subcommands: each module adds its parsers with register()."""
