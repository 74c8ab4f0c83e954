"""DNS benchmark: hedgerow-dns against dnsmasq and unbound, all on loopback.

Run with ``.venv/bin/python -m bench.dns.run``; see docs/benchmarks-dns.md.
"""
