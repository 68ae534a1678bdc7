//! The proxy example's command line: the demo (the default) and `serve`.

use std::error::Error as StdError;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use closefirst::lab::{Origin, OriginConfig, Relay};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;

use super::{Proxy, Settings, ERROR_HEADER};

const USAGE: &str = "usage: proxy [--requests N]\n       \
proxy serve [--upstream URI] [--listen ADDR] [--timeout DURATION] [--keep-host]";

type Failed = Box<dyn StdError + Send + Sync>;

pub(super) async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.split_first() {
        Some((command, rest)) if command == "serve" => serve(rest).await,
        _ => demo(&args).await,
    };
    result.unwrap_or_else(|message| {
        eprintln!("{message}\n{USAGE}");
        ExitCode::from(2)
    })
}

/// Runs the proxy until Ctrl-C.
async fn serve(args: &[String]) -> Result<ExitCode, Failed> {
    let mut listen: SocketAddr = "127.0.0.1:8080".parse()?;
    let (mut upstream, mut timeout, mut keep_host) = (None, Duration::from_secs(30), false);
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--listen" => listen = value()?.parse()?,
            "--upstream" => upstream = Some(value()?.parse::<Uri>()?),
            // With its unit: `30s`, `1500ms`.
            "--timeout" => timeout = closefirst::keepalive::parse_duration(value()?)?,
            "--keep-host" => keep_host = true,
            other => return Err(format!("unknown argument `{other}`").into()),
        }
    }
    // Without an upstream, a lab origin on loopback stands in for one.
    let mut stand_in = None;
    let upstream = match upstream {
        Some(upstream) => upstream,
        None => {
            let origin = Origin::start(OriginConfig {
                idle_timeout: Duration::from_secs(5),
                ..OriginConfig::default()
            })
            .await?;
            let uri = origin.url("/").parse()?;
            stand_in = Some(origin);
            uri
        }
    };
    let client = closefirst::Client::builder().build()?;
    let settings = Settings {
        upstream: upstream.clone(),
        timeout,
        keep_host,
    };
    let proxy = Proxy::new(client, settings)?;
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    println!("proxying http://{addr} to {upstream}; Ctrl-C stops");
    tokio::select! {
        () = proxy.clone().serve(listener) => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    println!("\noutcomes: {:?}", proxy.outcomes());
    println!("{:#?}", proxy.client().stats());
    drop(stand_in);
    Ok(ExitCode::SUCCESS)
}

/// Requests through the proxy to a lab origin with idle gaps around its timer.
async fn demo(args: &[String]) -> Result<ExitCode, Failed> {
    let requests: usize = match args {
        [] => 9,
        [flag, n] if flag == "--requests" => n.parse().map_err(|_| format!("--requests {n}"))?,
        _ => return Err(format!("unknown arguments {args:?}").into()),
    };
    let idle = Duration::from_secs(2);
    let origin = Origin::start(OriginConfig {
        idle_timeout: idle,
        ..OriginConfig::default()
    })
    .await?;
    let relay = Relay::start(origin.addr(), Duration::from_millis(25)).await?;
    let (proxy, addr) = start(&format!("http://{}", relay.addr())).await?;
    println!(
        "client -> proxy http://{addr} -> relay (25 ms each way) -> origin (closes idle \
         connections after {idle:?}, no hint)\n"
    );

    // The downstream client: hyper-util's, pooled. The proxy's front closes no idle
    // connection, so this hop has no race.
    let downstream = hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http();
    // The first gap ends in the race window (a request written 1950–2000 ms after a
    // response head meets the origin's close) while the pool knows nothing of the
    // origin's timer; then under the timer, and over it.
    let gaps = [1_960, 500, 2_500].map(Duration::from_millis);
    let mut failed = 0;
    for i in 0..requests {
        let (method, body) = match i % 3 {
            2 => (Method::POST, Bytes::from(vec![b'x'; 16 * 1024])),
            _ => (Method::GET, Bytes::new()),
        };
        let req = Request::builder()
            .method(method)
            .uri(format!("http://{addr}/demo/{i}"))
            .header("x-request-id", format!("demo-{i}"))
            .body(Full::new(body))?;
        let resp = downstream.request(req).await?;
        let status = resp.status();
        resp.into_body().collect().await?;
        if status != StatusCode::OK {
            failed += 1;
        }
        if i + 1 < requests {
            tokio::time::sleep(gaps[i % gaps.len()]).await;
        }
    }

    // The same request to an upstream that is down.
    let closed = TcpListener::bind("127.0.0.1:0").await?.local_addr()?;
    let (_, down) = start(&format!("http://{closed}")).await?;
    let req = Request::get(format!("http://{down}/")).body(Full::default())?;
    let resp = downstream.request(req).await?;
    let flag = resp.headers().get(ERROR_HEADER).cloned();
    println!(
        "\nan upstream that is down: {}, {ERROR_HEADER}: {flag:?}",
        resp.status()
    );

    let stats = proxy.client().stats();
    println!("\nproxy outcomes: {:?}", proxy.outcomes());
    println!(
        "{requests} requests, {failed} failed; the origin executed {} ({} more than once) \
         on {} connections; the pool reused {} and resent {}",
        origin.handler_calls(),
        origin.duplicates(),
        origin.connections(),
        stats.reuses,
        stats.resends.not_written + stats.resends.written_no_response,
    );
    let lost_or_twice = failed > 0 || origin.duplicates() > 0;
    Ok(if lost_or_twice {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// A proxy to `upstream` with the default client, serving on a free loopback port.
async fn start(upstream: &str) -> Result<(Proxy, SocketAddr), Failed> {
    let settings = Settings {
        upstream: upstream.parse()?,
        timeout: Duration::from_secs(10),
        keep_host: false,
    };
    let proxy = Proxy::new(closefirst::Client::builder().build()?, settings)?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(proxy.clone().serve(listener));
    Ok((proxy, addr))
}
