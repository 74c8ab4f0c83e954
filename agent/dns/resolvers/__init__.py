"""The links of the resolver chain, one per module; agent.dns.chain.build_chain orders them."""
