"""Code every service shares: configuration, the digest and name grammar, errors, generated gRPC code."""
