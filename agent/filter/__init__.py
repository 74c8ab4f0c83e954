"""The filter engine: lists and their compact index, the resolver chain and its links, the fast
path, the answer cache, the upstreams, the packet codec, SafeSearch and verdicts, and the
listeners that answer on a socket.

It is built from a typed value, `agent.filter.spec.FilterSpec`, and reads no config file:
`hedgerow-dns` (agent/dns/) builds the spec from its TOML, the laptop agent (agent/laptop/)
from its signed policy. It imports nothing from either (make lint checks this).
"""
