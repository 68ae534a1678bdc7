//! One request schedule through the race lab, run with either client. Shared by
//! `examples/race` and `tests/race.rs`.

use std::collections::BTreeMap;
use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as LegacyClient;
use hyper_util::rt::TokioExecutor;

use closefirst::lab::{Origin, OriginConfig, Relay};

#[path = "certs.rs"]
mod certs;
use certs::TestCert;

/// The two clients compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Which {
    /// hyper-util's legacy client (what reqwest uses), at its defaults.
    HyperUtil,
    /// `closefirst` at its defaults.
    Closefirst,
}

impl fmt::Display for Which {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Which::HyperUtil => "hyper-util legacy",
            Which::Closefirst => "closefirst",
        })
    }
}

/// The lab's settings and the schedule.
#[derive(Clone, Debug)]
pub(crate) struct Scenario {
    pub(crate) requests: usize,
    /// Idle gaps (time from receiving a response to sending the next request) are
    /// drawn uniformly from this range.
    pub(crate) gap_min: Duration,
    pub(crate) gap_max: Duration,
    pub(crate) one_way_delay: Duration,
    pub(crate) origin_idle: Duration,
    pub(crate) keep_alive_hint: bool,
    pub(crate) seed: u64,
    /// `closefirst`'s (idle_timeout, keep_alive_margin); `None` for its defaults.
    pub(crate) closefirst_settings: Option<(Duration, Duration)>,
    /// HTTPS end to end (the relay forwards the encrypted bytes): the origin closes
    /// idle connections with a `close_notify` alert, then a FIN, as nginx does.
    pub(crate) tls: bool,
}

/// What one run saw.
#[derive(Clone, Debug, Default)]
pub(crate) struct Outcome {
    pub(crate) requests: usize,
    pub(crate) failures: usize,
    pub(crate) failures_by_kind: BTreeMap<String, usize>,
    /// Executions beyond the first, summed over request ids, as the origin counted them.
    pub(crate) duplicate_executions: usize,
    pub(crate) connections_opened: usize,
    /// Requests the origin never executed (lost).
    pub(crate) never_executed: usize,
}

/// A small deterministic generator (xorshift64*), so both clients get the same gaps.
pub(crate) struct Gaps {
    state: u64,
    min: Duration,
    span_ns: u64,
}

impl Gaps {
    pub(crate) fn new(scenario: &Scenario) -> Gaps {
        Gaps {
            state: scenario.seed.max(1),
            min: scenario.gap_min,
            // Command-line values can be huge: a span past u64 nanoseconds (584 years)
            // is as good as that many.
            span_ns: u64::try_from(scenario.gap_max.saturating_sub(scenario.gap_min).as_nanos())
                .unwrap_or(u64::MAX),
        }
    }

    pub(crate) fn next_gap(&mut self) -> Duration {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        let random = self.state.wrapping_mul(0x2545_F491_4F6C_DD1D);
        let offset = match self.span_ns.checked_add(1) {
            Some(modulus) => random % modulus,
            None => random,
        };
        self.min.saturating_add(Duration::from_nanos(offset))
    }
}

type HttpConnector = hyper_util::client::legacy::connect::HttpConnector;

enum AnyClient {
    HyperUtil(LegacyClient<HttpConnector, Full<Bytes>>),
    /// hyper-util's legacy client over hyper-rustls, as reqwest does HTTPS.
    HyperUtilTls(LegacyClient<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>),
    Closefirst(closefirst::Client<Full<Bytes>>),
}

impl AnyClient {
    /// The client `which`; with `cert`, speaking HTTPS and trusting only `cert`.
    fn new(which: Which, scenario: &Scenario, cert: Option<&TestCert>) -> AnyClient {
        match (which, cert) {
            (Which::HyperUtil, None) => {
                AnyClient::HyperUtil(LegacyClient::builder(TokioExecutor::new()).build_http())
            }
            (Which::HyperUtil, Some(cert)) => {
                let https = hyper_rustls::HttpsConnectorBuilder::new()
                    .with_tls_config(cert.client_config())
                    .https_only()
                    .enable_http1()
                    .build();
                AnyClient::HyperUtilTls(LegacyClient::builder(TokioExecutor::new()).build(https))
            }
            (Which::Closefirst, cert) => {
                let mut builder = closefirst::Client::builder();
                if let Some((idle_timeout, margin)) = scenario.closefirst_settings {
                    builder = builder.idle_timeout(idle_timeout).keep_alive_margin(margin);
                }
                if let Some(cert) = cert {
                    builder = builder.tls_config(cert.client_config());
                }
                AnyClient::Closefirst(builder.build().expect("valid settings"))
            }
        }
    }

    /// Sends the request and reads the whole body; `Err` names the kind of failure.
    async fn send(&self, req: Request<Full<Bytes>>) -> Result<(), String> {
        match self {
            AnyClient::HyperUtil(client) => {
                let resp = client.request(req).await.map_err(|e| kind_of(&e))?;
                resp.into_body().collect().await.map_err(|e| kind_of(&e))?;
            }
            AnyClient::HyperUtilTls(client) => {
                let resp = client.request(req).await.map_err(|e| kind_of(&e))?;
                resp.into_body().collect().await.map_err(|e| kind_of(&e))?;
            }
            AnyClient::Closefirst(client) => {
                let resp = client.request(req).await.map_err(|e| {
                    format!(
                        "{:?} on a {} connection",
                        e.request_progress(),
                        if e.is_reused_connection() {
                            "reused"
                        } else {
                            "new"
                        }
                    )
                })?;
                resp.into_body().collect().await.map_err(|e| kind_of(&e))?;
            }
        }
        Ok(())
    }
}

/// A short name for a failure, from the first hyper or io error in its chain.
fn kind_of(error: &(dyn StdError + 'static)) -> String {
    let mut current: Option<&(dyn StdError + 'static)> = Some(error);
    while let Some(e) = current {
        if let Some(hyper) = e.downcast_ref::<hyper::Error>() {
            if hyper.is_incomplete_message() {
                return "IncompleteMessage (connection closed before a response)".into();
            }
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return format!("io: {:?}", io.kind());
        }
        current = e.source();
    }
    format!("other: {error}")
}

/// Runs the schedule with `which` for `method` against a fresh origin and relay.
/// `progress` is called after each request with (done, failures so far).
pub(crate) async fn run(
    which: Which,
    method: Method,
    scenario: &Scenario,
    mut progress: impl FnMut(usize, usize),
) -> std::io::Result<Outcome> {
    let cert = scenario.tls.then(TestCert::new);
    let mut origin = Origin::builder(OriginConfig {
        idle_timeout: scenario.origin_idle,
        send_keep_alive_hint: scenario.keep_alive_hint,
        ..OriginConfig::default()
    });
    if let Some(cert) = &cert {
        origin = origin.tls(cert.server_config());
    }
    let origin = origin.start().await?;
    let relay = Relay::start(origin.addr(), scenario.one_way_delay).await?;
    let client = AnyClient::new(which, scenario, cert.as_ref());
    let scheme = if scenario.tls { "https" } else { "http" };
    let uri = format!("{scheme}://{}/", relay.addr());
    let mut gaps = Gaps::new(scenario);
    let mut outcome = Outcome {
        requests: scenario.requests,
        ..Outcome::default()
    };
    for i in 0..scenario.requests {
        if i > 0 {
            tokio::time::sleep(gaps.next_gap()).await;
        }
        let req = Request::builder()
            .method(method.clone())
            .uri(&uri)
            .header("x-request-id", i.to_string())
            .body(Full::new(Bytes::from_static(b"{\"n\":1}")))
            .expect("a valid request");
        if let Err(kind) = client.send(req).await {
            outcome.failures += 1;
            *outcome.failures_by_kind.entry(kind).or_default() += 1;
        }
        progress(i + 1, outcome.failures);
    }
    outcome.duplicate_executions = origin.duplicates();
    outcome.connections_opened = origin.connections();
    outcome.never_executed = (0..scenario.requests)
        .filter(|i| origin.executions(&i.to_string()) == 0)
        .count();
    Ok(outcome)
}
