"""byoc-gateway: a declarative NICE CXone Bring-Your-Own-Channel middleware."""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
