//! Heap memory per idle pooled connection: closefirst against hyper-util's legacy
//! client, in the same process, with a bare tokio `TcpStream` as the floor.
//!
//! ```text
//! cargo bench --bench memory                # request body type Empty<Bytes>
//! BODY=boxed cargo bench --bench memory     # both clients built for a boxed body
//! ```
//!
//! Each client opens N = 1000 keep-alive connections to an in-process hyper server on
//! 127.0.0.1 (real loopback TCP) by sending 1000 GETs at once and reading every body
//! (the server answers them together once all 1000 have arrived, so none can reuse
//! another's connection);
//! once the connections sit idle in the pool, the heap bytes the client side holds
//! are compared with those before, and divided by the number of connections the
//! server sees open.
//!
//! How client and server are told apart: the server runs on a runtime of its own
//! whose threads are marked, and a counting `#[global_allocator]` tags every
//! allocation with the side of the thread that made it, so a free is charged to the
//! side that allocated, whichever thread frees it. Counted are the bytes requested
//! from the allocator and still live (allocations minus frees); not counted are the
//! allocator's own rounding and bookkeeping, and the kernel's socket buffers.
//!
//! closefirst closes connections idle for 4 s and keeps 32 idle per origin by
//! default; for this measurement only it is built with `idle_timeout(60 s)` and
//! `max_idle_per_origin(1000)`, and hyper-util with `pool_idle_timeout(60 s)` (and a
//! tokio pool timer, so its timeout is enforced as closefirst's is).
//!
//! Needs about 2 × 1000 file descriptors (`ulimit -n` 4096 or more is comfortable).

#![allow(missing_docs)]
// a plain `main`, documented here
// The counting allocator needs `unsafe impl GlobalAlloc`; it only forwards to the
// system allocator, with a small header that records which side allocated.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Uri};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tokio::sync::Barrier;
use tokio::task::JoinSet;

const N: usize = 1000;
const WARM_UP_N: usize = 50;
const BODY: &[u8] = b"hello, world\n";
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the live byte counts must stay unchanged before a reading is taken.
const QUIET_FOR: Duration = Duration::from_millis(300);
const QUIET_AT_MOST: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------
// The counting allocator.

const CLIENT: u8 = 0;
const SERVER: u8 = 1;

thread_local! {
    /// The side this thread works for: every thread is the client's but the server
    /// runtime's own.
    static SIDE: Cell<u8> = const { Cell::new(CLIENT) };
}

/// Live requested bytes per side.
static LIVE: [AtomicI64; 2] = [AtomicI64::new(0), AtomicI64::new(0)];

/// The client side's live allocations by size, to tell what a connection is made of:
/// a count per exact size below [`EXACT_SIZES`] bytes, and above it the bytes per
/// power of two (a large allocation is a table or a list shared by many connections).
const EXACT_SIZES: usize = 16 * 1024;
static CLIENT_BY_SIZE: [AtomicI64; EXACT_SIZES] = [const { AtomicI64::new(0) }; EXACT_SIZES];
static CLIENT_LARGE_BYTES: [AtomicI64; 64] = [const { AtomicI64::new(0) }; 64];

fn by_size(size: usize, sign: i64) {
    if size < EXACT_SIZES {
        CLIENT_BY_SIZE[size].fetch_add(sign, Ordering::Relaxed);
    } else {
        CLIENT_LARGE_BYTES[size.ilog2() as usize].fetch_add(sign * size as i64, Ordering::Relaxed);
    }
}

/// The counts of `CLIENT_BY_SIZE`, then `CLIENT_LARGE_BYTES`.
fn sizes_now() -> Vec<i64> {
    CLIENT_BY_SIZE
        .iter()
        .chain(&CLIENT_LARGE_BYTES)
        .map(|count| count.load(Ordering::Relaxed))
        .collect()
}

/// What the client side allocated between two readings of [`sizes_now`], per
/// connection: `(size, allocations per connection, bytes per connection)`, where a size
/// above [`EXACT_SIZES`] is written `2^k` and counted in bytes only. Sizes that add
/// less than 8 bytes per connection are left out.
fn size_breakdown(before: &[i64], after: &[i64], connections: usize) -> Vec<(String, f64, f64)> {
    let n = connections.max(1) as f64;
    let mut rows = Vec::new();
    for (i, (a, b)) in after.iter().zip(before).enumerate() {
        let delta = (a - b) as f64;
        let (label, count, bytes) = if i < EXACT_SIZES {
            (i.to_string(), delta / n, delta * i as f64 / n)
        } else {
            (format!("2^{}", i - EXACT_SIZES), f64::NAN, delta / n)
        };
        if bytes.abs() >= 8.0 {
            rows.push((label, count, bytes));
        }
    }
    rows
}

struct Counting;

/// Room in front of each allocation for the side tag, keeping the caller's alignment:
/// a power of two at least as large as the alignment, so `base + header` stays aligned.
fn header(layout: Layout) -> usize {
    layout.align().max(16)
}

fn inner_layout(layout: Layout) -> Layout {
    Layout::from_size_align(layout.size() + header(layout), layout.align())
        .expect("a real allocation plus at most its alignment still fits a Layout")
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let base = System.alloc(inner_layout(layout));
        if base.is_null() {
            return base;
        }
        // A thread being torn down has no thread-locals left: call it the client's.
        let side = SIDE.try_with(Cell::get).unwrap_or(CLIENT);
        let ptr = base.add(header(layout));
        ptr.sub(1).write(side);
        LIVE[usize::from(side)].fetch_add(layout.size() as i64, Ordering::Relaxed);
        if side == CLIENT {
            by_size(layout.size(), 1);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let side = ptr.sub(1).read();
        LIVE[usize::from(side)].fetch_sub(layout.size() as i64, Ordering::Relaxed);
        if side == CLIENT {
            by_size(layout.size(), -1);
        }
        System.dealloc(ptr.sub(header(layout)), inner_layout(layout));
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live(side: u8) -> i64 {
    LIVE[usize::from(side)].load(Ordering::Relaxed)
}

// ---------------------------------------------------------------------------------
// The server: its own runtime, its threads marked as the server's.

/// Connections the server has accepted and seen closed, and the barrier every
/// request waits at before it is answered.
#[derive(Clone)]
struct Counts {
    accepted: Arc<AtomicUsize>,
    closed: Arc<AtomicUsize>,
    gate: Arc<Mutex<Arc<Barrier>>>,
}

impl Counts {
    fn new() -> Counts {
        Counts {
            accepted: Arc::default(),
            closed: Arc::default(),
            gate: Arc::new(Mutex::new(Arc::new(Barrier::new(1)))),
        }
    }

    fn open(&self) -> usize {
        self.accepted.load(Ordering::SeqCst) - self.closed.load(Ordering::SeqCst)
    }

    /// The next `n` requests are answered together, once all have arrived: no
    /// connection is free for reuse while the `n` are being sent, so a client opens
    /// `n` connections.
    fn answer_together(&self, n: usize) {
        *self.gate.lock().unwrap() = Arc::new(Barrier::new(n));
    }
}

fn server_runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .on_thread_start(|| SIDE.with(|side| side.set(SERVER)))
        .enable_all()
        .build()
        .unwrap()
}

fn start_server(rt: &Runtime, counts: Counts) -> SocketAddr {
    let listener = rt.block_on(async { TcpListener::bind("127.0.0.1:0").await.unwrap() });
    let addr = listener.local_addr().unwrap();
    rt.spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counts.accepted.fetch_add(1, Ordering::SeqCst);
            let closed = Arc::clone(&counts.closed);
            let gate = Arc::clone(&counts.gate);
            tokio::spawn(async move {
                let service = service_fn(move |_req| {
                    let barrier = Arc::clone(&gate.lock().unwrap());
                    async move {
                        barrier.wait().await;
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(
                            BODY,
                        ))))
                    }
                });
                let _ = http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
                closed.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    addr
}

// ---------------------------------------------------------------------------------
// The clients.

#[derive(Clone, Copy, Debug)]
enum Kind {
    RawTcp,
    Closefirst,
    HyperUtilLegacy,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::RawTcp => "raw tokio TcpStream",
            Kind::Closefirst => "closefirst",
            Kind::HyperUtilLegacy => "hyper_util_legacy",
        }
    }
}

/// The request body type both clients are built for. It matters per connection: hyper's
/// request queue keeps 32 requests' worth of slots for every connection, whichever
/// client. `Empty<Bytes>` takes no room; a boxed body (what a client that takes any
/// body uses) takes two words.
trait RequestBody:
    hyper::body::Body<Data = Bytes, Error = Infallible> + Send + Unpin + 'static
{
    const NAME: &'static str;
    fn empty() -> Self;
}

impl RequestBody for Empty<Bytes> {
    const NAME: &'static str = "Empty<Bytes>";
    fn empty() -> Self {
        Empty::new()
    }
}

impl RequestBody for BoxBody<Bytes, Infallible> {
    const NAME: &'static str = "BoxBody<Bytes, Infallible>";
    fn empty() -> Self {
        Empty::new().boxed()
    }
}

/// What holds the idle connections until the reading is taken.
enum Holder<B> {
    Raw(Vec<TcpStream>),
    Closefirst(closefirst::Client<B>),
    HyperUtilLegacy(
        hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, B>,
    ),
}

impl<B: RequestBody> Holder<B> {
    fn new(kind: Kind) -> Holder<B> {
        match kind {
            Kind::RawTcp => Holder::Raw(Vec::new()),
            Kind::Closefirst => Holder::Closefirst(
                closefirst::Client::builder()
                    .idle_timeout(POOL_IDLE_TIMEOUT)
                    .max_idle_per_origin(N)
                    .build()
                    .expect("valid settings"),
            ),
            Kind::HyperUtilLegacy => Holder::HyperUtilLegacy(
                hyper_util::client::legacy::Client::builder(TokioExecutor::new())
                    .pool_idle_timeout(POOL_IDLE_TIMEOUT)
                    .pool_timer(TokioTimer::new())
                    .build_http(),
            ),
        }
    }

    /// `n` GETs at once, each body read to its end.
    async fn open(&mut self, uri: &Uri, n: usize) {
        let mut set = JoinSet::new();
        for _ in 0..n {
            let uri = uri.clone();
            match self {
                Holder::Raw(_) => {
                    set.spawn(async move { Some(raw_get(&uri).await) });
                }
                Holder::Closefirst(client) => {
                    let client = client.clone();
                    set.spawn(async move {
                        let req = Request::get(uri).body(B::empty()).unwrap();
                        let resp = client.request(req).await.unwrap();
                        let body = resp.into_body().collect().await.unwrap().to_bytes();
                        assert_eq!(&body[..], BODY);
                        None
                    });
                }
                Holder::HyperUtilLegacy(client) => {
                    let client = client.clone();
                    set.spawn(async move {
                        let req = Request::get(uri).body(B::empty()).unwrap();
                        let resp = client.request(req).await.unwrap();
                        let body = resp.into_body().collect().await.unwrap().to_bytes();
                        assert_eq!(&body[..], BODY);
                        None
                    });
                }
            }
        }
        while let Some(stream) = set.join_next().await {
            if let (Some(stream), Holder::Raw(streams)) = (stream.unwrap(), &mut *self) {
                streams.push(stream);
            }
        }
    }

    fn idle(&self) -> Option<usize> {
        match self {
            Holder::Raw(streams) => Some(streams.len()),
            Holder::Closefirst(client) => Some(client.stats().idle),
            Holder::HyperUtilLegacy(_) => None,
        }
    }
}

/// One request written by hand on a new connection, its response read; the idle
/// connection is returned.
async fn raw_get(uri: &Uri) -> TcpStream {
    let authority = uri.authority().expect("absolute URI").as_str();
    let mut stream = TcpStream::connect(authority)
        .await
        .unwrap_or_else(|e| panic!("connect failed ({e}); is `ulimit -n` at least 4096?"));
    stream.set_nodelay(true).unwrap();
    let request = format!("GET / HTTP/1.1\r\nhost: {authority}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = [0u8; 1024];
    let mut len = 0;
    while !buf[..len].ends_with(BODY) {
        let n = stream.read(&mut buf[len..]).await.unwrap();
        assert!(n > 0, "the server closed before its response ended");
        len += n;
    }
    stream
}

// ---------------------------------------------------------------------------------
// Measuring.

/// Waits until neither side's live bytes change for `QUIET_FOR`: connections have
/// gone back to the pool and their tasks are parked.
async fn quiet() {
    let start = Instant::now();
    let mut last = (live(CLIENT), live(SERVER));
    let mut since = Instant::now();
    while since.elapsed() < QUIET_FOR && start.elapsed() < QUIET_AT_MOST {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = (live(CLIENT), live(SERVER));
        if now != last {
            last = now;
            since = Instant::now();
        }
    }
}

struct Reading {
    kind: Kind,
    connections: usize,
    client_bytes: i64,
    server_bytes: i64,
    /// See [`size_breakdown`].
    by_size: Vec<(String, f64, f64)>,
}

impl Reading {
    fn client_per_conn(&self) -> f64 {
        self.client_bytes as f64 / self.connections as f64
    }

    fn server_per_conn(&self) -> f64 {
        self.server_bytes as f64 / self.connections as f64
    }
}

fn measure<B: RequestBody>(
    rt: &Runtime,
    counts: &Counts,
    uri: &Uri,
    kind: Kind,
    n: usize,
) -> Reading {
    rt.block_on(async {
        assert_eq!(
            counts.open(),
            0,
            "the previous run's connections are closed"
        );
        counts.answer_together(n);
        let mut holder = Holder::<B>::new(kind);
        quiet().await;
        let (client_before, server_before) = (live(CLIENT), live(SERVER));
        let sizes_before = sizes_now();

        holder.open(uri, n).await;
        // Clients that count their idle connections must show all `n`; hyper-util
        // does not tell, so for it the quiet wait below is all there is.
        if holder.idle().is_some() {
            let deadline = Instant::now() + QUIET_AT_MOST;
            while holder.idle() != Some(n) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert_eq!(holder.idle(), Some(n), "{kind:?}: every connection idle");
        }
        quiet().await;
        let connections = counts.open();
        let reading = Reading {
            kind,
            connections,
            client_bytes: live(CLIENT) - client_before,
            server_bytes: live(SERVER) - server_before,
            by_size: size_breakdown(&sizes_before, &sizes_now(), connections),
        };

        drop(holder);
        let deadline = Instant::now() + QUIET_AT_MOST;
        while counts.open() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        reading
    })
}

fn main() {
    // `BODY=boxed`: both clients built for a boxed request body instead of `Empty`.
    match std::env::var("BODY").as_deref() {
        Ok("boxed") => run::<BoxBody<Bytes, Infallible>>(),
        _ => run::<Empty<Bytes>>(),
    }
}

fn run<B: RequestBody>() {
    let server_rt = server_runtime();
    let counts = Counts::new();
    let addr = start_server(&server_rt, counts.clone());
    let uri: Uri = format!("http://{addr}/").parse().unwrap();
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    let kinds = [Kind::RawTcp, Kind::Closefirst, Kind::HyperUtilLegacy];
    // A first, smaller round lets one-time allocations (runtime internals, lazily
    // grown tables) happen outside the measured round.
    for kind in kinds {
        measure::<B>(&client_rt, &counts, &uri, kind, WARM_UP_N);
    }
    let readings: Vec<Reading> = kinds
        .iter()
        .map(|&kind| measure::<B>(&client_rt, &counts, &uri, kind, N))
        .collect();

    println!("Heap bytes per idle keep-alive connection, N = {N}, one process, loopback TCP,");
    println!(
        "request body type {} (BODY=boxed for a boxed body)",
        B::NAME
    );
    println!();
    println!(
        "{:<22} {:>11} {:>18} {:>18}",
        "client", "connections", "client bytes/conn", "server bytes/conn"
    );
    for r in &readings {
        println!(
            "{:<22} {:>11} {:>18.0} {:>18.0}",
            r.kind.name(),
            r.connections,
            r.client_per_conn(),
            r.server_per_conn()
        );
    }
    let per_conn = |kind: &str| {
        readings
            .iter()
            .find(|r| r.kind.name() == kind)
            .map(Reading::client_per_conn)
            .expect("every kind was measured")
    };
    let raw = per_conn("raw tokio TcpStream");
    let closefirst = per_conn("closefirst");
    let legacy = per_conn("hyper_util_legacy");
    println!();
    println!(
        "above a bare tokio TcpStream: closefirst {:.0} B, hyper_util_legacy {:.0} B",
        closefirst - raw,
        legacy - raw
    );
    println!(
        "ratio closefirst / hyper_util_legacy: {:.2} (total), {:.2} (above the bare stream)",
        closefirst / legacy,
        (closefirst - raw) / (legacy - raw)
    );
    println!();
    println!("Client-side allocations per connection by size (bytes; a size of 2^k is all");
    println!("allocations between 2^k and 2^(k+1) bytes, such as a list of every connection):");
    for r in readings.iter().filter(|r| !matches!(r.kind, Kind::RawTcp)) {
        let rows: Vec<String> = r
            .by_size
            .iter()
            .map(|(size, count, bytes)| {
                if count.is_nan() {
                    format!("{size}: {bytes:.0} B")
                } else {
                    format!("{size} x{count:.2}")
                }
            })
            .collect();
        println!("  {:<18} {}", r.kind.name(), rows.join(", "));
    }
    println!();
    println!("What is counted: heap bytes requested on the client's threads and still live");
    println!("once every connection is idle (allocations minus frees; a free is charged to");
    println!("the side that allocated). This includes the pool's entries, hyper's connection");
    println!("task and its read/write buffers, tokio's socket registration and task, and");
    println!("one-time per-client state (pool tables, reaper task) spread over the N");
    println!("connections. Not counted: allocator rounding and bookkeeping, kernel socket");
    println!("buffers. The server column is the in-process hyper server's share (its own");
    println!("runtime, marked threads), shown for reference only; it is not part of a client.");
    println!("Settings for this measurement only: closefirst idle_timeout 60 s and");
    println!("max_idle_per_origin {N}; hyper-util pool_idle_timeout 60 s with a tokio timer.");
}
