"""Balancing within a service: endpoints and the algorithms that pick one."""

from portway.balancing.base import Balancer, make_balancer
from portway.balancing.endpoint import Endpoint, endpoint_key, endpoints_from_config
from portway.balancing.hashing import MaglevBalancer, RingHashBalancer
from portway.balancing.health import HealthThresholds, ServiceHealth
from portway.balancing.least_request import LeastRequestBalancer
from portway.balancing.outlier import FailureKind, OutlierDetector
from portway.balancing.ramp import accept_during_ramp, available_percent, in_panic, ramp_fraction
from portway.balancing.random_choice import RandomBalancer
from portway.balancing.round_robin import RoundRobinBalancer
from portway.balancing.sticky import StickyBalancer

__all__ = [
    "Balancer",
    "Endpoint",
    "FailureKind",
    "HealthThresholds",
    "LeastRequestBalancer",
    "MaglevBalancer",
    "OutlierDetector",
    "RandomBalancer",
    "RingHashBalancer",
    "RoundRobinBalancer",
    "ServiceHealth",
    "StickyBalancer",
    "accept_during_ramp",
    "available_percent",
    "endpoint_key",
    "endpoints_from_config",
    "in_panic",
    "make_balancer",
    "ramp_fraction",
]
