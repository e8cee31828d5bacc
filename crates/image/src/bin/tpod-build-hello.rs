//! Builds the `examples/hello` image layout from this machine's statically linked busybox:
//! `tpod-build-hello <out-dir>`. `TPOD_BUSYBOX` overrides the busybox path (`/bin/busybox`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(out), None) = (args.next(), args.next()) else {
        eprintln!("usage: tpod-build-hello <out-dir>");
        return ExitCode::from(2);
    };
    let busybox = std::env::var_os("TPOD_BUSYBOX").map_or_else(|| PathBuf::from("/bin/busybox"), PathBuf::from);
    let index = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/hello/www/index.html");
    match tpod_image::hello::build(Path::new(&out), &busybox, &index) {
        Ok(digest) => {
            println!("{digest}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tpod-build-hello: {e}");
            ExitCode::FAILURE
        }
    }
}
