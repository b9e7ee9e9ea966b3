"""The durable inbound queue: store backends, jobs and the workers that drain them."""
