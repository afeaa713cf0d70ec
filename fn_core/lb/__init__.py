"""The LB node: call building, placement over the runner pool, the Engage client."""
