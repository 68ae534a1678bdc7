//! Feature `metrics`: the one figure recorded as it happens rather than read from a
//! snapshot, `http.client.connection.duration`, once per connection as its task ends.
//! A leaf on the `metrics` facade alone, so that the pool's stats can record it while
//! `crate::metrics` (which reads the client's snapshots from the top) stays above
//! everything.

use std::time::Duration;

use metrics::{histogram, Label};

/// The OpenTelemetry attribute naming the server's host name or IP address.
const SERVER_ADDRESS: &str = "server.address";
/// The OpenTelemetry attribute naming the server's port.
const SERVER_PORT: &str = "server.port";

/// Records one connection's lifetime, as its task ends.
pub(crate) fn record_connection_duration(host: &str, port: u16, open_for: Duration) {
    histogram!("http.client.connection.duration", server_labels(host, port))
        .record(open_for.as_secs_f64());
}

/// The labels that name one origin, on every per-origin figure.
pub(crate) fn server_labels(host: &str, port: u16) -> Vec<Label> {
    vec![
        Label::new(SERVER_ADDRESS, host.to_owned()),
        Label::new(SERVER_PORT, port.to_string()),
    ]
}
