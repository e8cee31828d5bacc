//! Checking, once it answers, a chain the daemon started without.
//!
//! With `[chain] chain_id` and `token` set, the daemon builds its chain client from the
//! configuration alone ([`tpod_chain::Chain::unchecked`]) and serves at once: quotes carry the
//! configured chain id and token. This task then asks the node, with backoff while it does not
//! answer, whether it serves that chain: the chain id, code at the Payment, Registry and token
//! addresses, and the Payment contract's token ([`tpod_chain::Chain::verify`]). It repeats the
//! check every [`Schedule::repair`] afterwards.
//!
//! What it finds gates registration ([`ChainStatus`]): the registration task sends nothing until
//! the chain matches, and stops sending when a later check finds it does not (an RPC URL now
//! pointing elsewhere). A mismatch is logged as an error naming it, and checked again with the
//! same backoff, so fixing the node (or a devnet that is still deploying) lets registration go on
//! without a restart; a wrong `chain_id` or `token` needs the configuration fixed and a restart.
//! Pods keep running and billing keeps retrying meanwhile: a claim signed for another chain id
//! or contract is refused by that chain, so nothing is paid out of the wrong place.

use std::time::Duration;

use tokio::sync::watch;
use tpod_chain::{Chain, ChainError};
use tracing::Instrument as _;

use crate::registration::Schedule;

/// What the last check found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChainStatus {
    /// The node has not answered yet.
    Unchecked,
    /// The node serves the configured chain, contracts and token.
    Matches,
    /// The node serves something else: what differs.
    Mismatch(String),
}

/// The check's findings, as the registration task reads them.
pub type ChainGate = watch::Receiver<ChainStatus>;

/// A gate for a chain not checked yet, and the sender [`run`] reports through.
pub fn gate() -> (watch::Sender<ChainStatus>, ChainGate) {
    watch::channel(ChainStatus::Unchecked)
}

/// Whether an error says the node did not answer (or answered with an error of its own) rather
/// than that it serves another chain.
fn is_outage(error: &ChainError) -> bool {
    matches!(error, ChainError::Unreachable { .. } | ChainError::Rpc { .. })
}

/// Checks `chain` against the node now and then forever, reporting through `status`: see the
/// module documentation. Never returns; abort the task to stop it.
pub async fn run(chain: Chain, schedule: Schedule, status: watch::Sender<ChainStatus>) {
    let span = tracing::info_span!("chain check", chain_id = chain.chain_id());
    async move {
        let mut retry = schedule.first_retry;
        loop {
            let checked = tokio::time::timeout(schedule.attempt_timeout, chain.verify()).await;
            let wait = match checked {
                Ok(Ok(())) => {
                    if *status.borrow() != ChainStatus::Matches {
                        tracing::info!(
                            payment = %chain.contracts().payment,
                            token = %chain.contracts().token,
                            "the chain answers and matches [chain] in the configuration"
                        );
                    }
                    status.send_replace(ChainStatus::Matches);
                    retry = schedule.first_retry;
                    schedule.repair
                }
                Ok(Err(error)) if !is_outage(&error) => {
                    tracing::error!(
                        %error,
                        retry_in_secs = retry.as_secs_f32(),
                        "the chain does not match [chain] in the configuration: the provider does not register on \
                         it; fix the RPC URL or the configuration (chain_id, payment, registry, token)"
                    );
                    status.send_replace(ChainStatus::Mismatch(error.to_string()));
                    next(&mut retry, &schedule)
                }
                Ok(Err(error)) => {
                    tracing::warn!(
                        %error,
                        retry_in_secs = retry.as_secs_f32(),
                        "cannot check the chain yet; serving meanwhile"
                    );
                    next(&mut retry, &schedule)
                }
                Err(_) => {
                    tracing::warn!(
                        timeout_secs = schedule.attempt_timeout.as_secs(),
                        retry_in_secs = retry.as_secs_f32(),
                        "the chain did not answer in time; serving meanwhile"
                    );
                    next(&mut retry, &schedule)
                }
            };
            tokio::time::sleep(wait).await;
        }
    }
    .instrument(span)
    .await;
}

/// The delay before the next attempt, doubling the one after it up to the schedule's longest.
fn next(retry: &mut Duration, schedule: &Schedule) -> Duration {
    let wait = *retry;
    *retry = (*retry * 2).min(schedule.max_retry);
    wait
}
