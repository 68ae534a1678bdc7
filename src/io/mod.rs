//! The IO the pool sees: a socket shared between hyper's connection task and the pool,
//! the bytes that crossed it, and a look at it before reuse.
//!
//! In the flow of one request this is the bottom of the transport: a connector
//! ([`connect`](crate::connect)) produces a [`TcpIo`] for hyper, and the pool keeps a
//! [`SocketHandle`] to the same socket beside every connection, to look at it before
//! reuse and to tell how far a failed request got.
//!
//! - [`tcp`]: [`TcpIo`], hyper's `Read`/`Write` over a tokio `TcpStream`, counting
//!   bytes in both directions, and [`SocketHandle`], a second owner of the socket.
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
mod tcp;

pub use crate::info::SocketOptions;
pub(crate) use options::{keepalive_params, set_user_timeout};
pub(crate) use peek::Liveness;
pub(crate) use progress::{progress, Mark};
pub use tcp::{SocketHandle, TcpIo};
