"""The local lab: emulated Kubernetes API, workload and traffic simulators, real Prometheus."""
