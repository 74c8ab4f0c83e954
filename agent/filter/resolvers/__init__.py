"""The links of the resolver chain, one per module; agent.filter.chain.build_chain orders them."""
