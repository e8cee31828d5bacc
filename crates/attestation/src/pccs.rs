//! TDX collateral from a PCCS (Intel's Provisioning Certificate Caching Service, or Intel's PCS
//! itself): the TCB info, QE identity, CRLs and their issuer chains a TDX quote is verified
//! against. They are signed by Intel, so where they come from does not matter for trust, only for
//! freshness: Intel reissues them about monthly and a stale set fails verification.
//!
//! A provider sends collateral with each quote. It takes it from a file ([`TdxCollateral::fixed`])
//! or keeps it fresh from its PCCS ([`keep_fresh`]). A publisher whose policy names a PCCS
//! (`[tdx] pccs_url`) fetches its own ([`fetch_collateral`]) instead of using the provider's.
//! Fetching goes through `dcap-qvl`'s client, which knows the PCCS API (v4), over a transport of
//! ours that bounds every answer.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use dcap_qvl::configs::RustCryptoConfig;
use tpod_wire::limits::MAX_COLLATERAL_BYTES;
use tpod_wire::pb;

use crate::policy::Policy;
use crate::tdx::{self, TdxError};

/// Fetches the collateral of `quote` (a raw TDX quote) from the PCCS at `url`, in the encoding
/// evidence carries it in ([`tdx::encode_collateral`]).
pub async fn fetch_collateral(url: &str, quote: &[u8]) -> Result<Vec<u8>, TdxError> {
    let failed = |reason: String| TdxError::Pccs { url: url.to_owned(), reason };
    let http = reqwest::Client::builder().timeout(TIMEOUT).build().map_err(|e| failed(e.to_string()))?;
    let client = dcap_qvl::collateral::CollateralClient::<RustCryptoConfig, _>::new(BoundedHttp(http), url);
    let collateral = client.fetch(tdx::trim_quote(quote)?).await.map_err(|e| failed(format!("{e:#}")))?;
    let encoded = tdx::encode_collateral(&collateral)?;
    if encoded.len() > MAX_COLLATERAL_BYTES {
        return Err(failed(format!(
            "the collateral is {} bytes, more than the {MAX_COLLATERAL_BYTES} evidence may carry",
            encoded.len()
        )));
    }
    Ok(encoded)
}

/// How long one PCCS request may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// A `reqwest` transport for dcap-qvl's PCCS client that reads at most [`MAX_COLLATERAL_BYTES`]
/// of each answer: PCCS answers are network input, and no single part of the collateral may be
/// larger than the whole that evidence can carry.
struct BoundedHttp(reqwest::Client);

impl dcap_qvl::http::HttpClient for BoundedHttp {
    async fn get(&self, url: &str) -> anyhow::Result<dcap_qvl::http::HttpResponse> {
        let mut response = self.0.get(url).send().await?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .filter_map(|(name, value)| Some((name.to_string(), value.to_str().ok()?.to_owned())))
            .collect();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await? {
            if body.len() + chunk.len() > MAX_COLLATERAL_BYTES {
                anyhow::bail!("the answer from {url} is larger than {MAX_COLLATERAL_BYTES} bytes");
            }
            body.extend_from_slice(&chunk);
        }
        Ok(dcap_qvl::http::HttpResponse { status, headers, body })
    }
}

/// When `policy` names a PCCS and `evidence` is a TDX quote, replaces the collateral the provider
/// sent with the collateral fetched from that PCCS. Other evidence is left as it is.
pub async fn use_policy_collateral(evidence: &mut pb::Evidence, policy: &Policy) -> Result<(), TdxError> {
    let (Some(url), Some(pb::evidence::Tee::Tdx(tdx))) = (&policy.tdx.pccs_url, &mut evidence.tee) else {
        return Ok(());
    };
    tdx.collateral = fetch_collateral(url, &tdx.quote).await?;
    Ok(())
}

/// The collateral a provider sends with its TDX quotes, shared between the attester and the task
/// that refreshes it.
#[derive(Debug, Clone)]
pub struct TdxCollateral(Arc<Mutex<State>>);

#[derive(Debug)]
struct State {
    current: Option<Vec<u8>>,
    /// Why there is no collateral yet.
    missing: String,
}

impl TdxCollateral {
    /// Collateral that never changes (read from a file the operator keeps fresh).
    pub fn fixed(encoded: Vec<u8>) -> Self {
        Self(Arc::new(Mutex::new(State { current: Some(encoded), missing: String::new() })))
    }

    /// No collateral yet: [`keep_fresh`] will fetch it from `url`.
    pub fn pending(url: &str) -> Self {
        Self(Arc::new(Mutex::new(State { current: None, missing: format!("not fetched from {url} yet") })))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The current collateral, or why there is none.
    pub fn current(&self) -> Result<Vec<u8>, TdxError> {
        let state = self.state();
        state.current.clone().ok_or_else(|| TdxError::NoCollateral(state.missing.clone()))
    }

    fn set(&self, encoded: Vec<u8>) {
        self.state().current = Some(encoded);
    }

    /// Records a failed fetch. Collateral fetched before stays in use: it is valid until its
    /// own dates say otherwise, which the verifier checks.
    fn failed(&self, error: &TdxError) {
        self.state().missing = error.to_string();
    }
}

/// How often [`keep_fresh`] fetches the collateral again once it has some. Intel updates it
/// monthly at most; hourly keeps a revoked or superseded TCB level from lingering.
pub const REFRESH_EVERY: Duration = Duration::from_secs(3600);
/// How soon [`keep_fresh`] tries again after a failed fetch.
pub const RETRY_AFTER: Duration = Duration::from_secs(60);

/// Fetches the collateral of this platform's quotes from the PCCS at `url` into `collateral`, then
/// again every [`REFRESH_EVERY`] (every [`RETRY_AFTER`] while fetches fail), for as long as the
/// task runs. `quote` produces a quote of this platform (its report data does not matter: the
/// collateral depends on the platform only).
pub async fn keep_fresh<Q>(url: String, collateral: TdxCollateral, quote: Q)
where
    Q: Fn() -> Result<Vec<u8>, TdxError> + Clone + Send + 'static,
{
    loop {
        let quote = quote.clone();
        let fetched = match tokio::task::spawn_blocking(quote).await {
            Ok(Ok(quote)) => fetch_collateral(&url, &quote).await,
            Ok(Err(e)) => Err(e),
            Err(e) => Err(TdxError::Unavailable(format!("quote task failed: {e}"))),
        };
        let wait = match fetched {
            Ok(encoded) => {
                tracing::info!(%url, bytes = encoded.len(), "TDX collateral fetched");
                collateral.set(encoded);
                REFRESH_EVERY
            }
            Err(error) => {
                tracing::warn!(%url, %error, "cannot fetch TDX collateral");
                collateral.failed(&error);
                RETRY_AFTER
            }
        };
        tokio::time::sleep(wait).await;
    }
}
