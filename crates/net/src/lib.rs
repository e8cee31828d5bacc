//! Networking: the libp2p host (TCP, noise, yamux) and the request-response behaviours for the
//! protocols named in `tpod-wire`. Filled in by the deploy issue.
