"""The tiers as the gateway reaches them: the policy that picks one, what each can take, and their clients."""
