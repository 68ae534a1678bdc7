//! A fixed number of requests from one client, for a profiler: run it under
//! `valgrind --tool=callgrind` (instructions, repeatable whatever the machine's load),
//! `strace -c -f` (system calls) or `perf`, once per client, and compare the two.
//!
//! ```text
//! cargo bench --bench profile --no-run   # then run the binary it names:
//! valgrind --tool=callgrind target/release/deps/profile-* closefirst 20000 1
//! valgrind --tool=callgrind target/release/deps/profile-* hyper_util_legacy 20000 1
//! ```
//!
//! Arguments: the client (a name from `support::subject::SUBJECTS`), the number of
//! requests after the warm-up, and how many are in flight at once (1, or a batch of that
//! many spawned tasks, joined). The requests are made from a task spawned on the
//! 2-worker runtime, the shape the alternating bench's main rows have. The server is
//! nginx when one is installed (`NGINX` or `PATH`), so that the profile holds the client
//! alone; otherwise the in-process server, whose share is the same for every client.
//! It prints the requests made and the connections the client opened.

// This harness uses a part of the shared support code.
#[allow(dead_code)]
mod support;

use std::process::ExitCode;
use std::sync::Arc;

use support::nginx::{Config, Nginx};
use support::subject::{runtime, Subject, Target, SUBJECTS};

/// Requests made before the measured ones, so that connections are open and caches warm.
const WARM_UP: usize = 200;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let (Some(name), Some(count), Some(in_flight)) = (
        args.first(),
        args.get(1).and_then(|n| n.parse::<usize>().ok()),
        args.get(2).and_then(|n| n.parse::<usize>().ok()),
    ) else {
        eprintln!("usage: profile <client> <requests> <in flight>; clients: {SUBJECTS:?}");
        return ExitCode::from(2);
    };
    if !SUBJECTS.contains(&name.as_str()) || in_flight == 0 {
        eprintln!("profile: unknown client {name:?} or zero in flight; clients: {SUBJECTS:?}");
        return ExitCode::from(2);
    }
    let rt = runtime();
    let nginx = match Nginx::start(&Config::default()) {
        Ok(nginx) => nginx,
        Err(error) => {
            eprintln!("profile: nginx did not start: {error}");
            return ExitCode::FAILURE;
        }
    };
    let target = match &nginx {
        Some(nginx) => {
            println!("server: nginx {} on {}", nginx.version(), nginx.addr());
            Target::new(nginx.addr(), support::nginx::BODY_LEN, None)
        }
        None => {
            println!("server: in-process (no nginx binary)");
            Target::in_process(&rt)
        }
    };
    let name = name.clone();
    let made = rt.block_on(async move {
        tokio::spawn(async move {
            let subject = Subject::new(&name, &target, in_flight).await;
            let batch = |subject: Subject, target: Arc<Target>| async move {
                if in_flight == 1 {
                    subject.get(&target, 0).await;
                } else {
                    subject.get_concurrently(&target, in_flight).await;
                }
            };
            for _ in 0..WARM_UP.div_ceil(in_flight) {
                batch(subject.clone(), Arc::clone(&target)).await;
            }
            let mut made = 0;
            while made < count {
                batch(subject.clone(), Arc::clone(&target)).await;
                made += in_flight;
            }
            if let Subject::Closefirst(client) = &subject {
                println!(
                    "closefirst opened {} connections",
                    client.stats().connections_opened
                );
            }
            made
        })
        .await
        .expect("the requesting task does not panic")
    });
    println!("{made} requests after {WARM_UP} to warm up");
    drop(nginx);
    ExitCode::SUCCESS
}
