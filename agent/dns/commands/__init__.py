"""hedgerow-dns subcommands: each module adds its parsers with register()."""
