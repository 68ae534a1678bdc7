//! Where an origin runs: the listener, the accept loop, and the task or thread that
//! owns them.

use std::future::{poll_fn, Future};
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

use super::config::Settings;
use super::conn::Conn;
use super::stats::Stats;
use super::stream::{ServerStream, Transport};

/// Pause after a failed `accept` (out of file descriptors, say) before trying again.
const ACCEPT_RETRY: Duration = Duration::from_millis(10);
/// Connections the kernel queues before the accept loop takes them.
const BACKLOG: i32 = 1024;

/// What stops the origin when its handle is dropped.
#[derive(Debug)]
pub(super) enum Runner {
    /// The accept task on the caller's runtime: aborting it drops the listener and
    /// the `JoinSet` of connections, which aborts every connection task.
    Task(JoinHandle<()>),
    /// A thread running its own runtime until `shutdown` fires (or is dropped).
    Thread {
        shutdown: Option<oneshot::Sender<()>>,
        thread: Option<std::thread::JoinHandle<()>>,
    },
}

impl Runner {
    pub(super) fn stop(&mut self) {
        match self {
            Runner::Task(task) => task.abort(),
            Runner::Thread { shutdown, thread } => {
                if let Some(tx) = shutdown.take() {
                    let _ = tx.send(());
                }
                // Dropping the runtime at the end of the thread closes every socket,
                // so once joined, the origin is gone.
                if let Some(thread) = thread.take() {
                    if thread.join().is_err() {
                        tracing::warn!("lab origin: server thread panicked");
                    }
                }
            }
        }
    }
}

/// A listener on `127.0.0.1`, a free port, not yet registered with a runtime.
pub(super) fn bind() -> io::Result<(std::net::TcpListener, SocketAddr)> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    let addr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0));
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    socket.set_nonblocking(true)?;
    let listener = std::net::TcpListener::from(socket);
    let addr = listener.local_addr()?;
    Ok((listener, addr))
}

/// The listeners an origin accepts on, not yet registered with a runtime.
pub(super) struct Listeners {
    pub(super) tcp: std::net::TcpListener,
    #[cfg(unix)]
    pub(super) unix: Option<std::os::unix::net::UnixListener>,
    pub(super) transport: Transport,
}

impl Listeners {
    /// Binds the TCP listener, and the Unix one if `transport` asks for it.
    pub(super) fn bind(transport: Transport) -> io::Result<(Listeners, SocketAddr)> {
        let (tcp, addr) = bind()?;
        #[cfg(unix)]
        let unix = match &transport.unix {
            Some(path) => {
                let listener = std::os::unix::net::UnixListener::bind(path)?;
                listener.set_nonblocking(true)?;
                Some(listener)
            }
            None => None,
        };
        Ok((
            Listeners {
                tcp,
                #[cfg(unix)]
                unix,
                transport,
            },
            addr,
        ))
    }

    /// Registers the listeners with the current runtime.
    fn register(self) -> io::Result<Accepting> {
        Ok(Accepting {
            tcp: Some(TcpListener::from_std(self.tcp)?),
            #[cfg(unix)]
            unix: self
                .unix
                .map(tokio::net::UnixListener::from_std)
                .transpose()?,
            transport: self.transport,
        })
    }
}

/// The listeners, registered, as the accept loop polls them.
struct Accepting {
    tcp: Option<TcpListener>,
    #[cfg(unix)]
    unix: Option<tokio::net::UnixListener>,
    transport: Transport,
}

/// Starts the accept loop on the current runtime.
pub(super) fn spawn_task(
    listeners: Listeners,
    settings: Arc<Settings>,
    stats: Arc<Stats>,
) -> io::Result<Runner> {
    let accepting = listeners.register()?;
    Ok(Runner::Task(tokio::spawn(accept_loop(
        accepting, settings, stats,
    ))))
}

/// Starts the accept loop on a new thread with its own runtime; returns once it
/// listens.
pub(super) fn spawn_thread(
    listeners: Listeners,
    addr: SocketAddr,
    settings: Arc<Settings>,
    stats: Arc<Stats>,
) -> io::Result<Runner> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name(format!("lab-origin-{}", addr.port()))
        .spawn(move || {
            runtime.block_on(async move {
                let accepting = match listeners.register() {
                    Ok(accepting) => accepting,
                    Err(error) => {
                        let _ = ready_tx.send(Err(error));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                tokio::spawn(accept_loop(accepting, settings, stats));
                // Until a shutdown signal, or the handle vanished; the runtime is
                // dropped after that, with every task and socket.
                let _ = shutdown_rx.await;
            });
        })?;
    let ready = ready_rx
        .recv()
        .unwrap_or_else(|_| Err(io::Error::other("lab origin: server thread ended early")));
    let mut runner = Runner::Thread {
        shutdown: Some(shutdown_tx),
        thread: Some(thread),
    };
    if let Err(error) = ready {
        runner.stop();
        return Err(error);
    }
    Ok(runner)
}

/// A connection just accepted, before any TLS handshake.
enum Accepted {
    Tcp(TcpStream),
    #[cfg(unix)]
    Unix(tokio::net::UnixStream),
}

/// What woke the accept loop.
enum Event {
    StopListening,
    Accepted(io::Result<Accepted>),
    Reaped,
}

/// Accepts connections until the task is dropped; closes the listeners (and goes on
/// serving) when a fault asks for it.
async fn accept_loop(accepting: Accepting, settings: Arc<Settings>, stats: Arc<Stats>) {
    let mut connections = JoinSet::new();
    let Accepting {
        tcp: mut listener,
        #[cfg(unix)]
            unix: mut unix_listener,
        transport,
    } = accepting;
    loop {
        let event = {
            let mut stop = pin!(stats.stop_listening.notified());
            poll_fn(|cx| {
                if let Some(listener) = &listener {
                    if stop.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Event::StopListening);
                    }
                    if let Poll::Ready(accepted) = listener.poll_accept(cx) {
                        return Poll::Ready(Event::Accepted(
                            accepted.map(|(stream, _)| Accepted::Tcp(stream)),
                        ));
                    }
                }
                #[cfg(unix)]
                if let Some(unix) = &unix_listener {
                    if let Poll::Ready(accepted) = unix.poll_accept(cx) {
                        return Poll::Ready(Event::Accepted(
                            accepted.map(|(stream, _)| Accepted::Unix(stream)),
                        ));
                    }
                }
                // Reaps finished connections so the set does not grow with every accept.
                match connections.poll_join_next(cx) {
                    Poll::Ready(Some(_)) => Poll::Ready(Event::Reaped),
                    _ => Poll::Pending,
                }
            })
            .await
        };
        match event {
            Event::StopListening => {
                listener = None;
                #[cfg(unix)]
                {
                    unix_listener = None;
                }
                stats.listener_closed.notify_one();
            }
            Event::Accepted(Ok(accepted)) => {
                connections.spawn(serve(
                    accepted,
                    transport.clone(),
                    Arc::clone(&stats),
                    Arc::clone(&settings),
                ));
            }
            Event::Accepted(Err(error)) => {
                tracing::warn!(%error, "lab origin: accept failed");
                tokio::time::sleep(ACCEPT_RETRY).await;
            }
            Event::Reaped => {}
        }
    }
}

/// Serves one accepted connection, after the TLS handshake if the origin speaks TLS.
async fn serve(
    accepted: Accepted,
    transport: Transport,
    stats: Arc<Stats>,
    settings: Arc<Settings>,
) {
    let stream = match accepted {
        Accepted::Tcp(stream) => match secure(&transport, stream).await {
            Some(stream) => stream,
            None => return,
        },
        #[cfg(unix)]
        Accepted::Unix(stream) => ServerStream::Unix(stream),
    };
    Conn::accepted(stream, stats, settings).run().await;
}

/// The TLS handshake on a TCP connection, if the origin speaks TLS; `None` if it
/// failed (the client went away, or refused the certificate).
async fn secure(transport: &Transport, stream: TcpStream) -> Option<ServerStream> {
    #[cfg(feature = "rustls")]
    if let Some(tls) = &transport.tls {
        return match tls.accept(stream).await {
            Ok(stream) => Some(ServerStream::Tls(Box::new(stream))),
            Err(error) => {
                tracing::debug!(%error, "lab origin: TLS handshake failed");
                None
            }
        };
    }
    let _ = transport;
    Some(ServerStream::Tcp(stream))
}
