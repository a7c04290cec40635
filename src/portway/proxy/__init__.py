"""The proxy stage: one request's way from a routed head to an upstream instance and back."""
