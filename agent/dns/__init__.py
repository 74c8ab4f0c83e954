"""hedgerow-dns: the school's DNS filter (sinkhole) on a Raspberry Pi."""
