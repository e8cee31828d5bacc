//! Generates the protobuf message types from `proto/tpod/v1/*.proto` into OUT_DIR.
//! protox parses the .proto files in pure Rust, so building needs no `protoc` binary.

use std::error::Error;

const PROTOS: &[&str] = &[
    "proto/tpod/v1/error.proto",
    "proto/tpod/v1/quote.proto",
    "proto/tpod/v1/provision.proto",
    "proto/tpod/v1/logs.proto",
    "proto/tpod/v1/blob.proto",
    "proto/tpod/v1/attest.proto",
    "proto/tpod/v1/profile.proto",
];

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(PROTOS, ["proto"])?;
    prost_build::Config::new()
        // Maps encode in key order, so the same message always gives the same bytes.
        .btree_map(["."])
        // Chunk data is sliced out of the received frame instead of copied (see `codec`).
        .bytes([".tpod.v1.BlobChunk.data"])
        .compile_fds(fds)?;
    Ok(())
}
