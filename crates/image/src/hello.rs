//! The `examples/hello` image: a statically linked busybox serving one page with `httpd`.
//! The project builds it itself from the build machine's busybox, so nothing is downloaded.

use std::path::Path;

use crate::{ContainerConfig, Digest, ImageError, RootfsFile, build_layout};

/// The port the hello server listens on.
pub const PORT: u16 = 8080;

/// Builds the hello image layout in `out_dir` from a statically linked `busybox` binary and the
/// page to serve as `/www/index.html`. Returns the manifest digest.
pub fn build(out_dir: &Path, busybox: &Path, index_html: &Path) -> Result<Digest, ImageError> {
    let files = [
        RootfsFile { src: busybox.to_path_buf(), dest: "/bin/busybox".to_owned(), mode: 0o755 },
        RootfsFile { src: index_html.to_path_buf(), dest: "/www/index.html".to_owned(), mode: 0o644 },
    ];
    let port = PORT.to_string();
    let config = ContainerConfig {
        entrypoint: vec!["/bin/busybox".to_owned(), "httpd".to_owned()],
        cmd: ["-f", "-p", &port, "-h", "/www"].map(str::to_owned).to_vec(),
        env: vec!["PATH=/bin".to_owned()],
        working_dir: Some("/".to_owned()),
        exposed_ports: vec![format!("{PORT}/tcp")],
    };
    build_layout(out_dir, &files, &config)
}
