//! A polling event watcher that never loses its place.
//!
//! The watcher reads logs in block ranges up to the chain head minus a number of confirmations,
//! and keeps a cursor: the next block it has not delivered. RPC failures (a node restart, a
//! network blip) are retried with backoff from the same cursor, so nothing is skipped and nothing
//! is delivered twice. Callers that must survive their own restart persist [`EventWatcher::cursor`]
//! after handling a batch and pass it back as `from_block`.

use std::time::Duration;

use alloy::providers::{DynProvider, Provider};
use alloy::rpc::types::{Filter, Log};

use crate::error::ChainError;

/// Logs from a contiguous range of blocks.
#[derive(Clone, Debug)]
pub struct Batch {
    /// First block of the range.
    pub from_block: u64,
    /// Last block of the range (inclusive).
    pub to_block: u64,
    /// The matching logs, in chain order.
    pub logs: Vec<Log>,
}

/// Follows the logs that match a filter.
#[derive(Debug)]
pub struct EventWatcher {
    provider: DynProvider,
    filter: Filter,
    next_block: u64,
    confirmations: u64,
    poll_interval: Duration,
    max_backoff: Duration,
    max_range: u64,
}

impl EventWatcher {
    /// Watches logs matching `filter` (its block range is ignored), starting at `from_block`.
    pub fn new(provider: DynProvider, filter: Filter, from_block: u64) -> Self {
        Self {
            provider,
            filter,
            next_block: from_block,
            confirmations: 0,
            poll_interval: Duration::from_millis(500),
            max_backoff: Duration::from_secs(10),
            max_range: 2_000,
        }
    }

    /// Only deliver blocks at least this many blocks below the head.
    pub fn with_confirmations(mut self, confirmations: u64) -> Self {
        self.confirmations = confirmations;
        self
    }

    /// How often to ask for new blocks when caught up.
    pub fn with_poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// The next block not yet delivered: persist it to resume after a restart.
    pub fn cursor(&self) -> u64 {
        self.next_block
    }

    /// One step: the logs of the next range of confirmed blocks, or `None` when caught up.
    pub async fn poll(&mut self) -> Result<Option<Batch>, ChainError> {
        let rpc =
            |e: alloy::transports::TransportError| ChainError::Rpc { call: "watch events", reason: e.to_string() };
        let head = self.provider.get_block_number().await.map_err(rpc)?;
        let Some(safe) = head.checked_sub(self.confirmations) else {
            return Ok(None);
        };
        if safe < self.next_block {
            return Ok(None);
        }
        let from = self.next_block;
        let to = safe.min(from.saturating_add(self.max_range - 1));
        let filter = self.filter.clone().from_block(from).to_block(to);
        let logs = self.provider.get_logs(&filter).await.map_err(rpc)?;
        self.next_block = to + 1;
        Ok(Some(Batch { from_block: from, to_block: to, logs }))
    }

    /// Waits for the next range of confirmed blocks that holds at least one matching log,
    /// retrying RPC failures with backoff for as long as it takes.
    pub async fn next_logs(&mut self) -> Batch {
        let mut backoff = self.poll_interval;
        loop {
            match self.poll().await {
                Ok(Some(batch)) if !batch.logs.is_empty() => return batch,
                Ok(Some(_)) => backoff = self.poll_interval,
                Ok(None) => {
                    backoff = self.poll_interval;
                    tokio::time::sleep(self.poll_interval).await;
                }
                Err(e) => {
                    tracing::warn!(cursor = self.next_block, error = %e, retry_in = ?backoff, "event watcher: RPC failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(self.max_backoff);
                }
            }
        }
    }
}
