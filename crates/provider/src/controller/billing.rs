//! Getting paid: per-second metering from the runtime's cgroups and the ingress counters into the
//! store, enclave-signed claims on the Payment contract, and the funds lifecycle (pause when a
//! channel runs low, resume on a top-up, final claims on unlock and delete).
//!
//! Crash safety rests on three things. Usage is cumulative and stored with the runtime's own
//! cumulative CPU counter and the sample time, so after a restart the next sample bills exactly
//! what happened while the provider was down. Claims are cumulative, so re-sending one after a
//! crash can never pay twice. And a claim is recorded in the store before it is sent, then
//! reconciled against the chain's `claimed`, the only authority on what was paid.
//!
//! A finished pod (every container ended for good under its restart policy) is sampled one
//! last time when the loop notices (at most a sample interval after its last container ended),
//! then accrues nothing more, not even storage: its channel is released at once, so nothing
//! later could be claimed anyway, and what it keeps on disk until removal (its volumes and logs,
//! for the publisher to read) is the provider's to carry for the retention period.
//!
//! Only confirmed chain state pauses a pod: a decision to pause is re-checked with a fresh read
//! of the channel, and an RPC failure postpones it. Claims that fail are retried with backoff.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use alloy::primitives::{Address, B256, U256};
use tpod_billing::{DENOMINATOR, Ledger, Usage, UsageReport};
use tpod_chain::ChainError;
use tpod_chain::claim::Claim;
use tpod_chain::client::ChannelState;
use tpod_runtime::Runtime;
use tpod_wire::pb;

use super::{Controller, Refusal, hex, internal, now_unix, route_key};
use crate::pod::PodDefinition;
use crate::store::{ClaimRecord, PodRecord, PodState, UsageRecord};

/// How long a chain call may take before it counts as an outage.
const CHAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How much history the rate estimate looks at.
const RATE_WINDOW_MS: u64 = 10_000;

/// What the billing loop remembers about a pod between samples (nothing here must survive a
/// restart: it is re-read from the chain or rebuilt from samples).
#[derive(Debug, Default)]
pub(super) struct Live {
    /// (sample time ms, cost numerator) of recent samples, for the rate estimate.
    history: VecDeque<(u64, U256)>,
    /// The channel as last read from the chain.
    funds: Option<ChannelState>,
    /// Since when (Unix s) the funds have not covered the next interval.
    low_since: Option<u64>,
    /// When to retry a failed claim (Unix ms), and the backoff to use after that.
    retry: Option<(u64, u64)>,
}

/// What a claim attempt did.
#[derive(Debug, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// Nothing was owed beyond what is claimed (or less than the minimum worth a claim).
    NothingToClaim,
    /// A claim for this cumulative amount is confirmed on chain.
    Claimed(U256),
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Rounds a cost numerator up to whole base units (rates are estimates; round against the pod).
fn ceil_amount(numerator: U256) -> U256 {
    numerator.div_ceil(DENOMINATOR)
}

/// A chain call that counts as failed when it takes longer than [`CHAIN_TIMEOUT`].
async fn with_timeout<T>(
    call: &'static str,
    f: impl std::future::Future<Output = Result<T, ChainError>>,
) -> Result<T, String> {
    match tokio::time::timeout(CHAIN_TIMEOUT, f).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => Err(format!("{call}: no answer within {CHAIN_TIMEOUT:?}")),
    }
}

impl<R: Runtime> Controller<R> {
    // --- metering ------------------------------------------------------------------------------

    /// The first usage record of a pod: billing starts now, at `ledger`'s prices.
    pub(super) fn open_account(&self, pod_id: &[u8; 32], ledger: Ledger) -> Result<(), Refusal> {
        self.parts
            .store
            .record_usage(&UsageRecord { pod_id: *pod_id, ledger, cpu_counter_ns: 0, sampled_at_ms: now_ms() })
            .map_err(internal)
    }

    /// Takes one usage sample of each pod in `only` (or of every pod that is running or paused)
    /// and stores them in one transaction. Call with the operations lock held, so no pod changes
    /// state in the middle.
    pub(super) async fn sample(&self, only: Option<&[u8; 32]>) -> Result<(), Refusal> {
        let pods = match only {
            Some(id) => self.parts.store.get_pod(id).map_err(internal)?.into_iter().collect(),
            None => self.parts.store.list_pods().map_err(internal)?,
        };
        let mut records = Vec::with_capacity(pods.len());
        for pod in &pods {
            let running = match pod.state {
                PodState::Running => true,
                // Only storage is billed while paused or at zero.
                PodState::Paused { .. } | PodState::ScaledToZero { .. } => false,
                _ => continue,
            };
            match self.sample_one(pod, running).await {
                Ok(record) => records.push(record),
                Err(e) => tracing::error!(pod = %B256::from(pod.pod_id), error = %e, "metering failed"),
            }
        }
        self.parts.store.record_usages(&records).map_err(internal)?;
        let mut live = self.live();
        for r in &records {
            let entry = live.entry(r.pod_id).or_default();
            entry.history.push_back((r.sampled_at_ms, r.ledger.numerator()));
            while entry.history.len() > 2
                && entry.history.front().is_some_and(|(t, _)| r.sampled_at_ms - t > RATE_WINDOW_MS)
            {
                entry.history.pop_front();
            }
        }
        Ok(())
    }

    async fn sample_one(&self, pod: &PodRecord, running: bool) -> Result<UsageRecord, Refusal> {
        let def: PodDefinition = serde_json::from_str(&pod.manifest_json).map_err(internal)?;
        let now = now_ms();
        let id = hex(&pod.pod_id);
        // Every replica is metered: their CPU times and memory are summed.
        let replicas = self.replica_ids(&pod.pod_id);
        let mut counters = tpod_runtime::PodUsage::default();
        for replica in &replicas {
            let usage = self.runtime.usage(replica).await.map_err(internal)?.unwrap_or_default();
            counters.cpu_ns = counters.cpu_ns.saturating_add(usage.cpu_ns);
            counters.memory_bytes = counters.memory_bytes.saturating_add(usage.memory_bytes);
        }
        let previous = self.parts.store.get_usage(&pod.pod_id).map_err(internal)?;
        let Some(mut record) = previous else {
            // A pod from before metering existed: bill it from now on, at the current prices.
            let ledger = Ledger::new(self.parts.settings.pricing, now / 1000);
            return Ok(UsageRecord { pod_id: pod.pod_id, ledger, cpu_counter_ns: counters.cpu_ns, sampled_at_ms: now });
        };
        let mut traffic = (0, 0);
        for port in def.http_ports() {
            let t = self.parts.routes.take_traffic(&route_key(&id, port.container_port));
            traffic = (traffic.0 + t.ingress_bytes, traffic.1 + t.egress_bytes);
        }
        let reserved = def.reservation().times(u32::try_from(replicas.len()).unwrap_or(u32::MAX));
        // The runtime's counter is monotonic; below the baseline means its state was lost
        // (a reinstalled host): start a new baseline rather than bill a wrapped difference.
        let cpu_used = counters.cpu_ns.saturating_sub(record.cpu_counter_ns);
        let elapsed_ns = now.saturating_sub(record.sampled_at_ms).saturating_mul(1_000_000);
        let delta = Usage::interval(
            (reserved.cpu_millis, reserved.memory_bytes, reserved.storage_bytes),
            elapsed_ns,
            running,
            cpu_used,
            counters.memory_bytes,
            traffic,
        );
        record.ledger.record(&delta).map_err(internal)?;
        record.cpu_counter_ns = counters.cpu_ns;
        record.sampled_at_ms = now.max(record.sampled_at_ms);
        Ok(record)
    }

    /// Takes `cpu_ns` off the pod's CPU baseline: a replica that used that much is gone, and its
    /// counter with it, so the summed counter dropped by as much.
    pub(super) fn forget_cpu(&self, pod_id: &[u8; 32], cpu_ns: u64) -> Result<(), Refusal> {
        let Some(mut record) = self.parts.store.get_usage(pod_id).map_err(internal)? else { return Ok(()) };
        record.cpu_counter_ns = record.cpu_counter_ns.saturating_sub(cpu_ns);
        self.parts.store.record_usage(&record).map_err(internal)
    }

    fn live(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Live>> {
        self.live.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The pod's current cost per second, times the denominator: what its reservation costs,
    /// or what recent samples cost if more.
    fn rate_numerator(&self, pod: &PodRecord, ledger: &Ledger) -> U256 {
        let reserved = serde_json::from_str::<PodDefinition>(&pod.manifest_json)
            .ok()
            .and_then(|def| {
                let r = def.reservation().times(u32::try_from(self.replica_ids(&pod.pod_id).len()).ok()?);
                let (cpu, mem, storage) = match pod.state {
                    PodState::Running => (r.cpu_millis, r.memory_bytes, r.storage_bytes),
                    PodState::Paused { .. } => (0, 0, r.storage_bytes),
                    // Nothing accrues any more.
                    _ => (0, 0, 0),
                };
                ledger.table().reservation_numerator_per_second(cpu, mem, storage).ok()
            })
            .unwrap_or_default();
        let observed = self
            .live()
            .get(&pod.pod_id)
            .and_then(|l| match (l.history.front(), l.history.back()) {
                (Some((t0, n0)), Some((t1, n1))) if t1 > t0 => {
                    Some((*n1 - *n0) * U256::from(1000u64) / U256::from(t1 - t0))
                }
                _ => None,
            })
            .unwrap_or_default();
        reserved.max(observed)
    }

    // --- claims --------------------------------------------------------------------------------

    /// Claims what the pod has earned and the channel can pay. `final_claim` ignores the
    /// minimum claim amount. Idempotent: the claim is cumulative and reconciled with the chain.
    pub async fn claim(&self, pod_id: &[u8; 32], final_claim: bool) -> Result<ClaimOutcome, Refusal> {
        let _one_at_a_time = self.claims.lock().await;
        let pod = self
            .parts
            .store
            .get_pod(pod_id)
            .map_err(internal)?
            .ok_or_else(|| Refusal::NotFound(B256::from(*pod_id).to_string()))?;
        let Some(usage) = self.parts.store.get_usage(pod_id).map_err(internal)? else {
            return Ok(ClaimOutcome::NothingToClaim);
        };
        let channel_id = B256::from(pod.channel_id);
        let channel = self.read_channel(pod_id, channel_id).await?;
        // A claim recorded before a crash may have landed: the chain says.
        if let Some(mut latest) = self.parts.store.latest_claim(pod_id).map_err(internal)?
            && !latest.confirmed
            && tpod_billing::parse_u256(&latest.cumulative_amount).is_ok_and(|a| a <= channel.claimed)
        {
            latest.confirmed = true;
            self.parts.store.record_claim(&latest).map_err(internal)?;
        }
        let target = usage.ledger.amount().min(channel.deposited).min(cap_allows(&channel, now_unix()));
        if target <= channel.claimed {
            return Ok(ClaimOutcome::NothingToClaim);
        }
        if !final_claim && target - channel.claimed < self.parts.settings.min_claim {
            return Ok(ClaimOutcome::NothingToClaim);
        }
        let report = UsageReport::of(&usage.ledger, channel_id, B256::from(*pod_id), usage.sampled_at_ms / 1000);
        let claim = Claim::new(channel_id, target, report.digest());
        let signature = claim.sign(&self.parts.chain.claim_domain(), &self.parts.enclave).map_err(internal)?;
        let mut record = ClaimRecord {
            pod_id: *pod_id,
            report,
            cumulative_amount: target.to_string(),
            usage_digest: claim.usageDigest.0,
            signature: signature.as_bytes().to_vec(),
            tx_hash: None,
            confirmed: false,
        };
        // Recorded before sending: after a crash the claim is found and reconciled, not lost.
        self.parts.store.record_claim(&record).map_err(internal)?;
        let publisher: Address = pod.publisher.parse().map_err(internal)?;
        let sent = with_timeout(
            "claim",
            self.parts.chain.claim(publisher, self.provider_address(), B256::from(*pod_id), &claim, &signature),
        )
        .await;
        match sent {
            Ok(receipt) => record.tx_hash = Some(receipt.transaction_hash.0),
            Err(e) => {
                // It may have landed anyway (a lost answer); only the chain knows.
                let now = self.read_channel(pod_id, channel_id).await?;
                if now.claimed < target {
                    return Err(Refusal::Internal(format!("claim of {target} on channel {channel_id} failed: {e}")));
                }
            }
        }
        record.confirmed = true;
        self.parts.store.record_claim(&record).map_err(internal)?;
        if let Some(funds) = self.live().entry(*pod_id).or_default().funds.as_mut() {
            funds.claimed = funds.claimed.max(target);
        }
        tracing::info!(pod = %B256::from(*pod_id), amount = %target, "claimed");
        Ok(ClaimOutcome::Claimed(target))
    }

    /// Reads the channel from the chain and remembers it.
    async fn read_channel(&self, pod_id: &[u8; 32], channel_id: B256) -> Result<ChannelState, Refusal> {
        let state = with_timeout("getChannel", self.parts.chain.channel(channel_id))
            .await
            .map_err(|e| Refusal::Internal(format!("cannot read payment channel {channel_id}: {e}")))?
            .ok_or_else(|| Refusal::Payment(format!("payment channel {channel_id} does not exist")))?;
        self.live().entry(*pod_id).or_default().funds = Some(state.clone());
        Ok(state)
    }

    /// After a pod's final claim: lets the publisher take the rest back at once.
    async fn release(&self, pod: &PodRecord) -> Result<(), Refusal> {
        let publisher: Address = pod.publisher.parse().map_err(internal)?;
        let channel = self.read_channel(&pod.pod_id, B256::from(pod.channel_id)).await?;
        let released = channel.closed || channel.unlock_at.is_some_and(|t| t <= now_unix());
        if !released {
            with_timeout("release", self.parts.chain.release(publisher, B256::from(pod.pod_id))).await.map_err(
                |e| Refusal::Internal(format!("cannot release channel {}: {e}", B256::from(pod.channel_id))),
            )?;
        }
        Ok(())
    }

    /// After a pod's final claim: releases the channel, then forgets the pod.
    async fn finish(&self, pod: &PodRecord) -> Result<(), Refusal> {
        self.release(pod).await?;
        self.parts.store.delete_pod(&pod.pod_id).map_err(internal)?;
        self.live().remove(&pod.pod_id);
        tracing::info!(pod = %B256::from(pod.pod_id), "final claim made; channel released");
        Ok(())
    }

    /// Deletes a pod: stops it, bills it to the end, claims, releases the channel. If the chain
    /// cannot be reached the pod stays `Stopped` and the billing loop finishes the job.
    /// Returns the pod's final account.
    pub(super) async fn delete_and_settle(&self, pod_id: &[u8; 32]) -> Result<Option<pb::Billing>, Refusal> {
        let Some(mut record) = self.parts.store.get_pod(pod_id).map_err(internal)? else {
            return Ok(None);
        };
        if !matches!(record.state, PodState::Stopped) {
            self.sample(Some(pod_id)).await?;
            self.remove_extra_replicas(&record).await;
            if let Err(e) = self.runtime.stop(&hex(pod_id)).await {
                tracing::warn!(pod = %B256::from(*pod_id), error = %e, "could not stop the pod before deleting it");
            }
            // Bills the CPU used while the containers stopped, at no extra time.
            self.sample(Some(pod_id)).await?;
            self.unexpose(&record).await;
            if let Err(e) = self.runtime.delete(&hex(pod_id)).await {
                tracing::error!(pod = %B256::from(*pod_id), error = %e, "runtime could not remove the pod");
            }
            record.state = PodState::Stopped;
            record.hostnames.clear();
            record.updated_at_unix = now_unix();
            self.parts.store.put_pod(&record).map_err(internal)?;
        }
        self.claim(pod_id, true).await?;
        let billing = self.billing_of(&record)?;
        self.finish(&record).await?;
        Ok(billing)
    }

    // --- funds ---------------------------------------------------------------------------------

    /// Seconds of funds a running pod must keep: the next claim interval and the grace period.
    fn horizon_secs(&self) -> u64 {
        let b = &self.parts.settings.config.billing;
        b.claim_interval_secs + b.grace_secs
    }

    /// What a paused pod needs deposited to resume: two horizons at its rate, less what is left.
    fn top_up_needed(&self, rate_per_second: U256, deposited: U256, amount: U256) -> U256 {
        let need = rate_per_second * U256::from(2 * self.horizon_secs());
        let left = deposited.saturating_sub(amount);
        need.saturating_sub(left)
    }

    /// Reacts to the channel's last known state: pause a pod whose funds run out (after the grace
    /// period, re-checked on chain) or whose publisher asked to unlock; resume a paused pod that
    /// was topped up; remove a pod whose channel was closed or whose retention ran out.
    pub(super) async fn reconcile_funds(&self, pod_id: &[u8; 32]) -> Result<(), Refusal> {
        let Some(pod) = self.parts.store.get_pod(pod_id).map_err(internal)? else { return Ok(()) };
        if matches!(pod.state, PodState::Running)
            && let Some(exit_codes) =
                super::runtime_ended(self.runtime.status(&hex(pod_id)).await.map_err(internal)?.as_ref())
        {
            self.finish_job(pod_id, exit_codes).await?;
            return self.settle_job(pod_id).await;
        }
        let Some(usage) = self.parts.store.get_usage(pod_id).map_err(internal)? else { return Ok(()) };
        let funds = self.live().get(pod_id).and_then(|l| l.funds.clone());
        let funds = match funds {
            Some(f) => f,
            None => self.read_channel(pod_id, B256::from(pod.channel_id)).await?,
        };
        let now = now_unix();
        let amount = usage.ledger.amount();
        match &pod.state {
            PodState::Running | PodState::ScaledToZero { .. } if funds.closed || funds.unlock_at.is_some() => {
                // Confirm on a fresh read: only chain state stops a pod.
                let fresh = self.read_channel(pod_id, B256::from(pod.channel_id)).await?;
                if fresh.closed || fresh.unlock_at.is_some() {
                    let reason = if fresh.closed {
                        "the publisher closed the payment channel"
                    } else {
                        "the publisher asked to unlock the payment channel; deposit to resume"
                    };
                    self.pause(&pod, reason).await?;
                    self.claim(pod_id, true).await?;
                }
            }
            PodState::Running | PodState::ScaledToZero { .. } => {
                let rate = ceil_amount(self.rate_numerator(&pod, &usage.ledger));
                let left = funds.deposited.saturating_sub(amount);
                let horizon = rate * U256::from(self.horizon_secs());
                if left >= horizon {
                    self.live().entry(*pod_id).or_default().low_since = None;
                    return Ok(());
                }
                let since = *self.live().entry(*pod_id).or_default().low_since.get_or_insert(now);
                let floor = rate * U256::from(2 * self.parts.settings.config.billing.sample_interval_secs);
                if now.saturating_sub(since) < self.parts.settings.config.billing.grace_secs && left >= floor {
                    return Ok(());
                }
                let fresh = self.read_channel(pod_id, B256::from(pod.channel_id)).await?;
                if fresh.deposited.saturating_sub(amount) >= horizon {
                    return Ok(());
                }
                let top_up = self.top_up_needed(rate, fresh.deposited, amount);
                let reason = format!("out of funds, top up {top_up} to resume");
                self.pause(&pod, &reason).await?;
                self.claim(pod_id, true).await?;
            }
            PodState::Paused { since_unix, rate_per_second, .. } => {
                if funds.closed || now.saturating_sub(*since_unix) >= self.parts.settings.config.billing.retention_secs
                {
                    tracing::info!(pod = %B256::from(*pod_id), "removing a paused pod (channel closed or retention over)");
                    let _ops = self.ops.lock().await;
                    self.delete_and_settle(pod_id).await?;
                    return Ok(());
                }
                let rate = tpod_billing::parse_u256(rate_per_second).unwrap_or_default();
                if funds.unlock_at.is_none() && self.top_up_needed(rate, funds.deposited, amount).is_zero() {
                    self.resume(&pod).await?;
                }
            }
            PodState::Stopped => {
                self.claim(pod_id, true).await?;
                self.finish(&pod).await?;
            }
            PodState::Finished { since_unix, settled, .. } => {
                if !settled {
                    self.settle_job(pod_id).await?;
                }
                if funds.closed || now.saturating_sub(*since_unix) >= self.parts.settings.config.billing.retention_secs
                {
                    tracing::info!(pod = %B256::from(*pod_id), "removing a finished pod (channel closed or retention over)");
                    let _ops = self.ops.lock().await;
                    self.delete_and_settle(pod_id).await?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Records that a running pod has finished (every container ended for good, with
    /// `exit_codes`): bills it up to now, unexposes it, has the runtime keep it stopped (so a
    /// new runtime knows it, for status and logs, without adopting it), and releases its host
    /// names. Billing stops there; [`Self::settle_job`] makes the final claim.
    async fn finish_job(&self, pod_id: &[u8; 32], exit_codes: Vec<(String, Option<i32>)>) -> Result<(), Refusal> {
        let _ops = self.ops.lock().await;
        let Some(mut record) = self.parts.store.get_pod(pod_id).map_err(internal)? else { return Ok(()) };
        if !matches!(record.state, PodState::Running) {
            return Ok(());
        }
        self.sample(Some(pod_id)).await?;
        self.unexpose(&record).await;
        self.runtime.stop(&hex(pod_id)).await.map_err(internal)?;
        // The CPU time its containers used last, while it still counts as running.
        self.sample(Some(pod_id)).await?;
        let state = super::finished_state(&exit_codes);
        record.state = PodState::Finished { exit_codes, since_unix: now_unix(), settled: false };
        record.hostnames.clear();
        record.tcp_ports.clear();
        record.updated_at_unix = now_unix();
        self.parts.store.put_pod(&record).map_err(internal)?;
        if let Some(l) = self.live().get_mut(pod_id) {
            l.history.clear();
            l.low_since = None;
        }
        tracing::info!(pod = %B256::from(*pod_id), %state, "pod finished; billing stopped");
        Ok(())
    }

    /// A finished pod's final claim and channel release, then marks it settled. Retried by the
    /// billing loop while the chain cannot be reached.
    async fn settle_job(&self, pod_id: &[u8; 32]) -> Result<(), Refusal> {
        let Some(record) = self.parts.store.get_pod(pod_id).map_err(internal)? else { return Ok(()) };
        if !matches!(record.state, PodState::Finished { settled: false, .. }) {
            return Ok(());
        }
        self.claim(pod_id, true).await?;
        self.release(&record).await?;
        let _ops = self.ops.lock().await;
        // Read again: a delete may have come in the meantime.
        let Some(mut record) = self.parts.store.get_pod(pod_id).map_err(internal)? else { return Ok(()) };
        if let PodState::Finished { settled, .. } = &mut record.state {
            *settled = true;
            self.parts.store.put_pod(&record).map_err(internal)?;
            tracing::info!(pod = %B256::from(*pod_id), "finished pod settled: final claim made, channel released");
        }
        Ok(())
    }

    /// Stops a pod's containers, keeping its volumes, billed up to the stop.
    async fn pause(&self, pod: &PodRecord, reason: &str) -> Result<(), Refusal> {
        let _ops = self.ops.lock().await;
        let Some(mut record) = self.parts.store.get_pod(&pod.pod_id).map_err(internal)? else { return Ok(()) };
        if !matches!(record.state, PodState::Running | PodState::ScaledToZero { .. }) {
            return Ok(());
        }
        self.sample(Some(&pod.pod_id)).await?;
        let usage = self.parts.store.get_usage(&pod.pod_id).map_err(internal)?;
        let rate = usage.map(|u| ceil_amount(self.rate_numerator(&record, &u.ledger))).unwrap_or_default();
        self.unexpose(&record).await;
        self.remove_extra_replicas(&record).await;
        self.runtime.stop(&hex(&pod.pod_id)).await.map_err(internal)?;
        record.state =
            PodState::Paused { reason: reason.to_owned(), since_unix: now_unix(), rate_per_second: rate.to_string() };
        record.updated_at_unix = now_unix();
        self.parts.store.put_pod(&record).map_err(internal)?;
        // The CPU used while stopping, with the pod now counted as paused.
        self.sample(Some(&pod.pod_id)).await?;
        tracing::warn!(pod = %B256::from(pod.pod_id), reason, "pod paused");
        Ok(())
    }

    /// Starts a paused pod again, with its volumes.
    async fn resume(&self, pod: &PodRecord) -> Result<(), Refusal> {
        let _ops = self.ops.lock().await;
        let Some(record) = self.parts.store.get_pod(&pod.pod_id).map_err(internal)? else { return Ok(()) };
        if !matches!(record.state, PodState::Paused { .. }) {
            return Ok(());
        }
        // Storage held while paused is billed up to now, before the state changes.
        self.sample(Some(&pod.pod_id)).await?;
        let def: PodDefinition = serde_json::from_str(&record.manifest_json).map_err(internal)?;
        let spec = self.runtime_spec(&pod.pod_id, &def)?;
        self.start(record, &def, spec, true).await?;
        if let Some(l) = self.live().get_mut(&pod.pod_id) {
            l.low_since = None;
            l.history.clear();
        }
        tracing::info!(pod = %B256::from(pod.pod_id), "pod resumed");
        Ok(())
    }

    // --- the loop ------------------------------------------------------------------------------

    /// Meters every pod each sample interval, claims each claim interval, reacts to channel
    /// events, and retries what failed. Runs until the task is dropped.
    pub async fn run_billing(self: std::sync::Arc<Self>) {
        let b = self.parts.settings.config.billing.clone();
        let mut tick = tokio::time::interval(Duration::from_secs(b.sample_interval_secs));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut next_claims = now_ms() + b.claim_interval_secs * 1000;
        let mut watcher = None;
        loop {
            tick.tick().await;
            {
                let _ops = self.ops.lock().await;
                if let Err(e) = self.sample(None).await {
                    tracing::error!(error = %e, "metering failed");
                }
            }
            self.scale_idle().await;
            self.autoscale().await;
            let changed = self.channel_events(&mut watcher).await;
            let pods = self.parts.store.list_pods().unwrap_or_default();
            let periodic = now_ms() >= next_claims;
            if periodic {
                next_claims = now_ms() + b.claim_interval_secs * 1000;
            }
            for pod in &pods {
                let due = self.live().get(&pod.pod_id).and_then(|l| l.retry).is_some_and(|(at, _)| now_ms() >= at);
                if periodic || due {
                    self.refresh_and_reconcile(&pod.pod_id).await;
                    let paused = !matches!(pod.state, PodState::Running);
                    let claimed = self.claim(&pod.pod_id, paused).await.map(|_| ());
                    self.note_attempt(&pod.pod_id, claimed);
                } else if changed.contains(&B256::from(pod.channel_id)) {
                    self.refresh_and_reconcile(&pod.pod_id).await;
                } else if matches!(
                    pod.state,
                    PodState::Running | PodState::Paused { .. } | PodState::ScaledToZero { .. }
                )
                    // A finished pod's settlement, and its retention; a failed settlement waits
                    // for its retry.
                    || (matches!(pod.state, PodState::Finished { .. })
                        && self.live().get(&pod.pod_id).is_none_or(|l| l.retry.is_none()))
                {
                    // Cheap: uses the channel as last read, and reads again only to confirm a pause.
                    let checked = self.reconcile_funds(&pod.pod_id).await;
                    self.note_attempt(&pod.pod_id, checked);
                }
            }
        }
    }

    /// The channels of this provider that had Payment events since the last call. The watcher
    /// starts at the head when first reachable (state before that is read when pods start and
    /// at every periodic claim); RPC failures leave its cursor in place for the next call.
    async fn channel_events(&self, watcher: &mut Option<tpod_chain::watcher::EventWatcher>) -> Vec<B256> {
        use alloy::providers::Provider as _;
        let chain = &self.parts.chain;
        if watcher.is_none() {
            let head = tokio::time::timeout(CHAIN_TIMEOUT, chain.provider().get_block_number()).await;
            let Ok(Ok(head)) = head else { return Vec::new() };
            let filter = alloy::rpc::types::Filter::new()
                .address(chain.contracts().payment)
                .topic2(self.provider_address().into_word());
            *watcher = Some(tpod_chain::watcher::EventWatcher::new(chain.provider().clone(), filter, head + 1));
        }
        let Some(w) = watcher.as_mut() else { return Vec::new() };
        let mut channels = Vec::new();
        // A bounded catch-up per tick, so metering keeps its pace after a long outage.
        for _ in 0..8 {
            match tokio::time::timeout(CHAIN_TIMEOUT, w.poll()).await {
                Ok(Ok(Some(batch))) => {
                    channels.extend(batch.logs.iter().filter_map(|l| l.topics().get(3).copied()));
                }
                Ok(Ok(None)) => break,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "cannot read channel events; will retry");
                    break;
                }
                Err(_) => break,
            }
        }
        channels
    }

    async fn refresh_and_reconcile(&self, pod_id: &[u8; 32]) {
        let Ok(Some(pod)) = self.parts.store.get_pod(pod_id) else { return };
        let result = match self.read_channel(pod_id, B256::from(pod.channel_id)).await {
            Ok(_) => self.reconcile_funds(pod_id).await,
            Err(e) => Err(e),
        };
        self.note_attempt(pod_id, result);
    }

    /// Schedules a retry with backoff after a failed claim or funds check, or clears it.
    pub(super) fn note_attempt(&self, pod_id: &[u8; 32], result: Result<(), Refusal>) {
        let b = &self.parts.settings.config.billing;
        let mut live = self.live();
        match result {
            Ok(()) | Err(Refusal::NotFound(_)) => {
                if let Some(l) = live.get_mut(pod_id) {
                    l.retry = None;
                }
            }
            Err(e) => {
                let l = live.entry(*pod_id).or_default();
                let backoff = l.retry.map_or(b.sample_interval_secs * 1000, |(_, ms)| ms * 2);
                let backoff = backoff.min(b.claim_interval_secs * 1000);
                l.retry = Some((now_ms() + backoff, backoff));
                tracing::warn!(pod = %B256::from(*pod_id), error = %e, retry_in_ms = backoff, "billing step failed");
            }
        }
    }

    // --- reporting -----------------------------------------------------------------------------

    /// The pod's account for `tpod status` and `tpod bill`.
    pub(super) fn billing_of(&self, pod: &PodRecord) -> Result<Option<pb::Billing>, Refusal> {
        let Some(usage) = self.parts.store.get_usage(&pod.pod_id).map_err(internal)? else { return Ok(None) };
        let latest = self.parts.store.latest_claim(&pod.pod_id).map_err(internal)?;
        let token = self.parts.chain.contracts().token.to_string();
        let table = *usage.ledger.table();
        let proposed = (self.parts.settings.pricing != table)
            .then(|| self.parts.settings.table_proto(&self.parts.settings.pricing, &token));
        let rate = ceil_amount(self.rate_numerator(pod, &usage.ledger));
        let funds = self.live().get(&pod.pod_id).and_then(|l| l.funds.clone());
        let claimed = match (&funds, &latest) {
            (Some(f), _) => f.claimed.to_string(),
            (None, Some(c)) if c.confirmed => c.cumulative_amount.clone(),
            _ => "0".to_owned(),
        };
        let top_up = match (&pod.state, &funds) {
            (PodState::Paused { rate_per_second, .. }, Some(f)) => {
                let rate = tpod_billing::parse_u256(rate_per_second).unwrap_or_default();
                self.top_up_needed(rate, f.deposited, usage.ledger.amount()).to_string()
            }
            _ => String::new(),
        };
        Ok(Some(pb::Billing {
            usage: Some(usage.ledger.usage().to_proto()),
            amount: usage.ledger.amount().to_string(),
            claimed,
            rate_per_second: rate.to_string(),
            pricing: Some(self.parts.settings.table_proto(&table, &token)),
            proposed_pricing: proposed,
            last_claim: latest.map(|c| pb::SignedClaim {
                report: Some(c.report.to_proto()),
                cumulative_amount: c.cumulative_amount,
                signature: c.signature,
                confirmed: c.confirmed,
            }),
            top_up,
            sampled_at_unix: usage.sampled_at_ms / 1000,
        }))
    }

    /// Switches the pod to the provider's current prices, which the publisher has agreed to.
    /// Usage so far stays at the old prices.
    pub(super) async fn accept_pricing(&self, pod_id: &[u8; 32], agreed: &pb::PricingTable) -> Result<(), Refusal> {
        let agreed = tpod_billing::PriceTable::from_proto(agreed).map_err(|e| Refusal::BadRequest(e.to_string()))?;
        if agreed != self.parts.settings.pricing {
            return Err(Refusal::Conflict(format!(
                "this provider now proposes {}, not {agreed}; check `tpod bill` again",
                self.parts.settings.pricing
            )));
        }
        let _ops = self.ops.lock().await;
        self.sample(Some(pod_id)).await?;
        let mut usage = self
            .parts
            .store
            .get_usage(pod_id)
            .map_err(internal)?
            .ok_or_else(|| Refusal::NotFound(B256::from(*pod_id).to_string()))?;
        if usage.ledger.switch(agreed, now_unix()) {
            self.parts.store.record_usage(&usage).map_err(internal)?;
            tracing::info!(pod = %B256::from(*pod_id), pricing = %agreed, "new prices agreed");
        }
        Ok(())
    }
}

/// What a spend-capped channel allows in total by `now`.
fn cap_allows(channel: &ChannelState, now: u64) -> U256 {
    match channel.cap {
        // A couple of seconds of margin for block-time skew.
        Some((max_rate, created)) => U256::from(max_rate) * U256::from(now.saturating_sub(created + 2)),
        None => U256::MAX,
    }
}
