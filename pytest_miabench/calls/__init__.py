"""How a request reaches an endpoint and its answer is kept: clients, the caller's retry policy, rate limits, the cache, the budget and the built-in mock server."""
