"""The runner node: Fn's gRPC RunnerProtocol in front of hot containers (see `main.start_runner`)."""
