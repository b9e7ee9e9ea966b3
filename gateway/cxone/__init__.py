"""The CXone side: BYOC endpoints CXone calls, token issuing, and the CXone API client."""
