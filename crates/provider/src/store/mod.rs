//! The provider's embedded, transactional state store.
//!
//! Everything the daemon must not forget across a restart or a crash lives here: the pods it runs,
//! which ingress hostnames they hold, the usage metered so far, the payment claims made, and the
//! request nonces already seen (so the replay guard still holds after a restart). It is built on
//! [`redb`], whose commits are durable once they return, so a `kill -9` loses nothing committed.
//!
//! Records are JSON (see [`records`]) in byte tables; a `schema_version` in the `meta` table lets a
//! later daemon migrate, and makes an older daemon refuse a store written by a newer one.
//!
//! The API is synchronous because redb is: async callers should wrap calls in
//! `tokio::task::spawn_blocking` (a [`Store`] is `Send + Sync`; share it in an `Arc`).

pub mod records;

use std::ops::Bound;
use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use records::{ClaimRecord, PodRecord, PodState, UsageRecord};
use records::{cmp_decimal, normalize_decimal, to_hex};

/// The schema version this build writes and understands.
/// Version 2 changed the usage and claim records; version 1 builds never wrote either.
pub const SCHEMA_VERSION: u64 = 2;
const SCHEMA_VERSION_KEY: &str = "schema_version";

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// pod id -> [`PodRecord`] JSON.
const PODS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("pods");
/// pod id -> [`UsageRecord`] JSON.
const USAGE: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("usage");
/// (pod id, sequence) -> [`ClaimRecord`] JSON; the highest sequence is the latest claim.
const CLAIMS: TableDefinition<(&[u8; 32], u64), &[u8]> = TableDefinition::new("claims");
/// lower-cased hostname -> the pod holding it. The key's uniqueness is what makes hostnames unique.
const HOSTNAMES: TableDefinition<&str, &[u8; 32]> = TableDefinition::new("hostnames");
/// (lower-cased publisher, nonce) -> expiry (Unix seconds).
const NONCES: TableDefinition<(&str, u64), u64> = TableDefinition::new("nonces");
/// (expiry, publisher, nonce) -> (): lets pruning visit only the expired nonces.
const NONCES_BY_EXPIRY: TableDefinition<(u64, &str, u64), ()> = TableDefinition::new("nonces_by_expiry");

/// Errors from the state store. Each names the store's path.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database file could not be opened or created.
    #[error("cannot open state store {path}: {source}")]
    Open {
        /// The store's path.
        path: PathBuf,
        /// Why redb refused.
        source: Box<redb::DatabaseError>,
    },
    /// A database operation failed (I/O error, corruption detected by redb, …).
    #[error("state store {path}: {op} failed: {source}")]
    Db {
        /// The store's path.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The underlying error.
        source: Box<redb::Error>,
    },
    /// The store was written by a schema this build does not know.
    #[error("state store {path} has schema version {found}; this build understands version {supported}")]
    UnknownSchemaVersion {
        /// The store's path.
        path: PathBuf,
        /// The version found in the store.
        found: u64,
        /// The version this build writes.
        supported: u64,
    },
    /// A stored record could not be decoded.
    #[error("state store {path}: corrupt record in table {table} at key {key}: {reason}")]
    Corrupt {
        /// The store's path.
        path: PathBuf,
        /// The table holding the record.
        table: &'static str,
        /// The record's key, rendered for humans.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A record could not be encoded.
    #[error("state store {path}: cannot encode record for table {table}: {source}")]
    Encode {
        /// The store's path.
        path: PathBuf,
        /// The table the record was meant for.
        table: &'static str,
        /// The serializer's error.
        source: serde_json::Error,
    },
    /// The hostname is already held by another pod.
    #[error("state store {path}: hostname {host} is already held by pod {}", to_hex(holder))]
    HostnameTaken {
        /// The store's path.
        path: PathBuf,
        /// The contested hostname.
        host: String,
        /// The pod holding it.
        holder: [u8; 32],
    },
    /// The operation needs a pod record that does not exist.
    #[error("state store {path}: no pod {}", to_hex(pod_id))]
    UnknownPod {
        /// The store's path.
        path: PathBuf,
        /// The missing pod.
        pod_id: [u8; 32],
    },
    /// A usage or claim record was filed under a different pod than it names.
    #[error("state store {path}: record names pod {} but was filed under pod {}", to_hex(named), to_hex(filed))]
    PodMismatch {
        /// The store's path.
        path: PathBuf,
        /// The pod the record names.
        named: [u8; 32],
        /// The pod it was filed under.
        filed: [u8; 32],
    },
    /// New usage is lower than what is already recorded; metering never goes backwards.
    #[error("state store {path}: usage of pod {} would go backwards: {what}", to_hex(pod_id))]
    UsageRegressed {
        /// The store's path.
        path: PathBuf,
        /// The pod.
        pod_id: [u8; 32],
        /// Which quantity regressed, with the old and new values.
        what: String,
    },
    /// A claim's cumulative amount is lower than the latest claim's.
    #[error("state store {path}: claim for pod {} would go backwards: {old} -> {new}", to_hex(pod_id))]
    ClaimRegressed {
        /// The store's path.
        path: PathBuf,
        /// The pod.
        pod_id: [u8; 32],
        /// The latest claim's amount.
        old: String,
        /// The refused claim's amount.
        new: String,
    },
    /// An amount is not a decimal U256.
    #[error("state store {path}: {value:?} is not a decimal amount that fits in 256 bits")]
    InvalidAmount {
        /// The store's path.
        path: PathBuf,
        /// The offending value.
        value: String,
    },
}

/// Handle to the provider's state store. Cheap to share behind an `Arc`; redb serializes writers.
pub struct Store {
    db: Database,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish_non_exhaustive()
    }
}

impl Store {
    /// Opens the store at `path`, creating it (and its tables) if it does not exist.
    ///
    /// Fails with [`StoreError::UnknownSchemaVersion`] if the store was written by a newer build.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let db = Database::create(&path)
            .map_err(|source| StoreError::Open { path: path.clone(), source: Box::new(source) })?;
        let store = Store { db, path };
        store.init_schema()?;
        Ok(store)
    }

    /// The path the store was opened at.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn init_schema(&self) -> Result<(), StoreError> {
        let txn = self.begin_write()?;
        {
            let mut meta = txn.open_table(META).map_err(self.db_err("open meta table"))?;
            let found = meta.get(SCHEMA_VERSION_KEY).map_err(self.db_err("read schema version"))?.map(|v| v.value());
            match found {
                None => {
                    meta.insert(SCHEMA_VERSION_KEY, SCHEMA_VERSION).map_err(self.db_err("write schema version"))?;
                }
                Some(SCHEMA_VERSION) => {}
                Some(1) => {
                    txn.delete_table(USAGE).map_err(self.db_err("upgrade from schema 1"))?;
                    txn.delete_table(CLAIMS).map_err(self.db_err("upgrade from schema 1"))?;
                    meta.insert(SCHEMA_VERSION_KEY, SCHEMA_VERSION).map_err(self.db_err("write schema version"))?;
                }
                Some(found) => {
                    return Err(StoreError::UnknownSchemaVersion {
                        path: self.path.clone(),
                        found,
                        supported: SCHEMA_VERSION,
                    });
                }
            }
            // Create every table up front so read transactions never meet a missing one.
            txn.open_table(PODS).map_err(self.db_err("create tables"))?;
            txn.open_table(USAGE).map_err(self.db_err("create tables"))?;
            txn.open_table(CLAIMS).map_err(self.db_err("create tables"))?;
            txn.open_table(HOSTNAMES).map_err(self.db_err("create tables"))?;
            txn.open_table(NONCES).map_err(self.db_err("create tables"))?;
            txn.open_table(NONCES_BY_EXPIRY).map_err(self.db_err("create tables"))?;
        }
        self.commit(txn)
    }

    /// Inserts or replaces a pod record.
    ///
    /// The record's `hostnames` are claimed in the same transaction (failing with
    /// [`StoreError::HostnameTaken`] if another pod holds one), and hostnames the previous version
    /// of the record held but this one drops are released.
    pub fn put_pod(&self, record: &PodRecord) -> Result<(), StoreError> {
        let txn = self.begin_write()?;
        {
            let mut pods = txn.open_table(PODS).map_err(self.db_err("open pods table"))?;
            let mut hosts = txn.open_table(HOSTNAMES).map_err(self.db_err("open hostnames table"))?;
            let previous: Option<PodRecord> = self.get_record(&pods, "pods", &record.pod_id)?;
            for host in &record.hostnames {
                self.claim_in(&mut hosts, &record.pod_id, host)?;
            }
            let kept: Vec<String> = record.hostnames.iter().map(|h| h.to_ascii_lowercase()).collect();
            for old in previous.iter().flat_map(|p| &p.hostnames) {
                let old = old.to_ascii_lowercase();
                if !kept.contains(&old) {
                    self.release_in(&mut hosts, &record.pod_id, &old)?;
                }
            }
            let bytes = self.encode("pods", record)?;
            pods.insert(&record.pod_id, bytes.as_slice()).map_err(self.db_err("write pod"))?;
        }
        self.commit(txn)
    }

    /// The pod's record, if any.
    pub fn get_pod(&self, pod_id: &[u8; 32]) -> Result<Option<PodRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(self.db_err("begin read"))?;
        let pods = txn.open_table(PODS).map_err(self.db_err("open pods table"))?;
        self.get_record(&pods, "pods", pod_id)
    }

    /// Every pod record, ordered by pod id.
    pub fn list_pods(&self) -> Result<Vec<PodRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(self.db_err("begin read"))?;
        let pods = txn.open_table(PODS).map_err(self.db_err("open pods table"))?;
        let mut out = Vec::new();
        for entry in pods.iter().map_err(self.db_err("list pods"))? {
            let (key, value) = entry.map_err(self.db_err("list pods"))?;
            out.push(self.decode("pods", || to_hex(key.value()), value.value())?);
        }
        Ok(out)
    }

    /// Deletes the pod with its usage, claims and hostnames, in one transaction. Returns whether
    /// the pod existed.
    pub fn delete_pod(&self, pod_id: &[u8; 32]) -> Result<bool, StoreError> {
        let txn = self.begin_write()?;
        let existed;
        {
            let mut pods = txn.open_table(PODS).map_err(self.db_err("open pods table"))?;
            existed = pods.remove(pod_id).map_err(self.db_err("delete pod"))?.is_some();
            let mut usage = txn.open_table(USAGE).map_err(self.db_err("open usage table"))?;
            usage.remove(pod_id).map_err(self.db_err("delete usage"))?;
            let mut claims = txn.open_table(CLAIMS).map_err(self.db_err("open claims table"))?;
            claims.retain_in((pod_id, 0)..=(pod_id, u64::MAX), |_, _| false).map_err(self.db_err("delete claims"))?;
            let mut hosts = txn.open_table(HOSTNAMES).map_err(self.db_err("open hostnames table"))?;
            hosts.retain(|_, holder| holder != pod_id).map_err(self.db_err("release hostnames"))?;
        }
        self.commit(txn)?;
        Ok(existed)
    }

    /// Gives `host` to the pod, atomically: fails with [`StoreError::HostnameTaken`] if another
    /// pod holds it (hostnames compare case-insensitively). Claiming a hostname the pod already
    /// holds is a no-op. The pod must exist; the host is added to its record's `hostnames`.
    pub fn claim_hostname(&self, pod_id: &[u8; 32], host: &str) -> Result<(), StoreError> {
        let txn = self.begin_write()?;
        {
            let mut pods = txn.open_table(PODS).map_err(self.db_err("open pods table"))?;
            let mut record: PodRecord = self
                .get_record(&pods, "pods", pod_id)?
                .ok_or_else(|| StoreError::UnknownPod { path: self.path.clone(), pod_id: *pod_id })?;
            let mut hosts = txn.open_table(HOSTNAMES).map_err(self.db_err("open hostnames table"))?;
            self.claim_in(&mut hosts, pod_id, host)?;
            if !record.hostnames.iter().any(|h| h.eq_ignore_ascii_case(host)) {
                record.hostnames.push(host.to_owned());
                let bytes = self.encode("pods", &record)?;
                pods.insert(pod_id, bytes.as_slice()).map_err(self.db_err("write pod"))?;
            }
        }
        self.commit(txn)
    }

    /// Releases every hostname the pod holds and clears its record's `hostnames`.
    pub fn release_hostnames(&self, pod_id: &[u8; 32]) -> Result<(), StoreError> {
        let txn = self.begin_write()?;
        {
            let mut hosts = txn.open_table(HOSTNAMES).map_err(self.db_err("open hostnames table"))?;
            hosts.retain(|_, holder| holder != pod_id).map_err(self.db_err("release hostnames"))?;
            let mut pods = txn.open_table(PODS).map_err(self.db_err("open pods table"))?;
            if let Some(mut record) = self.get_record::<PodRecord>(&pods, "pods", pod_id)?
                && !record.hostnames.is_empty()
            {
                record.hostnames.clear();
                let bytes = self.encode("pods", &record)?;
                pods.insert(pod_id, bytes.as_slice()).map_err(self.db_err("write pod"))?;
            }
        }
        self.commit(txn)
    }

    /// The pod holding `host`, if any.
    pub fn hostname_holder(&self, host: &str) -> Result<Option<[u8; 32]>, StoreError> {
        let txn = self.db.begin_read().map_err(self.db_err("begin read"))?;
        let hosts = txn.open_table(HOSTNAMES).map_err(self.db_err("open hostnames table"))?;
        let key = host.to_ascii_lowercase();
        Ok(hosts.get(key.as_str()).map_err(self.db_err("read hostname"))?.map(|v| *v.value()))
    }

    /// Replaces the pod's usage record, refusing to go backwards: no usage counter, nor the
    /// cost, nor the sample time may decrease ([`StoreError::UsageRegressed`]). The pod must exist.
    pub fn record_usage(&self, usage: &UsageRecord) -> Result<(), StoreError> {
        self.record_usages(std::slice::from_ref(usage))
    }

    /// [`Store::record_usage`] for several pods in one transaction: all or nothing.
    pub fn record_usages(&self, usages: &[UsageRecord]) -> Result<(), StoreError> {
        let txn = self.begin_write()?;
        {
            let pods = txn.open_table(PODS).map_err(self.db_err("open pods table"))?;
            let mut table = txn.open_table(USAGE).map_err(self.db_err("open usage table"))?;
            for usage in usages {
                let pod_id = &usage.pod_id;
                if pods.get(pod_id).map_err(self.db_err("read pod"))?.is_none() {
                    return Err(StoreError::UnknownPod { path: self.path.clone(), pod_id: *pod_id });
                }
                if let Some(old) = self.get_record::<UsageRecord>(&table, "usage", pod_id)? {
                    self.check_usage_progress(&old, usage)?;
                }
                let bytes = self.encode("usage", usage)?;
                table.insert(pod_id, bytes.as_slice()).map_err(self.db_err("write usage"))?;
            }
        }
        self.commit(txn)
    }

    fn check_usage_progress(&self, old: &UsageRecord, new: &UsageRecord) -> Result<(), StoreError> {
        let regressed = |what: String| StoreError::UsageRegressed { path: self.path.clone(), pod_id: new.pod_id, what };
        if new.sampled_at_ms < old.sampled_at_ms {
            return Err(regressed(format!("last sample {} -> {}", old.sampled_at_ms, new.sampled_at_ms)));
        }
        new.ledger.usage().since(old.ledger.usage()).map_err(|e| regressed(e.to_string()))?;
        if new.ledger.numerator() < old.ledger.numerator() {
            return Err(regressed(format!("amount {} -> {}", old.ledger.amount(), new.ledger.amount())));
        }
        Ok(())
    }

    /// The pod's usage record, if any.
    pub fn get_usage(&self, pod_id: &[u8; 32]) -> Result<Option<UsageRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(self.db_err("begin read"))?;
        let table = txn.open_table(USAGE).map_err(self.db_err("open usage table"))?;
        self.get_record(&table, "usage", pod_id)
    }

    /// Records a claim for its pod (which must exist).
    ///
    /// A claim with the same `usage_digest` as the latest one updates it in place (submission and
    /// confirmation progress); any other claim is appended and becomes the latest, and must not
    /// claim less than the latest ([`StoreError::ClaimRegressed`]).
    pub fn record_claim(&self, claim: &ClaimRecord) -> Result<(), StoreError> {
        self.check_amount(&claim.cumulative_amount)?;
        let pod_id = &claim.pod_id;
        let txn = self.begin_write()?;
        {
            let pods = txn.open_table(PODS).map_err(self.db_err("open pods table"))?;
            if pods.get(pod_id).map_err(self.db_err("read pod"))?.is_none() {
                return Err(StoreError::UnknownPod { path: self.path.clone(), pod_id: *pod_id });
            }
            let mut claims = txn.open_table(CLAIMS).map_err(self.db_err("open claims table"))?;
            let latest = self.latest_claim_in(&claims, pod_id)?;
            let seq = match latest {
                Some((seq, old)) if old.usage_digest == claim.usage_digest => seq,
                Some((seq, old)) => {
                    if cmp_decimal(&claim.cumulative_amount, &old.cumulative_amount) == Some(std::cmp::Ordering::Less) {
                        return Err(StoreError::ClaimRegressed {
                            path: self.path.clone(),
                            pod_id: *pod_id,
                            old: old.cumulative_amount,
                            new: claim.cumulative_amount.clone(),
                        });
                    }
                    seq + 1
                }
                None => 0,
            };
            let bytes = self.encode("claims", claim)?;
            claims.insert((pod_id, seq), bytes.as_slice()).map_err(self.db_err("write claim"))?;
        }
        self.commit(txn)
    }

    /// The pod's latest claim, if any.
    pub fn latest_claim(&self, pod_id: &[u8; 32]) -> Result<Option<ClaimRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(self.db_err("begin read"))?;
        let claims = txn.open_table(CLAIMS).map_err(self.db_err("open claims table"))?;
        Ok(self.latest_claim_in(&claims, pod_id)?.map(|(_, claim)| claim))
    }

    /// Remembers a request nonce for the replay guard; returns whether it is fresh (`false`: a
    /// replay, refuse the request). Nonces whose expiry is at or before `now_unix` are pruned in the
    /// same transaction. A request already expired (`expiry_unix <= now_unix`) is reported as not
    /// fresh, since it could not be remembered long enough to guard against its replay.
    /// Publishers compare case-insensitively (checksummed and lower-case addresses are the same).
    pub fn remember_nonce(
        &self,
        publisher: &str,
        nonce: u64,
        expiry_unix: u64,
        now_unix: u64,
    ) -> Result<bool, StoreError> {
        let publisher = publisher.to_ascii_lowercase();
        let txn = self.begin_write()?;
        let fresh;
        {
            let mut nonces = txn.open_table(NONCES).map_err(self.db_err("open nonces table"))?;
            let mut by_expiry = txn.open_table(NONCES_BY_EXPIRY).map_err(self.db_err("open nonces table"))?;
            let expired: Vec<(u64, String, u64)> = by_expiry
                .range::<(u64, &str, u64)>((Bound::Unbounded, Bound::Included((now_unix, "\u{10FFFF}", u64::MAX))))
                .map_err(self.db_err("scan expired nonces"))?
                .map(|entry| {
                    entry.map(|(k, _)| {
                        let (expiry, p, n) = k.value();
                        (expiry, p.to_owned(), n)
                    })
                })
                .collect::<Result<_, _>>()
                .map_err(self.db_err("scan expired nonces"))?;
            for (expiry, p, n) in &expired {
                by_expiry.remove((*expiry, p.as_str(), *n)).map_err(self.db_err("prune nonces"))?;
                nonces.remove((p.as_str(), *n)).map_err(self.db_err("prune nonces"))?;
            }
            let key = (publisher.as_str(), nonce);
            fresh = expiry_unix > now_unix && nonces.get(key).map_err(self.db_err("read nonce"))?.is_none();
            if fresh {
                nonces.insert(key, expiry_unix).map_err(self.db_err("write nonce"))?;
                by_expiry.insert((expiry_unix, publisher.as_str(), nonce), ()).map_err(self.db_err("write nonce"))?;
            }
        }
        self.commit(txn)?;
        Ok(fresh)
    }

    // ---- helpers -------------------------------------------------------------------------------

    fn begin_write(&self) -> Result<WriteTransaction, StoreError> {
        self.db.begin_write().map_err(self.db_err("begin write"))
    }

    /// Commits with redb's default (immediate) durability: once this returns, the data is on disk.
    fn commit(&self, txn: WriteTransaction) -> Result<(), StoreError> {
        txn.commit().map_err(self.db_err("commit"))
    }

    fn db_err<E: Into<redb::Error>>(&self, op: &'static str) -> impl FnOnce(E) -> StoreError + '_ {
        move |e| StoreError::Db { path: self.path.clone(), op, source: Box::new(e.into()) }
    }

    fn check_amount(&self, amount: &str) -> Result<(), StoreError> {
        match normalize_decimal(amount) {
            Some(_) => Ok(()),
            None => Err(StoreError::InvalidAmount { path: self.path.clone(), value: amount.to_owned() }),
        }
    }

    fn encode<T: Serialize>(&self, table: &'static str, record: &T) -> Result<Vec<u8>, StoreError> {
        serde_json::to_vec(record).map_err(|source| StoreError::Encode { path: self.path.clone(), table, source })
    }

    fn decode<T: DeserializeOwned>(
        &self,
        table: &'static str,
        key: impl FnOnce() -> String,
        bytes: &[u8],
    ) -> Result<T, StoreError> {
        serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
            path: self.path.clone(),
            table,
            key: key(),
            reason: e.to_string(),
        })
    }

    /// Reads and decodes a record keyed by pod id.
    fn get_record<T: DeserializeOwned>(
        &self,
        table: &impl ReadableTable<&'static [u8; 32], &'static [u8]>,
        name: &'static str,
        pod_id: &[u8; 32],
    ) -> Result<Option<T>, StoreError> {
        match table.get(pod_id).map_err(self.db_err("read record"))? {
            Some(bytes) => self.decode(name, || to_hex(pod_id), bytes.value()).map(Some),
            None => Ok(None),
        }
    }

    fn latest_claim_in(
        &self,
        claims: &impl ReadableTable<(&'static [u8; 32], u64), &'static [u8]>,
        pod_id: &[u8; 32],
    ) -> Result<Option<(u64, ClaimRecord)>, StoreError> {
        let mut range = claims.range((pod_id, 0)..=(pod_id, u64::MAX)).map_err(self.db_err("read claims"))?;
        match range.next_back() {
            Some(entry) => {
                let (key, value) = entry.map_err(self.db_err("read claims"))?;
                let seq = key.value().1;
                let claim = self.decode("claims", || format!("{}/{seq}", to_hex(pod_id)), value.value())?;
                Ok(Some((seq, claim)))
            }
            None => Ok(None),
        }
    }

    fn claim_in(
        &self,
        hosts: &mut redb::Table<'_, &'static str, &'static [u8; 32]>,
        pod_id: &[u8; 32],
        host: &str,
    ) -> Result<(), StoreError> {
        let key = host.to_ascii_lowercase();
        let holder = hosts.get(key.as_str()).map_err(self.db_err("read hostname"))?.map(|v| *v.value());
        match holder {
            Some(holder) if holder != *pod_id => {
                Err(StoreError::HostnameTaken { path: self.path.clone(), host: host.to_owned(), holder })
            }
            Some(_) => Ok(()),
            None => {
                hosts.insert(key.as_str(), pod_id).map_err(self.db_err("write hostname"))?;
                Ok(())
            }
        }
    }

    /// Releases `host` (lower-cased) if `pod_id` holds it.
    fn release_in(
        &self,
        hosts: &mut redb::Table<'_, &'static str, &'static [u8; 32]>,
        pod_id: &[u8; 32],
        host: &str,
    ) -> Result<(), StoreError> {
        let held = hosts.get(host).map_err(self.db_err("read hostname"))?.is_some_and(|v| v.value() == pod_id);
        if held {
            hosts.remove(host).map_err(self.db_err("release hostname"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
