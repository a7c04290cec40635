"""Balancing within a service: endpoints and the algorithms that pick one."""

from portway.balancing.base import Balancer, make_balancer
from portway.balancing.endpoint import Endpoint, endpoint_key, endpoints_from_config
from portway.balancing.hashing import MaglevBalancer, RingHashBalancer
from portway.balancing.least_request import LeastRequestBalancer
from portway.balancing.random_choice import RandomBalancer
from portway.balancing.round_robin import RoundRobinBalancer
from portway.balancing.sticky import StickyBalancer

__all__ = [
    "Balancer",
    "Endpoint",
    "LeastRequestBalancer",
    "MaglevBalancer",
    "RandomBalancer",
    "RingHashBalancer",
    "RoundRobinBalancer",
    "StickyBalancer",
    "endpoint_key",
    "endpoints_from_config",
    "make_balancer",
]
