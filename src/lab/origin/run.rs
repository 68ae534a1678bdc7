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

/// Starts the accept loop on the current runtime.
pub(super) fn spawn_task(
    listener: std::net::TcpListener,
    settings: Arc<Settings>,
    stats: Arc<Stats>,
) -> io::Result<Runner> {
    let listener = TcpListener::from_std(listener)?;
    Ok(Runner::Task(tokio::spawn(accept_loop(
        listener, settings, stats,
    ))))
}

/// Starts the accept loop on a new thread with its own runtime; returns once it
/// listens.
pub(super) fn spawn_thread(
    listener: std::net::TcpListener,
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
                let listener = match TcpListener::from_std(listener) {
                    Ok(listener) => listener,
                    Err(error) => {
                        let _ = ready_tx.send(Err(error));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                tokio::spawn(accept_loop(listener, settings, stats));
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

/// What woke the accept loop.
enum Event {
    StopListening,
    Accepted(io::Result<TcpStream>),
    Reaped,
}

/// Accepts connections until the task is dropped; closes the listener (and goes on
/// serving) when a fault asks for it.
async fn accept_loop(listener: TcpListener, settings: Arc<Settings>, stats: Arc<Stats>) {
    let mut connections = JoinSet::new();
    let mut listener = Some(listener);
    loop {
        let event = {
            let mut stop = pin!(stats.stop_listening.notified());
            poll_fn(|cx| {
                if let Some(listener) = &listener {
                    if stop.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Event::StopListening);
                    }
                    if let Poll::Ready(accepted) = listener.poll_accept(cx) {
                        return Poll::Ready(Event::Accepted(accepted.map(|(stream, _)| stream)));
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
                stats.listener_closed.notify_one();
            }
            Event::Accepted(Ok(stream)) => {
                let conn = Conn::accepted(stream, Arc::clone(&stats), Arc::clone(&settings));
                connections.spawn(conn.run());
            }
            Event::Accepted(Err(error)) => {
                tracing::warn!(%error, "lab origin: accept failed");
                tokio::time::sleep(ACCEPT_RETRY).await;
            }
            Event::Reaped => {}
        }
    }
}
