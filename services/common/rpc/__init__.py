"""Generated gRPC code (from protos/ by `make proto`) and the error mapping across it."""
