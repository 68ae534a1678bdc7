//! TCP socket options as this platform has them: [`SocketOptions`] (defined with the
//! other facts the pool reports, in `info`), read back from
//! the kernel when a [`TcpIo`](super::TcpIo) is wrapped, and the platform-gated half
//! of setting them, which the built-in connector ([`connect`](crate::connect)) calls.
//!
//! Reading and setting an option must agree on where it exists, so each platform list
//! is written once, here, and both directions are compiled from it.

use std::time::Duration;

use socket2::SockRef;

use crate::info::SocketOptions;

/// [`SocketOptions`] as every connection keeps them: 20 bytes rather than 64 (each
/// `Option<Duration>` is 16). The kernel reports these options in whole seconds
/// (`TCP_KEEPIDLE`, `TCP_KEEPINTVL`) or milliseconds (`TCP_USER_TIMEOUT`, an unsigned
/// 32-bit count), so a millisecond count in 32 bits holds every value read back
/// exactly; anything longer (not a value a kernel reports) would read as `u32::MAX`
/// milliseconds, about 49 days.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PackedOptions {
    idle_ms: u32,
    interval_ms: u32,
    retries: u32,
    user_timeout_ms: u32,
    /// Which of the four above are present ([`IDLE`] ...), and the two flags: absent,
    /// false or true, two bits each.
    present: u8,
    nodelay: u8,
    keepalive: u8,
}

const IDLE: u8 = 1;
const INTERVAL: u8 = 2;
const RETRIES: u8 = 4;
const USER_TIMEOUT: u8 = 8;

fn pack_flag(flag: Option<bool>) -> u8 {
    match flag {
        None => 0,
        Some(false) => 1,
        Some(true) => 2,
    }
}

fn unpack_flag(flag: u8) -> Option<bool> {
    match flag {
        0 => None,
        n => Some(n == 2),
    }
}

impl PackedOptions {
    pub(crate) fn pack(options: &SocketOptions) -> PackedOptions {
        let mut present = 0;
        let mut ms = |value: Option<Duration>, bit: u8| match value {
            Some(value) => {
                present |= bit;
                u32::try_from(value.as_millis()).unwrap_or(u32::MAX)
            }
            None => 0,
        };
        let idle_ms = ms(options.keepalive_idle, IDLE);
        let interval_ms = ms(options.keepalive_interval, INTERVAL);
        let user_timeout_ms = ms(options.user_timeout, USER_TIMEOUT);
        if options.keepalive_retries.is_some() {
            present |= RETRIES;
        }
        PackedOptions {
            idle_ms,
            interval_ms,
            retries: options.keepalive_retries.unwrap_or(0),
            user_timeout_ms,
            present,
            nodelay: pack_flag(options.nodelay),
            keepalive: pack_flag(options.keepalive),
        }
    }

    pub(crate) fn unpack(&self) -> SocketOptions {
        let ms = |value: u32, bit: u8| {
            (self.present & bit != 0).then(|| Duration::from_millis(u64::from(value)))
        };
        SocketOptions {
            nodelay: unpack_flag(self.nodelay),
            keepalive: unpack_flag(self.keepalive),
            keepalive_idle: ms(self.idle_ms, IDLE),
            keepalive_interval: ms(self.interval_ms, INTERVAL),
            keepalive_retries: (self.present & RETRIES != 0).then_some(self.retries),
            user_timeout: ms(self.user_timeout_ms, USER_TIMEOUT),
        }
    }
}

impl SocketOptions {
    pub(crate) fn read_from(sock: &SockRef<'_>) -> SocketOptions {
        let mut options = SocketOptions {
            nodelay: sock.tcp_nodelay().ok(),
            keepalive: sock.keepalive().ok(),
            ..SocketOptions::default()
        };
        read_keepalive_params(sock, &mut options);
        options.user_timeout = read_user_timeout(sock);
        options
    }
}

/// `#[cfg]` with an `else`: the items of the first block where the predicate holds,
/// those of the second everywhere else. The predicate (a platform list) is written
/// once, so the two sides cannot drift apart.
macro_rules! cfg_else {
    (#[cfg($predicate:meta)] { $($yes:item)* } else { $($no:item)* }) => {
        $( #[cfg($predicate)] $yes )*
        $( #[cfg(not($predicate))] $no )*
    };
}

cfg_else! {
    // Where socket2 both sets and reads `TCP_KEEPINTVL` and `TCP_KEEPCNT`.
    #[cfg(any(
        target_os = "linux",
        target_os = "android",
        target_os = "macos",
        target_os = "ios",
        target_os = "freebsd",
        target_os = "netbsd",
        target_os = "fuchsia",
        target_os = "illumos",
    ))]
    {
        /// Adds the probe interval and count to `keepalive` (its idle time is set on
        /// every platform by the caller).
        pub(crate) fn keepalive_params(
            keepalive: socket2::TcpKeepalive,
            interval: Duration,
            retries: u32,
        ) -> socket2::TcpKeepalive {
            keepalive.with_interval(interval).with_retries(retries)
        }

        fn read_keepalive_params(sock: &SockRef<'_>, options: &mut SocketOptions) {
            options.keepalive_idle = sock.tcp_keepalive_time().ok();
            options.keepalive_interval = sock.tcp_keepalive_interval().ok();
            options.keepalive_retries = sock.tcp_keepalive_retries().ok();
        }
    } else {
        /// Adds what this platform can set of the probe interval and count: the
        /// interval on Windows, nothing elsewhere.
        pub(crate) fn keepalive_params(
            keepalive: socket2::TcpKeepalive,
            interval: Duration,
            retries: u32,
        ) -> socket2::TcpKeepalive {
            let _ = (interval, retries);
            #[cfg(windows)]
            let keepalive = keepalive.with_interval(interval);
            keepalive
        }

        fn read_keepalive_params(_: &SockRef<'_>, _: &mut SocketOptions) {}
    }
}

cfg_else! {
    // Where the kernel has `TCP_USER_TIMEOUT`.
    #[cfg(any(target_os = "linux", target_os = "android", target_os = "fuchsia"))]
    {
        /// Sets `TCP_USER_TIMEOUT`.
        pub(crate) fn set_user_timeout(
            sock: &SockRef<'_>,
            timeout: Duration,
        ) -> std::io::Result<()> {
            sock.set_tcp_user_timeout(Some(timeout))
        }

        fn read_user_timeout(sock: &SockRef<'_>) -> Option<Duration> {
            // The kernel reports "not set" as 0, which socket2 turns into `None`.
            sock.tcp_user_timeout().ok().flatten()
        }
    } else {
        /// A no-op: the platform has no `TCP_USER_TIMEOUT`, and leaving it unset is
        /// documented as ignored, not a failure worth a warning.
        pub(crate) fn set_user_timeout(_: &SockRef<'_>, _: Duration) -> std::io::Result<()> {
            Ok(())
        }

        fn read_user_timeout(_: &SockRef<'_>) -> Option<Duration> {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every connection keeps its options packed; they read back as they were.
    #[test]
    fn packed_options_read_back_as_they_were() {
        let all_none = SocketOptions::default();
        let full = SocketOptions {
            nodelay: Some(true),
            keepalive: Some(false),
            keepalive_idle: Some(Duration::from_secs(32_767)),
            keepalive_interval: Some(Duration::from_secs(1)),
            keepalive_retries: Some(0),
            user_timeout: Some(Duration::from_millis(4_294_967_295)),
        };
        let some = SocketOptions {
            keepalive: Some(true),
            keepalive_interval: Some(Duration::ZERO),
            user_timeout: Some(Duration::from_millis(4_500)),
            ..SocketOptions::default()
        };
        for options in [all_none, full, some] {
            assert_eq!(PackedOptions::pack(&options).unpack(), options);
        }
        assert!(std::mem::size_of::<PackedOptions>() <= 20);
    }

    /// What the setters apply is what the read-back reports, on every platform: both
    /// come from the same platform lists.
    #[test]
    fn options_set_here_are_the_options_read_back() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let sock = SockRef::from(&stream);
        let keepalive = socket2::TcpKeepalive::new().with_time(Duration::from_secs(41));
        let keepalive = keepalive_params(keepalive, Duration::from_secs(7), 5);
        sock.set_tcp_keepalive(&keepalive).unwrap();
        set_user_timeout(&sock, Duration::from_millis(4_500)).unwrap();

        let options = SocketOptions::read_from(&sock);
        assert_eq!(options.keepalive, Some(true));
        if cfg!(any(target_os = "linux", target_os = "macos")) {
            assert_eq!(options.keepalive_idle, Some(Duration::from_secs(41)));
            assert_eq!(options.keepalive_interval, Some(Duration::from_secs(7)));
            assert_eq!(options.keepalive_retries, Some(5));
        }
        if cfg!(target_os = "linux") {
            assert_eq!(options.user_timeout, Some(Duration::from_millis(4_500)));
        } else if cfg!(target_os = "macos") {
            assert_eq!(options.user_timeout, None);
        }
    }
}
