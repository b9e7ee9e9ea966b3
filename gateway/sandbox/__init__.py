"""Simulators of CXone and The Watering Hole, and the sandbox that runs them with the gateway."""
