//! Webhook: POSTs each alert's ECS document as JSON, retrying with exponential backoff.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;

use super::OutputError;
use crate::client::{self, Endpoint};
use crate::config::WebhookOutputConfig;
use crate::metrics::Metrics;
use crate::store::AlertUpdate;

/// A configured webhook.
#[derive(Debug, Clone)]
pub struct Webhook {
    endpoint: Endpoint,
    path: String,
    url: String,
    retries: u32,
    timeout: Duration,
    token: Option<String>,
}

impl Webhook {
    pub fn new(cfg: &WebhookOutputConfig) -> Result<Webhook, OutputError> {
        let (endpoint, path) =
            Endpoint::from_url(&cfg.url, None).map_err(|e| OutputError::Webhook(e.to_string()))?;
        let token = if cfg.token_file.as_os_str().is_empty() {
            None
        } else {
            Some(
                crate::secret::read_token("[outputs.webhook] token_file", &cfg.token_file)
                    .map_err(|e| OutputError::Webhook(e.to_string()))?,
            )
        };
        if let (Some(_), Endpoint::Http { authority }) = (&token, &endpoint) {
            if !is_loopback_authority(authority) {
                return Err(OutputError::Webhook(format!(
                    "[outputs.webhook] a bearer token is never sent over plain http except to loopback; {} is not a loopback address: use https://",
                    authority
                )));
            }
        }
        Ok(Webhook {
            endpoint,
            path,
            url: cfg.url.clone(),
            retries: cfg.retries,
            timeout: cfg.timeout.0,
            token,
        })
    }

    /// Delivers one document: success is any 2xx answer; 4xx other than 408/429 is not retried.
    pub async fn deliver(&self, doc: &serde_json::Value) -> Result<(), String> {
        let mut delay = Duration::from_millis(200);
        let mut last = String::new();
        for attempt in 0..=self.retries {
            if attempt > 0 {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
            let call = client::call_limited(
                &self.endpoint,
                "POST",
                &self.path,
                Some(doc),
                self.token.as_deref(),
                MAX_ANSWER_BYTES,
            );
            match tokio::time::timeout(self.timeout, call).await {
                Ok(Ok((s, _))) if (200..300).contains(&s) => return Ok(()),
                Ok(Ok((s, body))) => {
                    last = format!(
                        "{} answered {s}: {}",
                        self.url,
                        String::from_utf8_lossy(&body)
                            .chars()
                            .take(200)
                            .collect::<String>()
                    );
                    if (400..500).contains(&s) && s != 408 && s != 429 {
                        break;
                    }
                }
                Ok(Err(e)) => last = e.to_string(),
                Err(_) => last = format!("{} did not answer within {:?}", self.url, self.timeout),
            }
            tracing::debug!(attempt, error = %last, "webhook delivery failed; retrying");
        }
        Err(last)
    }
}

/// Whether `host:port` names this machine by a loopback address (or `localhost`), never resolved.
fn is_loopback_authority(authority: &str) -> bool {
    let host = authority
        .rsplit_once(':')
        .map_or(authority, |(h, _)| h)
        .trim_matches(['[', ']']);
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The most of a webhook's answer that is read (it is only quoted in an error message).
const MAX_ANSWER_BYTES: usize = 64 << 10;

pub(crate) async fn run(
    hook: Webhook,
    mut rx: broadcast::Receiver<Arc<AlertUpdate>>,
    metrics: Arc<Metrics>,
    repeats: bool,
) {
    while let Some(doc) = super::next_doc(&mut rx, &metrics, repeats).await {
        if let Err(e) = hook.deliver(&doc).await {
            metrics.output_errors.fetch_add(1, Relaxed);
            tracing::warn!(output = "webhook", error = %e, "alert not delivered after retries");
        }
    }
}
