//! The publisher's local record of its deployments: which provider runs which pod, paid from
//! which channel. Kept next to the network's file (one record per network), written atomically,
//! readable by its owner only. Commands address a deployment by name and default to the only one.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use alloy::primitives::{Address, B256};
use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

/// One deployment.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Deployment {
    /// The name commands use (the manifest's pod name unless `--name` says otherwise).
    pub name: String,
    /// The pod id.
    pub pod_id: B256,
    /// The publisher address that owns the channel.
    pub publisher: Address,
    /// The provider's libp2p peer id.
    pub provider_peer: String,
    /// The provider's libp2p address.
    pub provider_addr: String,
    /// The provider's payment address.
    pub provider_address: Address,
    /// The payment channel.
    pub channel_id: B256,
    /// The URL, when the pod serves HTTP.
    pub url: String,
    /// The manifest it was deployed from.
    pub manifest: PathBuf,
    /// Whether the provider accepted it (`false`: the channel exists but the pod does not).
    pub deployed: bool,
}

/// All deployments on one network.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Deployments {
    /// The records, in creation order.
    pub deployments: Vec<Deployment>,
}

impl Deployments {
    /// Where the records of the network whose files are in `dir` live.
    pub fn path(dir: &Path) -> PathBuf {
        dir.join("deployments.json")
    }

    /// Reads the records (none if the file does not exist).
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let path = Self::path(dir);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("{} is not a deployments file; fix or delete it", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Writes the records atomically (write a temporary file, then rename).
    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        use std::io::Write as _;
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let path = Self::path(dir);
        let tmp = path.with_extension("json.tmp");
        let write = || -> std::io::Result<()> {
            let mut file =
                std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
            file.write_all(&serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?)?;
            file.sync_all()?;
            std::fs::rename(&tmp, &path)
        };
        write().with_context(|| format!("cannot write {}", path.display()))
    }

    /// The deployment called `name`, or the only one when `name` is `None`.
    pub fn find(&self, name: Option<&str>) -> anyhow::Result<&Deployment> {
        match name {
            Some(name) => self
                .deployments
                .iter()
                .find(|d| d.name == name)
                .with_context(|| format!("no deployment named {name:?}; known: {}", self.names())),
            None => match self.deployments.as_slice() {
                [only] => Ok(only),
                [] => bail!("there are no deployments; deploy one with `tpod deploy <manifest>`"),
                _ => bail!("there are several deployments; name one of: {}", self.names()),
            },
        }
    }

    /// Replaces the deployment with the same name, or adds it.
    pub fn upsert(&mut self, deployment: Deployment) {
        match self.deployments.iter_mut().find(|d| d.name == deployment.name) {
            Some(existing) => *existing = deployment,
            None => self.deployments.push(deployment),
        }
    }

    /// Removes the deployment called `name`.
    pub fn remove(&mut self, name: &str) {
        self.deployments.retain(|d| d.name != name);
    }

    fn names(&self) -> String {
        self.deployments.iter().map(|d| d.name.as_str()).collect::<Vec<_>>().join(", ")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn deployment(name: &str) -> Deployment {
        Deployment {
            name: name.into(),
            pod_id: B256::repeat_byte(1),
            publisher: Address::repeat_byte(2),
            provider_peer: "12D3KooW".into(),
            provider_addr: "/ip4/127.0.0.1/tcp/1".into(),
            provider_address: Address::repeat_byte(3),
            channel_id: B256::repeat_byte(4),
            url: "http://x".into(),
            manifest: "tpod.yaml".into(),
            deployed: true,
        }
    }

    #[test]
    fn find_defaults_to_the_only_one_and_names_the_choices() {
        let mut d = Deployments::default();
        assert!(d.find(None).unwrap_err().to_string().contains("no deployments"));
        d.upsert(deployment("a"));
        assert_eq!(d.find(None).unwrap().name, "a");
        d.upsert(deployment("b"));
        assert!(d.find(None).unwrap_err().to_string().contains("a, b"));
        assert_eq!(d.find(Some("b")).unwrap().name, "b");
        assert!(d.find(Some("c")).unwrap_err().to_string().contains("known: a, b"));
        d.remove("a");
        assert_eq!(d.find(None).unwrap().name, "b");
    }

    #[test]
    fn saved_records_reload_and_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let mut d = Deployments::default();
        d.upsert(deployment("a"));
        d.save(dir.path()).unwrap();
        assert_eq!(Deployments::load(dir.path()).unwrap().deployments, d.deployments);
        let mode = std::fs::metadata(Deployments::path(dir.path())).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
