//! [`ConnectionInfo`]: what a response tells about its connection, and the one thing
//! it may ask of it ([`ConnectionInfo::poison`]).

use std::net::SocketAddr;
use std::sync::Weak;
use std::time::Duration;

use super::SocketOptions;

/// Facts about the connection a response came on, attached to every response as an
/// [`http::Extensions`] entry.
///
/// ```no_run
/// # async fn demo(client: closefirst::Client<http_body_util::Empty<bytes::Bytes>>) -> Result<(), closefirst::Error> {
/// let req = http::Request::get("http://127.0.0.1:8080/").body(Default::default()).unwrap();
/// let resp = client.request(req).await?;
/// let info = resp.extensions().get::<closefirst::ConnectionInfo>().expect("always attached");
/// println!("connection {} reused={} after {:?} idle", info.id, info.reused, info.idle_for);
/// if resp.headers().contains_key("x-backend-draining") {
///     // An application-level reason not to send more on this connection.
///     info.poison();
/// }
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ConnectionInfo {
    /// The pool's identifier for the connection, unique within the process.
    pub id: u64,
    /// Whether the connection came from the pool's idle connections: it had served an
    /// earlier request, or it was opened ahead of traffic by
    /// [`Client::preconnect`](crate::Client::preconnect) (then `requests` is 1). Such a
    /// connection may meet the server's close; a new one cannot.
    pub reused: bool,
    /// How long the connection had been idle before this request, counted from when
    /// the previous response's head arrived (the earliest moment the server can have
    /// started its idle timer; see the crate docs), zero for a new connection.
    pub idle_for: Duration,
    /// How many requests the connection has carried, this one included.
    pub requests: u64,
    /// The peer's address, when the connector reports it.
    pub remote_addr: Option<SocketAddr>,
    /// The connection's own (local) address, when the connector reports it: with the
    /// peer's, it names the connection in the server's logs and in `ss`/`netstat`.
    pub local_addr: Option<SocketAddr>,
    /// How many attempts the response took (1 when the first attempt succeeded).
    pub attempts: u32,
    /// The socket options as the kernel reported them when the connection was opened,
    /// when the connector gives access to the socket.
    pub socket: Option<SocketOptions>,
    /// The connection itself, to [`poison`](ConnectionInfo::poison) it. Weak, so that
    /// an info kept after the connection closed keeps nothing of it open.
    pub(crate) connection: Option<Weak<dyn Poison>>,
}

impl ConnectionInfo {
    /// Marks the connection this response came on as not reusable, for a reason of
    /// your own (a response that says the backend is draining, a body that failed
    /// validation, a peer you no longer trust): the pool closes it (the client sends
    /// the FIN) instead of checking it in when its response has been read, or at once
    /// if it is already idle, and no later request is sent on it. Counted under
    /// [`Evictions::poisoned`](crate::Evictions::poisoned). A connection that has
    /// already closed is left as it is; marking one twice changes nothing.
    ///
    /// Costs nothing per request until it is called: the info holds a weak reference to
    /// a part of the connection that exists anyway.
    pub fn poison(&self) {
        if let Some(connection) = self.connection.as_ref().and_then(Weak::upgrade) {
            connection.poison();
        }
    }
}

/// What a [`ConnectionInfo`] may ask of its connection; implemented by the pool's
/// per-connection state.
pub(crate) trait Poison: Send + Sync {
    /// Marks the connection not reusable.
    fn poison(&self);
}
