//! The builder's tests: defaults, and every refused setting with its message.

use super::*;
use crate::config::DEFAULT_KEEP_ALIVE_MARGIN;
use bytes::Bytes;
use http_body_util::Empty;

fn refused(builder: Builder) -> String {
    let err = builder.build::<Empty<Bytes>>().unwrap_err();
    assert!(err.is_config());
    err.to_string()
}

#[test]
fn bad_values_are_refused_with_the_option_and_unit() {
    let b = Builder::new;
    assert_eq!(
        refused(b().idle_timeout(Duration::ZERO)),
        "invalid configuration: idle_timeout must be greater than zero (got 0 ms)"
    );
    assert!(refused(b().keep_alive_margin(Duration::from_secs(4)))
        .contains("keep_alive_margin (4000 ms)"));
    assert!(refused(b().max_connections_per_origin(0))
        .contains("max_connections_per_origin must be at least 1"));
    assert!(refused(b().max_requests_per_connection(0)).contains("max_requests_per_connection"));
    assert_eq!(
        refused(b().max_idle_total(0)),
        "invalid configuration: max_idle_total must be at least 1 (got 0 connections); \
         use max_idle_per_origin(0) to turn reuse off"
    );
    assert_eq!(
        refused(b().max_connections_total(0)),
        "invalid configuration: max_connections_total must be at least 1 (got 0 connections)"
    );
    b().max_idle_total(1)
        .max_connections_total(1)
        .build::<Empty<Bytes>>()
        .expect("1 is a valid cap");
    assert!(refused(b().max_lifetime(Duration::ZERO))
        .contains("max_lifetime must be greater than zero"));
    assert!(refused(b().checkout_timeout(Duration::ZERO)).contains("checkout_timeout"));
    assert!(refused(b().connect_timeout(Duration::ZERO)).contains("connect_timeout"));
    assert!(
        refused(b().tcp_keepalive(TcpKeepalive::new().interval(Duration::ZERO)))
            .contains("tcp_keepalive interval must be a whole number of seconds")
    );
    assert!(refused(b().tcp_keepalive(TcpKeepalive::new().retries(0)))
        .contains("tcp_keepalive retries"));
    assert!(
        refused(b().tcp_keepalive(TcpKeepalive::new().idle(Duration::from_millis(1500))))
            .contains("(got 1500 ms)")
    );
    assert!(refused(b().tcp_user_timeout(Duration::ZERO)).contains("tcp_user_timeout"));
}

#[test]
fn a_short_idle_timeout_alone_builds_with_a_quarter_of_it_as_margin() {
    let margin = |idle: Duration| {
        Builder::new()
            .idle_timeout(idle)
            .validate()
            .unwrap_or_else(|e| panic!("idle_timeout {idle:?} alone must build: {e}"))
            .keep_alive_margin
    };
    let ms = Duration::from_millis;
    assert_eq!(margin(ms(500)), ms(125));
    assert_eq!(margin(ms(1000)), ms(250));
    assert_eq!(margin(ms(2000)), ms(500));
    assert_eq!(margin(ms(4000)), ms(1000));
    assert_eq!(margin(Duration::from_secs(60)), DEFAULT_KEEP_ALIVE_MARGIN);
    assert_eq!(margin(Duration::MAX), DEFAULT_KEEP_ALIVE_MARGIN);
    assert_eq!(margin(Duration::from_nanos(1)), Duration::ZERO);
    assert_eq!(
        Builder::new().validate().unwrap().keep_alive_margin,
        ms(1000)
    );
}

#[test]
fn an_explicit_margin_is_kept_or_refused_never_adapted() {
    let ms = Duration::from_millis;
    let config = Builder::new()
        .idle_timeout(ms(500))
        .keep_alive_margin(ms(499))
        .validate()
        .unwrap();
    assert_eq!(config.keep_alive_margin, ms(499));
    assert_eq!(
        refused(Builder::new().idle_timeout(ms(500)).keep_alive_margin(ms(500))),
        "invalid configuration: keep_alive_margin (500 ms) must be smaller than idle_timeout (500 ms)"
    );
    // Set explicitly, even the default value is checked.
    assert_eq!(
        refused(
            Builder::new()
                .keep_alive_margin(DEFAULT_KEEP_ALIVE_MARGIN)
                .idle_timeout(ms(500))
        ),
        "invalid configuration: keep_alive_margin (1000 ms) must be smaller than idle_timeout (500 ms)"
    );
    assert!(refused(Builder::new().keep_alive_margin(Duration::MAX))
        .contains("keep_alive_margin (18446744073709551615999 ms) must be smaller than idle_timeout (4000 ms)"));
}

/// Every duration option at `Duration::MAX`: accepted where the docs say it is
/// (and then capped where it is used), refused naming the option and the largest
/// value where the kernel would refuse it.
#[test]
fn duration_max_is_accepted_or_refused_as_documented() {
    let b = Builder::new;
    let config = b()
        .idle_timeout(Duration::MAX)
        .max_lifetime(Duration::MAX)
        .checkout_timeout(Duration::MAX)
        .connect_timeout(Duration::MAX)
        .retry(Policy::idempotent().backoff(Duration::MAX))
        .validate()
        .expect("huge timeouts are accepted");
    assert_eq!(config.idle_timeout, Duration::MAX);
    assert_eq!(config.keep_alive_margin, DEFAULT_KEEP_ALIVE_MARGIN);
    b().idle_timeout(Duration::MAX)
        .keep_alive_margin(Duration::MAX - Duration::from_nanos(1))
        .build::<Empty<Bytes>>()
        .expect("a margin just below a huge idle timeout is accepted");
    assert_eq!(
        refused(b().tcp_keepalive(TcpKeepalive::new().idle(Duration::MAX))),
        "invalid configuration: tcp_keepalive idle must be at most 32767 s \
         (got 18446744073709551615999.999999 ms)"
    );
    assert!(
        refused(b().tcp_keepalive(TcpKeepalive::new().interval(Duration::MAX)))
            .contains("tcp_keepalive interval must be at most 32767 s")
    );
    assert_eq!(
        refused(b().tcp_user_timeout(Duration::MAX)),
        "invalid configuration: tcp_user_timeout must be at most 2147483647 ms \
         (got 18446744073709551615999.999999 ms); use None to turn it off"
    );
}

#[test]
fn defaults_and_edge_values_build() {
    let config = Builder::new().validate().unwrap();
    assert_eq!(config.idle_timeout, Duration::from_secs(4));
    assert_eq!(config.keep_alive_margin, Duration::from_secs(1));
    assert_eq!(config.max_idle_per_origin, usize::MAX);
    assert_eq!(config.max_connections_per_origin, None);
    assert_eq!(config.checkout_timeout, Some(Duration::from_secs(30)));
    assert_eq!(config.connect_timeout, Some(Duration::from_secs(10)));
    assert!(config.check_before_reuse);
    Builder::new()
        .keep_alive_margin(Duration::ZERO)
        .max_idle_per_origin(0)
        .checkout_timeout(None)
        .connect_timeout(None)
        .tcp_keepalive(None)
        .build::<Empty<Bytes>>()
        .unwrap();
}
