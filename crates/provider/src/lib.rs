//! The provider daemon: answers the libp2p protocols, runs pods on a runtime backend (local OCI
//! containers or Kubernetes), exposes them over an HTTP ingress, meters usage and claims payment
//! with enclave-signed reports. Filled in by the deploy and metering issues.

pub mod store;
