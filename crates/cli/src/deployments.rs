//! The publisher's local record of its deployments: which provider runs which pod, paid from
//! which channel. Kept next to the network's file (one record per network), written atomically,
//! readable by its owner only. Commands address a deployment by name and default to the only one.
//!
//! Every funded channel stays recorded until it is closed or emptied: a record is one channel
//! (one pod id), and a name can hold several (a deploy that failed after funding, then one that
//! worked; or a deleted pod whose channel waits for its release). The file is versioned
//! (`"version": 2`); version 1 files (no version, one record per name) read as they are.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use alloy::primitives::{Address, B256};
use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

/// The format this version writes.
pub const FORMAT_VERSION: u32 = 2;

/// One deployment: one pod and the channel that pays for it.
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
    /// Whether the pod was deleted while its channel still holds funds (the provider has not
    /// released it yet): the channel waits for `tpod unlock` / `tpod withdraw`, and is never
    /// used for another deploy.
    #[serde(default)]
    pub deleted: bool,
    /// When the channel was funded (unix seconds; 0 in version 1 files).
    #[serde(default)]
    pub created_at: u64,
}

impl Deployment {
    /// A channel funded for a deploy that the provider did not take: it can carry the next
    /// deploy of the same name.
    pub fn is_unused(&self) -> bool {
        !self.deployed && !self.deleted
    }

    /// What the record stands for, in a word.
    pub fn state(&self) -> &'static str {
        match (self.deployed, self.deleted) {
            (true, _) => "deployed",
            (false, true) => "deleted",
            (false, false) => "not deployed",
        }
    }
}

/// All deployments on one network.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Deployments {
    /// The file format (absent, i.e. 0, in version 1 files).
    #[serde(default)]
    pub version: u32,
    /// The records, one per channel, in creation order.
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
        let mut records: Self = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("{} is not a deployments file; fix or delete it", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Self::default(),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        if records.version > FORMAT_VERSION {
            bail!(
                "{} is in format {}, written by a newer tpod (this one reads up to {FORMAT_VERSION}); upgrade tpod",
                path.display(),
                records.version
            );
        }
        records.version = FORMAT_VERSION;
        Ok(records)
    }

    /// Writes the records atomically (write a temporary file, then rename).
    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        use std::io::Write as _;
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let path = Self::path(dir);
        let tmp = path.with_extension("json.tmp");
        let current = Self { version: FORMAT_VERSION, deployments: self.deployments.clone() };
        let write = || -> std::io::Result<()> {
            let mut file =
                std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
            file.write_all(&serde_json::to_vec_pretty(&current).map_err(std::io::Error::other)?)?;
            file.sync_all()?;
            std::fs::rename(&tmp, &path)
        };
        write().with_context(|| format!("cannot write {}", path.display()))
    }

    /// The deployment called `name`, or the only one when `name` is `None`. A name holding
    /// several channels stands for its deployed pod, else for its only channel.
    pub fn find(&self, name: Option<&str>) -> anyhow::Result<&Deployment> {
        let name = match name {
            Some(name) => name.to_owned(),
            None => match self.names().as_slice() {
                [only] => only.clone(),
                [] => bail!("there are no deployments; deploy one with `tpod deploy <manifest>`"),
                _ => bail!("there are several deployments; name one of: {}", self.names().join(", ")),
            },
        };
        let all = self.named(&name);
        if all.is_empty() {
            bail!("no deployment named {name:?}; known: {}", self.names().join(", "));
        }
        if let Some(deployed) = all.iter().find(|d| d.deployed) {
            return Ok(deployed);
        }
        match all.as_slice() {
            [only] => Ok(only),
            _ => bail!("{name} holds several channels and none is deployed; {}", Self::choices(&all)),
        }
    }

    /// The channel `selector` names: a channel id (`0x` and 64 hex digits), or a deployment
    /// name holding one channel, or the only channel when `None`.
    pub fn find_channel(&self, selector: Option<&str>) -> anyhow::Result<&Deployment> {
        if let Some(id) = selector.and_then(|s| s.parse::<B256>().ok()) {
            return self
                .deployments
                .iter()
                .find(|d| d.channel_id == id)
                .with_context(|| format!("no recorded channel {id}; `tpod list` shows them"));
        }
        let all: Vec<&Deployment> = match selector {
            Some(name) => self.named(name),
            None => self.deployments.iter().collect(),
        };
        match all.as_slice() {
            [only] => Ok(only),
            [] => match selector {
                Some(name) => bail!("no deployment named {name:?}; known: {}", self.names().join(", ")),
                None => bail!("there are no deployments"),
            },
            _ => bail!(
                "{} holds several channels; {}",
                selector.map_or_else(|| "this network".to_owned(), |n| format!("{n:?}")),
                Self::choices(&all)
            ),
        }
    }

    /// The channels recorded under `name`.
    pub fn named(&self, name: &str) -> Vec<&Deployment> {
        self.deployments.iter().filter(|d| d.name == name).collect()
    }

    /// Replaces the record of the same channel, or adds it.
    pub fn upsert(&mut self, deployment: Deployment) {
        match self.deployments.iter_mut().find(|d| d.channel_id == deployment.channel_id) {
            Some(existing) => *existing = deployment,
            None => self.deployments.push(deployment),
        }
    }

    /// Forgets the channel `channel_id` (closed or emptied).
    pub fn remove_channel(&mut self, channel_id: B256) {
        self.deployments.retain(|d| d.channel_id != channel_id);
    }

    /// The names, each once, in creation order.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for d in &self.deployments {
            if !names.contains(&d.name) {
                names.push(d.name.clone());
            }
        }
        names
    }

    fn choices(all: &[&Deployment]) -> String {
        let list: Vec<String> = all.iter().map(|d| format!("{} ({})", d.channel_id, d.state())).collect();
        format!("name one by channel id: {}", list.join(", "))
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
            deleted: false,
            created_at: 1,
        }
    }

    fn channel(name: &str, id: u8, deployed: bool) -> Deployment {
        Deployment { channel_id: B256::repeat_byte(id), pod_id: B256::repeat_byte(id), deployed, ..deployment(name) }
    }

    #[test]
    fn find_defaults_to_the_only_one_and_names_the_choices() {
        let mut d = Deployments::default();
        assert!(d.find(None).unwrap_err().to_string().contains("no deployments"));
        d.upsert(channel("a", 1, true));
        assert_eq!(d.find(None).unwrap().name, "a");
        d.upsert(channel("b", 2, true));
        assert!(d.find(None).unwrap_err().to_string().contains("a, b"));
        assert_eq!(d.find(Some("b")).unwrap().name, "b");
        assert!(d.find(Some("c")).unwrap_err().to_string().contains("known: a, b"));
        d.remove_channel(B256::repeat_byte(1));
        assert_eq!(d.find(None).unwrap().name, "b");
    }

    #[test]
    fn a_name_holds_several_channels_and_each_stays_findable() {
        let mut d = Deployments::default();
        d.upsert(channel("web", 1, false));
        d.upsert(channel("web", 2, false));
        // Two unused channels: the name alone is ambiguous, each channel id is not.
        let err = d.find(Some("web")).unwrap_err().to_string();
        assert!(err.contains(&B256::repeat_byte(1).to_string()) && err.contains("not deployed"), "{err}");
        assert!(d.find_channel(Some("web")).is_err());
        let id = B256::repeat_byte(2).to_string();
        assert_eq!(d.find_channel(Some(&id)).unwrap().channel_id, B256::repeat_byte(2));
        // The deployed one stands for the name; the other is still recorded.
        d.upsert(channel("web", 2, true));
        assert_eq!(d.find(Some("web")).unwrap().channel_id, B256::repeat_byte(2));
        assert_eq!(d.find(None).unwrap().channel_id, B256::repeat_byte(2));
        assert_eq!(d.named("web").len(), 2);
        assert_eq!(d.names(), vec!["web".to_owned()]);
        assert!(
            d.find_channel(Some(&B256::repeat_byte(9).to_string())).unwrap_err().to_string().contains("no recorded")
        );
    }

    #[test]
    fn version_1_files_still_read_and_newer_ones_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let v1 = r#"{"deployments":[{"name":"hello","pod_id":"0x0101010101010101010101010101010101010101010101010101010101010101",
            "publisher":"0x0202020202020202020202020202020202020202","provider_peer":"12D3KooW",
            "provider_addr":"/ip4/127.0.0.1/tcp/1","provider_address":"0x0303030303030303030303030303030303030303",
            "channel_id":"0x0404040404040404040404040404040404040404040404040404040404040404","url":"",
            "manifest":"tpod.yaml","deployed":false}]}"#;
        std::fs::write(Deployments::path(dir.path()), v1).unwrap();
        let d = Deployments::load(dir.path()).unwrap();
        assert_eq!(d.deployments.len(), 1);
        assert!(d.deployments[0].is_unused());
        d.save(dir.path()).unwrap();
        let text = std::fs::read_to_string(Deployments::path(dir.path())).unwrap();
        assert!(text.contains("\"version\": 2"), "{text}");
        std::fs::write(Deployments::path(dir.path()), r#"{"version":3,"deployments":[]}"#).unwrap();
        assert!(Deployments::load(dir.path()).unwrap_err().to_string().contains("newer tpod"));
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
