//! What the end-to-end tests share: a private devnet driven through the real `tpod` binary,
//! the hello example, and a bare HTTP client for the ingress.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub struct Devnet {
    pub dir: tempfile::TempDir,
    n: u8,
    overrides: Option<PathBuf>,
    providers: u8,
}

impl Devnet {
    /// `tpod dev up` with a private bridge and subnet (`n` tells tests apart).
    pub fn up(n: u8) -> Self {
        Self::up_with(n, None)
    }

    /// [`Devnet::up`] with a provider configuration file merged over the generated one.
    pub fn up_with(n: u8, overrides: Option<PathBuf>) -> Self {
        Self::up_providers(n, 1, overrides)
    }

    /// [`Devnet::up_with`] running `providers` providers: bridges `tpe<n>`, `tpe<n>-2`, ...,
    /// each on an eighth of `10.<200+n>.0.0/16`.
    pub fn up_providers(n: u8, providers: u8, overrides: Option<PathBuf>) -> Self {
        let devnet = Self { dir: tempfile::tempdir().unwrap(), n, overrides, providers };
        let up = devnet.dev_up();
        assert!(up.status.success(), "dev up failed: {}", text(&up));
        devnet
    }

    /// `tpod dev up` with this devnet's options: on a live chain it (re)starts just the provider.
    pub fn dev_up(&self) -> Output {
        let anvil = tpod_devnet::anvil::locate(None)
            .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tools/bin/anvil"));
        let subnet = format!("10.{}.0.0/16", 200 + u32::from(self.n));
        let bridge = format!("tpe{}", self.n);
        let mut args = vec![
            "--json".to_owned(),
            "dev".into(),
            "up".into(),
            "--port".into(),
            "0".into(),
            "--anvil".into(),
            anvil.to_str().unwrap().into(),
            "--ingress-port".into(),
            "0".into(),
            "--bridge".into(),
            bridge,
            "--subnet".into(),
            subnet,
        ];
        if let Some(file) = &self.overrides {
            args.extend(["--provider-config".into(), file.to_str().unwrap().into()]);
        }
        if self.providers > 1 {
            args.extend(["--providers".into(), self.providers.to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.tpod(&args)
    }

    /// Changes the configuration file merged in at the next [`Devnet::dev_up`].
    pub fn set_overrides(&mut self, overrides: PathBuf) {
        self.overrides = Some(overrides);
    }

    /// `kill -9` the provider and wait until it is gone.
    pub fn kill_provider(&self) {
        let pid = self.provider_pid();
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
        while tpod::devprovider::is_provider(pid as u32) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the provider again after [`Devnet::kill_provider`].
    pub fn restart_provider(&self) {
        let up = self.dev_up();
        assert!(up.status.success(), "dev up failed: {}", text(&up));
    }

    pub fn tpod(&self, args: &[&str]) -> Output {
        self.tpod_env(args, &[])
    }

    /// [`Devnet::tpod`] with extra environment variables (e.g. `DOCKER_CONFIG`).
    pub fn tpod_env(&self, args: &[&str], envs: &[(&str, &Path)]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_tpod"))
            .arg("--devnet-dir")
            .arg(self.dir.path())
            .args(args)
            .env_remove("TPOD_DEVNET_DIR")
            .env("TPOD_CACHE_DIR", self.dir.path().join("cache"))
            .envs(envs.iter().copied())
            .output()
            .unwrap()
    }

    pub fn ok(&self, args: &[&str]) -> serde_json::Value {
        let out = self.tpod(&[&["--json"], args].concat());
        assert!(out.status.success(), "tpod {args:?} failed: {}", text(&out));
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(&out)))
    }

    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.tpod(args);
        assert!(!out.status.success(), "tpod {args:?} should have failed: {}", text(&out));
        text(&out)
    }

    pub fn provider_data(&self) -> PathBuf {
        self.dir.path().join("provider/data")
    }

    /// Provider `index`'s (from 1) data directory.
    pub fn provider_data_of(&self, index: u8) -> PathBuf {
        tpod::devprovider::data_dir_of(self.dir.path(), index)
    }

    /// What provider `index` (from 1) last published in its `provider.json`.
    pub fn provider_info(&self, index: u8) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(self.provider_data_of(index).join("provider.json")).unwrap()).unwrap()
    }

    pub fn provider_pid(&self) -> i32 {
        let info: serde_json::Value =
            serde_json::from_slice(&std::fs::read(self.provider_data().join("provider.json")).unwrap()).unwrap();
        info["pid"].as_i64().unwrap() as i32
    }

    /// The pod directories the runtime holds.
    pub fn runtime_pods(&self) -> Vec<String> {
        match std::fs::read_dir(self.provider_data().join("pods")) {
            Ok(entries) => entries.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect(),
            Err(_) => Vec::new(),
        }
    }
}

impl Drop for Devnet {
    fn drop(&mut self) {
        let _ = self.tpod(&["dev", "down"]);
    }
}

pub fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// A copy of examples/hello with its image built, serving `page`.
pub fn hello(dir: &Path, page: &str) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/hello");
    std::fs::create_dir_all(dir.join("www")).unwrap();
    std::fs::write(dir.join("www/index.html"), page).unwrap();
    let _ = std::fs::remove_dir_all(dir.join("image"));
    tpod_image::hello::build(&dir.join("image"), Path::new("/bin/busybox"), &dir.join("www/index.html")).unwrap();
    let manifest = dir.join("tpod.yaml");
    std::fs::copy(src.join("tpod.yaml"), &manifest).unwrap();
    manifest
}

/// Builds `source` (std only, like `tests/probe/*.rs`) into a static binary at `out`.
pub fn build_static(source: &Path, out: &Path) {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let built = Command::new(rustc)
        .args(["--edition", "2024", "-C", "opt-level=1", "-C", "target-feature=+crt-static", "-C", "panic=abort"])
        .arg("-o")
        .arg(out)
        .arg(source)
        .output()
        .unwrap();
    assert!(built.status.success(), "building {}: {}", source.display(), String::from_utf8_lossy(&built.stderr));
}

/// GET `url`'s path with its host name, sent to 127.0.0.1 at `url`'s port: (status, body).
pub fn get(url: &str) -> (u16, String) {
    let rest = url.strip_prefix("http://").unwrap();
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (host, port) = authority.rsplit_once(':').unwrap();
    let mut stream = TcpStream::connect(("127.0.0.1", port.parse::<u16>().unwrap())).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

/// Polls `url` until it answers 200 with `body`.
pub fn wait_for_body(url: &str, body: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = get(url);
        if got == (200, body.to_owned()) {
            return;
        }
        assert!(Instant::now() < deadline, "{url} answers {got:?}, not 200 {body:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `tpod` as a user whose home is `home`: HOME, TPOD_HOME, the devnet and cache directories all
/// inside it (never the real ~/.tpod), no ambient `TPOD_*` setting, then `envs`.
pub fn tpod_at(home: &Path, args: &[&str], envs: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tpod"))
        .args(args)
        .env("HOME", home)
        .env("TPOD_HOME", home.join(".tpod"))
        .env("TPOD_DEVNET_DIR", home.join("devnet"))
        .env("TPOD_CACHE_DIR", home.join("cache"))
        .env_remove("TPOD_PASSWORD")
        .env_remove("TPOD_PASSWORD_FILE")
        .env_remove("TPOD_ACCOUNT")
        .env_remove("TPOD_KEY_FILE")
        .env_remove("TPOD_NETWORK")
        .env_remove("TPOD_RPC_URL")
        .env_remove("TPOD_POLICY")
        .envs(envs.iter().copied())
        .output()
        .unwrap()
}

/// [`tpod_at`] with `--json`, which must succeed: its output.
pub fn ok_at(home: &Path, args: &[&str], envs: &[(&str, &str)]) -> serde_json::Value {
    let out = tpod_at(home, &[&["--json"], args].concat(), envs);
    assert!(out.status.success(), "tpod {args:?} failed: {}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(&out)))
}

/// [`tpod_at`], which must fail: its output.
pub fn fails_at(home: &Path, args: &[&str], envs: &[(&str, &str)]) -> String {
    let out = tpod_at(home, args, envs);
    assert!(!out.status.success(), "tpod {args:?} should have failed: {}", text(&out));
    text(&out)
}

/// A private anvil on a free port with `chain_id`, logging into `dir`; stopped when dropped.
pub fn anvil_at(dir: &Path, chain_id: u64, rt: &tokio::runtime::Runtime) -> tpod_devnet::anvil::AnvilProcess {
    let bin = tpod_devnet::anvil::locate(None)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tools/bin/anvil"));
    rt.block_on(tpod_devnet::anvil::AnvilProcess::spawn(&tpod_devnet::anvil::AnvilOptions {
        bin,
        port: 0,
        chain_id,
        state: None,
        log: dir.join(format!("anvil-{chain_id}.log")),
        detach: false,
    }))
    .unwrap()
}
