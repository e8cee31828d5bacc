//! The pod manifest: a Kubernetes-like YAML description of a pod (containers, ports, resources,
//! volumes, secrets, replicas), parsed and validated with errors that name file, line, column
//! and field path. Filled in by the deploy issue.
