//! What the runtime's real-container tests share: a private runtime per test (state root,
//! bridge, subnet) that deletes its pods and removes its network when dropped, as a purged
//! provider leaves nothing, and busybox images.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::hash::{BuildHasher, RandomState};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tpod_runtime::{LocalConfig, LocalRuntime, Runtime, VolumeKey};

/// `len` random hex characters.
pub fn random_hex(len: usize) -> String {
    let mut out = String::new();
    while out.len() < len {
        out.push_str(&format!("{:016x}", RandomState::new().hash_one(Instant::now())));
    }
    out.truncate(len);
    out
}

/// A test's private runtime.
pub struct Env {
    pub dir: TempDir,
    pub config: LocalConfig,
}

impl Env {
    /// Bridge `<prefix><8 hex>` on `subnet`, a short restart backoff, the shim cargo built.
    pub fn create(prefix: &str, subnet: (Ipv4Addr, u8)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = LocalConfig::new(dir.path().join("runtime"), VolumeKey::random());
        config.bridge = format!("{prefix}{}", random_hex(8));
        config.subnet = subnet;
        config.restart_backoff = (Duration::from_millis(200), Duration::from_millis(800));
        config.shim = PathBuf::from(env!("CARGO_BIN_EXE_tpod-runtime-shim"));
        Self { dir, config }
    }

    pub fn runtime(&self) -> LocalRuntime {
        LocalRuntime::new(self.config.clone()).unwrap()
    }

    pub fn pod_dir(&self, id: &str) -> PathBuf {
        self.config.root.join("pods").join(id)
    }

    /// The busybox hello image with `page` as its `/www/index.html`.
    pub fn image_with_page(&self, page: &str) -> tpod_image::Image {
        let layout = self.dir.path().join(format!("image-{}", random_hex(6)));
        let file = self.dir.path().join(format!("page-{}.html", random_hex(6)));
        std::fs::write(&file, page).unwrap();
        tpod_image::hello::build(&layout, Path::new("/bin/busybox"), &file).unwrap();
        tpod_image::read_layout(&layout).unwrap()
    }
}

impl Drop for Env {
    /// Deletes whatever pods a failed test left (through a fresh runtime, which also exercises
    /// deleting pods it never started), then the bridge and its firewall tables.
    fn drop(&mut self) {
        let config = self.config.clone();
        let cleanup = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
            rt.block_on(async {
                let runtime = LocalRuntime::new(config).unwrap();
                for id in runtime.list().await.unwrap_or_default() {
                    if let Err(e) = runtime.delete(&id).await {
                        eprintln!("cleanup of pod {id} failed: {e}");
                    }
                }
                if let Err(e) = runtime.remove_network().await {
                    eprintln!("cleanup of the network failed: {e}");
                }
            });
        });
        let _ = cleanup.join();
    }
}
