"""The platform side: webhook intake, signature schemes, platform client."""
