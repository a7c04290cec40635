"""Policies: checks a route applies between routing and its service (authentication, rate limits).

``build_chains`` turns the declared policies into one ``PolicyChain`` per route; a route without
policies has none and pays nothing per request.
"""

from portway.policies.base import Policy, Rejections
from portway.policies.chain import PolicyChain, PolicySet, build_policies

__all__ = ["Policy", "PolicyChain", "PolicySet", "Rejections", "build_policies"]
