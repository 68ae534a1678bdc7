//! Feature `metrics`: the pool's figures through the [`metrics`](https://docs.rs/metrics)
//! facade, which `metrics-exporter-prometheus` and the OpenTelemetry bridges read.
//!
//! Nothing is recorded on a request's path. [`publish`] reads
//! [`Client::stats`](crate::Client::stats) and
//! [`Client::origin_stats`](crate::Client::origin_stats) and sets every figure at once
//! (counters through their absolute value), so call it from a periodic task or just
//! before each scrape. The one figure recorded as it happens is
//! `http.client.connection.duration`, once per connection, when its task ends (by the
//! pool, through a leaf of its own: nothing below the client imports this module).
//!
//! ```no_run
//! # async fn demo(client: closefirst::Client<http_body_util::Empty<bytes::Bytes>>) {
//! closefirst::metrics::describe();
//! let mut every = tokio::time::interval(std::time::Duration::from_secs(10));
//! loop {
//!     every.tick().await;
//!     closefirst::metrics::publish(&client);
//! }
//! # }
//! ```
//!
//! # Names
//!
//! OpenTelemetry's HTTP client semantic conventions where they have a name, with the
//! attributes `server.address` (host name or IP address) and `server.port`:
//!
//! | name | kind | unit | labels |
//! |---|---|---|---|
//! | `http.client.open_connections` | gauge | connections | `http.connection.state` = `idle` / `active` |
//! | `http.client.connection.duration` | histogram | seconds | |
//!
//! and `closefirst.*` for the rest. Per origin (`server.address`, `server.port`):
//!
//! | name | kind | unit | labels |
//! |---|---|---|---|
//! | `closefirst.pool.connections_opened` | counter | connections | |
//! | `closefirst.pool.waiting_requests` | gauge | requests | |
//! | `closefirst.pool.evictions` | counter | connections | `closefirst.eviction.reason` |
//! | `closefirst.pool.learned_idle_timeout` | gauge | seconds (0: nothing learned) | |
//! | `closefirst.pool.idle_deadline` | gauge | seconds | |
//! | `closefirst.pool.idle_deadline_source` | gauge | 1 for the source in force, 0 for the others | `closefirst.deadline.source` = `configured` / `hint` / `observed_close` / `proven` |
//! | `closefirst.pool.proven_idle` | gauge | seconds | |
//! | `closefirst.pool.client_closed_first` | counter | connections | |
//! | `closefirst.pool.server_closed_first` | counter | connections | |
//! | `closefirst.pool.server_close_shortest_idle` | gauge | seconds (set once the server closed one) | |
//! | `closefirst.client.retry_budget_exhausted` | counter | requests | |
//!
//! For the whole client:
//!
//! | name | kind | unit | labels |
//! |---|---|---|---|
//! | `closefirst.pool.reuses` | counter | connections | |
//! | `closefirst.pool.waiting_for_room` | gauge | requests | |
//! | `closefirst.pool.preconnects` | counter | connections | `closefirst.preconnect.outcome` = `opened` / `failed` |
//! | `closefirst.client.resends` | counter | requests | `closefirst.resend.class` = `not_written` / `written_no_response` |
//! | `closefirst.client.refusals` | counter | requests | `closefirst.refusal.reason` |
//!
//! Eviction reasons are the names [`Evictions::iter`](crate::Evictions::iter) gives
//! (`idle_timeout`, `server_hint`, `learned_timeout`, `closed_by_server`, …), refusal
//! reasons those of [`Refusals::iter`](crate::Refusals::iter). `closefirst.pool.server_closed_first`
//! above zero is the live parity violation (see [`IdleCloses`](crate::IdleCloses)).

use std::time::Duration;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, Label, Unit};

use crate::body::Body;
use crate::client::Client;
use crate::info::{DeadlineSource, OriginStats};
use crate::record::server_labels;

/// Registers each name's unit and description with the installed recorder. Call it
/// once, after installing the recorder (exporters show the descriptions as help text).
pub fn describe() {
    describe_gauge!(
        "http.client.open_connections",
        Unit::Count,
        "Connections open to the server, by http.connection.state (idle, active)."
    );
    describe_histogram!(
        "http.client.connection.duration",
        Unit::Seconds,
        "How long each connection was open, from its handshake to its close."
    );
    describe_counter!(
        "closefirst.pool.connections_opened",
        Unit::Count,
        "Connections opened to the server."
    );
    describe_gauge!(
        "closefirst.pool.waiting_requests",
        Unit::Count,
        "Requests waiting for a connection under max_connections_per_origin or max_connections_total."
    );
    describe_gauge!(
        "closefirst.pool.idle_deadline",
        Unit::Seconds,
        "How long a connection to the origin may stay idle now, by where that comes from."
    );
    describe_gauge!(
        "closefirst.pool.idle_deadline_source",
        Unit::Count,
        "1 for where the origin's idle deadline comes from (closefirst.deadline.source), 0 for the others."
    );
    describe_gauge!(
        "closefirst.pool.proven_idle",
        Unit::Seconds,
        "The longest idle time the server was seen to allow; 0 until seen."
    );
    describe_counter!(
        "closefirst.pool.evictions",
        Unit::Count,
        "Connections the pool closed, by closefirst.eviction.reason."
    );
    describe_gauge!(
        "closefirst.pool.learned_idle_timeout",
        Unit::Seconds,
        "The server's idle timeout learned from its own closes; 0 when nothing is learned."
    );
    describe_counter!(
        "closefirst.pool.client_closed_first",
        Unit::Count,
        "Idle connections the client closed at their deadline, before the server."
    );
    describe_counter!(
        "closefirst.pool.server_closed_first",
        Unit::Count,
        "Idle connections the server closed first: keep-alive parity fails."
    );
    describe_gauge!(
        "closefirst.pool.server_close_shortest_idle",
        Unit::Seconds,
        "The shortest idle time before a server close."
    );
    describe_counter!(
        "closefirst.pool.reuses",
        Unit::Count,
        "Times a pooled connection was handed out again."
    );
    describe_gauge!(
        "closefirst.pool.waiting_for_room",
        Unit::Count,
        "Requests waiting for room under max_connections_total, across origins."
    );
    describe_counter!(
        "closefirst.pool.preconnects",
        Unit::Count,
        "Connections opened ahead of traffic by preconnect, by closefirst.preconnect.outcome."
    );
    describe_counter!(
        "closefirst.client.resends",
        Unit::Count,
        "Failed requests sent again, by closefirst.resend.class."
    );
    describe_counter!(
        "closefirst.client.refusals",
        Unit::Count,
        "Failed requests not sent again, by closefirst.refusal.reason."
    );
    describe_counter!(
        "closefirst.client.retry_budget_exhausted",
        Unit::Count,
        "Failed requests to the origin not sent again because its retry budget was spent."
    );
}

/// Publishes a snapshot of `client`'s pool to the installed recorder (see the module
/// docs for the names). Cheap enough to call every few seconds: one snapshot of the
/// pool, and one recorder call per figure.
pub fn publish<B: Body>(client: &Client<B>) {
    let stats = client.stats();
    counter!("closefirst.pool.reuses").absolute(stats.reuses);
    gauge!("closefirst.pool.waiting_for_room").set(stats.waiting_for_room as f64);
    let preconnects = [
        ("opened", stats.preconnects.opened),
        ("failed", stats.preconnects.failed),
    ];
    for (outcome, value) in preconnects {
        counter!("closefirst.pool.preconnects", "closefirst.preconnect.outcome" => outcome)
            .absolute(value);
    }
    let resends = [
        ("not_written", stats.resends.not_written),
        ("written_no_response", stats.resends.written_no_response),
    ];
    for (class, value) in resends {
        counter!("closefirst.client.resends", "closefirst.resend.class" => class).absolute(value);
    }
    for (reason, value) in stats.refusals.iter() {
        counter!("closefirst.client.refusals", "closefirst.refusal.reason" => reason)
            .absolute(value);
    }
    for origin in client.origin_stats() {
        publish_origin(&origin);
    }
}

fn publish_origin(origin: &OriginStats) {
    let server = server_labels(&origin.host, origin.port);
    let with = |key: &'static str, value: &'static str| {
        let mut labels = server.clone();
        labels.push(Label::new(key, value));
        labels
    };
    gauge!(
        "http.client.open_connections",
        with("http.connection.state", "idle")
    )
    .set(origin.idle as f64);
    gauge!(
        "http.client.open_connections",
        with("http.connection.state", "active")
    )
    .set(origin.active as f64);
    counter!("closefirst.pool.connections_opened", server.clone())
        .absolute(origin.connections_opened);
    gauge!("closefirst.pool.waiting_requests", server.clone()).set(origin.waiting as f64);
    for (reason, value) in origin.evictions.iter() {
        counter!(
            "closefirst.pool.evictions",
            with("closefirst.eviction.reason", reason)
        )
        .absolute(value);
    }
    let learned = origin.learned_idle_timeout.unwrap_or(Duration::ZERO);
    gauge!("closefirst.pool.learned_idle_timeout", server.clone()).set(learned.as_secs_f64());
    gauge!("closefirst.pool.idle_deadline", server.clone()).set(origin.idle_deadline.as_secs_f64());
    for source in [
        DeadlineSource::Configured,
        DeadlineSource::Hint,
        DeadlineSource::ObservedClose,
        DeadlineSource::Proven,
    ] {
        let in_force = f64::from(u8::from(source == origin.idle_deadline_source));
        gauge!(
            "closefirst.pool.idle_deadline_source",
            with("closefirst.deadline.source", source.as_str())
        )
        .set(in_force);
    }
    gauge!("closefirst.pool.proven_idle", server.clone()).set(origin.proven_idle.as_secs_f64());
    let closes = &origin.idle_closes;
    counter!("closefirst.pool.client_closed_first", server.clone()).absolute(closes.by_client);
    counter!("closefirst.pool.server_closed_first", server.clone()).absolute(closes.by_server);
    counter!("closefirst.client.retry_budget_exhausted", server.clone())
        .absolute(origin.retry_budget_exhausted);
    if let Some(shortest) = closes.shortest_server_close {
        gauge!("closefirst.pool.server_close_shortest_idle", server).set(shortest.as_secs_f64());
    }
}
