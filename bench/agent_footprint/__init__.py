"""hedgerow-agent footprint (issue 12): resident memory and CPU of `hedgerow-agent run` and its
sniffer child, idle and under a browsing-like DNS load, beside reference interpreters that only
import the same modules. `python -m bench.agent_footprint --help`."""
