//! A real nginx on 127.0.0.1, started by the bench with a config of its own in a
//! temporary directory, and stopped when dropped.
//!
//! The binary is `nginx` from `PATH`, or the path in the `NGINX` environment variable.
//! The config: one worker process, `keepalive_timeout` from [`Config`] (by default
//! 75 s, nginx's usual value, far above closefirst's idle timeout, so no connection is
//! closed by the server during a run; never with a `Keep-Alive` header),
//! `keepalive_requests` large enough that no connection is retired by count, an access
//! log only where [`Config`] asks for one, and `return 200 "ok\n";` for every request.
//! Plain HTTP, or TLS 1.3 only with a certificate the bench gives ([`Config::tls`]).

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The body of every response: `ok\n`.
pub(crate) const BODY_LEN: usize = 3;

/// How long nginx gets to accept connections after it is started, and to exit after it
/// is told to stop.
const START_TIMEOUT: Duration = Duration::from_secs(10);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Ports to try: the free port found may be taken by someone else before nginx binds it.
const START_ATTEMPTS: usize = 5;

/// What a bench chooses of nginx's config.
pub(crate) struct Config {
    /// `keepalive_timeout`: how long nginx keeps an idle connection open, at
    /// millisecond resolution. Given alone, so nginx sends no `Keep-Alive` header.
    pub(crate) keepalive_timeout: Duration,
    /// Where nginx appends one line per request, `$connection $connection_requests
    /// $request_uri` (the connection's serial number, the request's number on it, the
    /// path), unbuffered; `None` for no access log. The file is the caller's to remove.
    /// With TLS also `$ssl_session_reused` (`r` when the connection's handshake resumed
    /// a session, `.` otherwise) at the end of the line.
    pub(crate) access_log: Option<PathBuf>,
    /// Serve HTTPS, TLS 1.3 only, with this certificate and key (written to nginx's
    /// temporary directory), nginx's default session tickets on; `None` for plain HTTP.
    pub(crate) tls: Option<TlsPem>,
}

/// A certificate chain and its private key, in PEM.
// Only `tls_resumption.rs` serves TLS; the other benches include this file too.
#[allow(dead_code)]
pub(crate) struct TlsPem {
    pub(crate) cert: String,
    pub(crate) key: String,
}

impl Default for Config {
    /// 75 s keep-alive, no access log: what the throughput benches run with.
    fn default() -> Self {
        Self {
            keepalive_timeout: Duration::from_secs(75),
            access_log: None,
            tls: None,
        }
    }
}

/// A running nginx; dropping it stops nginx and removes its directory.
pub(crate) struct Nginx {
    child: Child,
    binary: PathBuf,
    dir: PathBuf,
    addr: SocketAddr,
    version: String,
}

impl Nginx {
    /// Starts nginx with `config`, or returns `Ok(None)` when there is no nginx binary
    /// to run.
    pub(crate) fn start(config: &Config) -> io::Result<Option<Self>> {
        let binary = PathBuf::from(std::env::var_os("NGINX").unwrap_or_else(|| "nginx".into()));
        let version = match Command::new(&binary).arg("-v").output() {
            Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let dir =
            std::env::temp_dir().join(format!("closefirst-bench-nginx-{}", std::process::id()));
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            match Self::try_start(&binary, &dir, &version, config) {
                Ok(nginx) => return Ok(Some(nginx)),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.expect("START_ATTEMPTS is not zero"))
    }

    fn try_start(binary: &Path, dir: &Path, version: &str, config: &Config) -> io::Result<Self> {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir.join("logs"))?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        if let Some(tls) = &config.tls {
            std::fs::write(dir.join("cert.pem"), &tls.cert)?;
            std::fs::write(dir.join("key.pem"), &tls.key)?;
        }
        let conf = dir.join("nginx.conf");
        std::fs::write(&conf, nginx_conf(dir, addr, config))?;
        let child = Command::new(binary)
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&conf)
            // Before it reads the config nginx opens its compiled-in error log; point that
            // at the temporary directory too (nginx 1.19.5 and later).
            .arg("-e")
            .arg(dir.join("logs/error.log"))
            // nginx reads `NGINX` itself (sockets inherited on a binary upgrade) and
            // complains about the path the bench takes it from.
            .env_remove("NGINX")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()?;
        let mut nginx = Self {
            child,
            binary: binary.to_owned(),
            dir: dir.to_owned(),
            addr,
            version: version.to_owned(),
        };
        let started = Instant::now();
        loop {
            if let Some(status) = nginx.child.try_wait()? {
                return Err(io::Error::other(format!(
                    "nginx exited at start ({status}); see its log above"
                )));
            }
            if TcpStream::connect(addr).is_ok() {
                return Ok(nginx);
            }
            if started.elapsed() > START_TIMEOUT {
                return Err(io::Error::other("nginx did not accept connections in time"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Where nginx listens.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What `nginx -v` printed, e.g. `nginx version: nginx/1.22.1`.
    pub(crate) fn version(&self) -> &str {
        &self.version
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // `-s stop` makes the master stop its worker before it exits; killing the master
        // alone would leave the worker serving the port.
        let _ = Command::new(&self.binary)
            .arg("-p")
            .arg(&self.dir)
            .arg("-c")
            .arg(self.dir.join("nginx.conf"))
            .arg("-e")
            .arg(self.dir.join("logs/error.log"))
            .args(["-s", "stop"])
            .env_remove("NGINX")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let asked = Instant::now();
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if asked.elapsed() > STOP_TIMEOUT => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn nginx_conf(dir: &Path, addr: SocketAddr, config: &Config) -> String {
    let keepalive_ms = config.keepalive_timeout.as_millis();
    let reused = if config.tls.is_some() {
        " $ssl_session_reused"
    } else {
        ""
    };
    let access_log = match &config.access_log {
        Some(path) => format!(
            "log_format connections '$connection $connection_requests $request_uri{reused}';\n    \
             access_log {} connections;",
            path.display()
        ),
        None => "access_log off;".to_owned(),
    };
    let dir = dir.display();
    let (listen, tls) = match config.tls {
        Some(_) => (
            format!("{addr} ssl"),
            format!(
                "ssl_certificate {dir}/cert.pem;\n        \
                 ssl_certificate_key {dir}/key.pem;\n        \
                 ssl_protocols TLSv1.3;"
            ),
        ),
        None => (addr.to_string(), String::new()),
    };
    format!(
        r#"daemon off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/logs/error.log warn;
events {{
    worker_connections 1024;
}}
http {{
    {access_log}
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_timeout {keepalive_ms}ms;
    keepalive_requests 1000000000;
    server {{
        listen {listen};
        {tls}
        location / {{
            return 200 "ok\n";
        }}
    }}
}}
"#
    )
}
