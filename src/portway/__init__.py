"""Portway: an ingress controller that routes between services and balances within each one."""

__version__ = "0.1.0"
