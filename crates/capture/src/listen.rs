//! Where a capture server listens: `inet:HOST:PORT` (also Sendmail's
//! `inet:PORT@HOST`), `inet6:[ADDR]:PORT`, or `unix:PATH` / `local:PATH`.
//!
//! A Unix socket is created with a configured mode and owner so the MTA
//! (Postfix's smtpd runs as `postfix`, usually chrooted under
//! `/var/spool/postfix`) can connect. A stale socket left by a crash is
//! removed; a live one (something answers on it) is an error, so two
//! daemons never steal each other's socket.

use std::fmt;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::PathBuf;

/// A parsed `listen` setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenSpec {
    /// TCP: host (name or address, IPv6 without brackets) and port.
    Inet {
        /// Host name or address.
        host: String,
        /// TCP port.
        port: u16,
    },
    /// A Unix-domain socket path.
    Unix(PathBuf),
}

impl ListenSpec {
    /// Parses the forms listed in the module documentation.
    pub fn parse(spec: &str) -> Result<ListenSpec, String> {
        let bad = |why: &str| format!("{spec:?}: {why}; expected inet:HOST:PORT or unix:PATH");
        let (kind, rest) = spec.split_once(':').ok_or_else(|| bad("no kind"))?;
        match kind {
            "unix" | "local" => {
                if !rest.starts_with('/') {
                    return Err(bad("the socket path must be absolute"));
                }
                Ok(ListenSpec::Unix(PathBuf::from(rest)))
            }
            "inet" | "inet6" => {
                let (host, port) = if let Some((port, host)) = rest.split_once('@') {
                    (host, port)
                } else if let Some(v6) = rest.strip_prefix('[') {
                    v6.split_once("]:").ok_or_else(|| bad("unclosed ["))?
                } else {
                    rest.rsplit_once(':').ok_or_else(|| bad("no port"))?
                };
                let port = port.parse().map_err(|_| bad("bad port"))?;
                if host.is_empty() {
                    return Err(bad("no host"));
                }
                Ok(ListenSpec::Inet {
                    host: host.to_string(),
                    port,
                })
            }
            _ => Err(bad("unknown kind")),
        }
    }
}

impl fmt::Display for ListenSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenSpec::Inet { host, port } if host.contains(':') => {
                write!(f, "inet:[{host}]:{port}")
            }
            ListenSpec::Inet { host, port } => write!(f, "inet:{host}:{port}"),
            ListenSpec::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// Ownership and permissions for a Unix socket.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SocketAccess {
    /// File mode, e.g. `0o660`.
    pub mode: Option<u32>,
    /// Owner user id.
    pub uid: Option<u32>,
    /// Owner group id.
    pub gid: Option<u32>,
}

/// A bound listener.
#[derive(Debug)]
pub enum Listener {
    /// TCP.
    Tcp(tokio::net::TcpListener),
    /// Unix-domain socket, removed again when dropped.
    Unix(tokio::net::UnixListener, PathBuf),
}

impl Listener {
    /// Where it listens, as the MTA should be told (`inet:127.0.0.1:8894`).
    pub fn describe(&self) -> String {
        match self {
            Listener::Tcp(l) => match l.local_addr() {
                Ok(a) if a.is_ipv6() => format!("inet:[{}]:{}", a.ip(), a.port()),
                Ok(a) => format!("inet:{}:{}", a.ip(), a.port()),
                Err(_) => "inet:?".into(),
            },
            Listener::Unix(_, p) => format!("unix:{}", p.display()),
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(_, path) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Binds a listener.
pub async fn bind(spec: &ListenSpec, access: &SocketAccess) -> io::Result<Listener> {
    match spec {
        ListenSpec::Inet { host, port } => Ok(Listener::Tcp(
            tokio::net::TcpListener::bind((host.as_str(), *port)).await?,
        )),
        ListenSpec::Unix(path) => {
            if let Ok(meta) = std::fs::symlink_metadata(path) {
                if !meta.file_type().is_socket() {
                    return Err(io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        format!("{} exists and is not a socket", path.display()),
                    ));
                }
                if tokio::net::UnixStream::connect(path).await.is_ok() {
                    return Err(io::Error::new(
                        io::ErrorKind::AddrInUse,
                        format!("{} is in use by a running process", path.display()),
                    ));
                }
                tracing::warn!(socket = %path.display(), "removing stale socket");
                std::fs::remove_file(path)?;
            }
            let listener = tokio::net::UnixListener::bind(path)?;
            let bound = Listener::Unix(listener, path.clone());
            if let Some(mode) = access.mode {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
            }
            if access.uid.is_some() || access.gid.is_some() {
                std::os::unix::fs::chown(path, access.uid, access.gid)?;
            }
            Ok(bound)
        }
    }
}

/// A connected stream of either kind.
pub enum Stream {
    /// TCP.
    Tcp(tokio::net::TcpStream),
    /// Unix-domain.
    Unix(tokio::net::UnixStream),
}

async fn accept(listener: &Listener) -> io::Result<Stream> {
    match listener {
        Listener::Tcp(l) => l.accept().await.map(|(s, _)| Stream::Tcp(s)),
        Listener::Unix(l, _) => l.accept().await.map(|(s, _)| Stream::Unix(s)),
    }
}

/// The accept loop every capture server shares: a permit is taken
/// *before* `accept()` (at most `max_connections` sessions; further
/// clients wait in the listen backlog), each connection is handed to
/// `handler` on its own task, and when `shutdown` completes the listener
/// is closed at once, the `draining` flag given to every session is set,
/// and the sessions get `drain_timeout` to finish.
pub async fn serve<F, Fut>(
    listener: Listener,
    max_connections: usize,
    drain_timeout: std::time::Duration,
    shutdown: impl std::future::Future<Output = ()>,
    handler: F,
) -> io::Result<()>
where
    F: Fn(Stream, std::sync::Arc<std::sync::atomic::AtomicBool>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let max = max_connections.max(1);
    let permits = Arc::new(tokio::sync::Semaphore::new(max));
    let draining = Arc::new(AtomicBool::new(false));
    let what = listener.describe();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p.map_err(|_| io::Error::other("semaphore closed"))?,
            () = &mut shutdown => break,
        };
        let accepted = tokio::select! {
            a = accept(&listener) => a,
            () = &mut shutdown => break,
        };
        let stream = match accepted {
            Ok(s) => s,
            Err(e) => {
                // EMFILE and friends: back off rather than spin.
                tracing::error!(listener = %what, "accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let session = handler(stream, draining.clone());
        tokio::spawn(async move {
            let _permit = permit;
            session.await;
        });
    }
    drop(listener);
    draining.store(true, Ordering::Release);
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    match tokio::time::timeout(drain_timeout, permits.acquire_many(all)).await {
        Ok(_) => tracing::info!(listener = %what, "all sessions finished"),
        Err(_) => tracing::warn!(listener = %what,
            "sessions still open after {drain_timeout:?}; dropping them (the MTA will retry)"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_forms() {
        let inet = |h: &str, p| ListenSpec::Inet {
            host: h.into(),
            port: p,
        };
        assert_eq!(
            ListenSpec::parse("inet:127.0.0.1:8894").unwrap(),
            inet("127.0.0.1", 8894)
        );
        assert_eq!(
            ListenSpec::parse("inet:8894@127.0.0.1").unwrap(),
            inet("127.0.0.1", 8894)
        );
        assert_eq!(
            ListenSpec::parse("inet6:[::1]:8894").unwrap(),
            inet("::1", 8894)
        );
        assert_eq!(
            ListenSpec::parse("unix:/run/mailkeep/milter.sock").unwrap(),
            ListenSpec::Unix("/run/mailkeep/milter.sock".into())
        );
        assert!(ListenSpec::parse("unix:relative.sock").is_err());
        assert!(ListenSpec::parse("inet:host").is_err());
        assert!(ListenSpec::parse("tcp:1.2.3.4:5").is_err());
        assert_eq!(inet("::1", 1).to_string(), "inet:[::1]:1");
    }

    #[tokio::test]
    async fn unix_socket_stale_live_and_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.sock");
        let spec = ListenSpec::Unix(path.clone());
        let access = SocketAccess {
            mode: Some(0o660),
            ..SocketAccess::default()
        };
        let first = bind(&spec, &access).await.unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o660
        );
        // A live socket is not taken over.
        let err = bind(&spec, &access).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        drop(first);
        assert!(!path.exists(), "removed on drop");
        // A stale one (left by a crash: the file, nobody listening) is replaced.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let again = bind(&spec, &access).await.unwrap();
        assert_eq!(again.describe(), format!("unix:{}", path.display()));
        drop(again);
        assert!(!path.exists(), "removed on drop");
        std::fs::write(&path, b"x").unwrap();
        assert!(
            bind(&spec, &access).await.is_err(),
            "a regular file is never removed"
        );
    }
}
