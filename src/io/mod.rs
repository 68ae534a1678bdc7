//! The IO the pool sees: a socket shared between hyper's connection and the pool,
//! the bytes that crossed it, and a look at it before reuse.
//!
//! In the flow of one request this is the bottom of the transport: a connector
//! ([`connect`](crate::connect)) produces a [`TcpIo`] for hyper, and the pool keeps a
//! [`SocketHandle`] to the same socket beside every connection, to look at it before
//! reuse and to tell how far a failed request got.
//!
//! - [`socket`]: the one socket wrapper (TCP or Unix domain) with hyper's
//!   `Read`/`Write` and tokio's `AsyncRead`/`AsyncWrite`, counting bytes in both
//!   directions, and [`SocketHandle`], a second owner of the socket.
//! - [`tcp`] and [`unix`]: its public faces, [`TcpIo`] and [`UnixIo`].
//! - [`wrapped`]: [`Wrapped`], a layer (TLS, a tunnel) over either, which counts the
//!   plaintext it hands to hyper on the socket's handle: what "response started"
//!   means over TLS.
//! - [`peek`]: [`Liveness`], what one non-blocking `recv(MSG_PEEK)` at an idle
//!   connection found (checkout discards anything but [`Liveness::Alive`]).
//! - [`progress`](mod@progress): [`Mark`] and [`progress`](fn@progress), the one
//!   place that turns byte counts into how far a failed request got
//!   ([`Progress`](crate::Progress)), which decides whether it may be resent.
//! - [`options`]: [`SocketOptions`], the options as the kernel reports them, and the
//!   platform-gated part of setting them, so that each platform list is written once.
//!
//! Nothing here imports a connector: `connect` builds on this module, not the reverse.

mod options;
mod peek;
mod progress;
mod socket;
mod tcp;
#[cfg(unix)]
mod unix;
mod wrapped;

pub use crate::info::SocketOptions;
pub(crate) use options::{keepalive_params, set_user_timeout};
pub(crate) use peek::Liveness;
pub(crate) use progress::{progress, Mark};
pub use socket::SocketHandle;
pub use tcp::TcpIo;
#[cfg(unix)]
pub use unix::UnixIo;
pub use wrapped::Wrapped;
