"""Test support: running Berth's services as real processes, and a small registry client."""
