//! The socket side: accept connections, read frames, authorize by peer
//! credentials, hand each request to [`Daemon::handle`] and write the reply.
//!
//! Limits: at most `max_connections` served at once (more wait in the
//! backlog), `request_timeout` for a client to send each request, frames
//! capped at [`MAX_FRAME`](mfa_shared::frame::MAX_FRAME) before allocating.
//! On shutdown no new request is read, and the ones in flight are answered.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use mfa_shared::frame::{FrameError, decode, nonblocking};
use mfa_shared::protocol::{ErrorKind, PROTOCOL_VERSION, RequestFrame, Response, ResponseFrame};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::audit::Severity;
use crate::service::{Daemon, Peer};

/// How long shutdown waits for requests in flight.
const DRAIN_LIMIT: Duration = Duration::from_secs(30);

/// Bind the socket: refuse if another daemon answers on it, replace a stale
/// file, and make it connectable by every local user (authorization is by
/// peer credentials, never by file mode).
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("another mfad is already listening on {}", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    if let Some(dir) = path.parent().filter(|d| !d.exists()) {
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
    Ok(listener)
}

/// Serve until `shutdown` turns true, then drain.
pub async fn serve(daemon: Arc<Daemon>, listener: UnixListener, mut shutdown: watch::Receiver<bool>) {
    let limit = Arc::new(Semaphore::new(daemon.config().max_connections));
    let mut connections = JoinSet::new();
    loop {
        let permit = tokio::select! {
            permit = limit.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = shutdown.changed() => break,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => break,
        };
        match accepted {
            Ok((stream, _)) => {
                let daemon = daemon.clone();
                let shutdown = shutdown.clone();
                connections.spawn(async move {
                    serve_connection(daemon, stream, shutdown).await;
                    drop(permit);
                });
            }
            Err(err) => daemon.audit.event(Severity::Warning, &format!("accept failed: {err}")),
        }
        // Reap finished connections so the set does not grow.
        while connections.try_join_next().is_some() {}
    }
    let drained = tokio::time::timeout(DRAIN_LIMIT, async { while connections.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        daemon.audit.event(Severity::Warning, "shutdown: gave up waiting for requests in flight");
    }
}

async fn serve_connection(daemon: Arc<Daemon>, mut stream: UnixStream, mut shutdown: watch::Receiver<bool>) {
    let Ok(cred) = stream.peer_cred() else {
        return;
    };
    let uid = cred.uid();
    let name = tokio::task::spawn_blocking(move || crate::nss::user_name(uid)).await.ok().flatten();
    let peer = Peer { uid, name };
    loop {
        if *shutdown.borrow() {
            return;
        }
        let timeout = daemon.config().request_timeout.0;
        let body = tokio::select! {
            body = tokio::time::timeout(timeout, nonblocking::read_body(&mut stream)) => body,
            _ = shutdown.changed() => return,
        };
        let body = match body {
            Ok(Ok(Some(body))) => body,
            // Idle too long, closed, or broken: drop the connection.
            Err(_) | Ok(Ok(None)) | Ok(Err(FrameError::Closed)) => return,
            Ok(Err(FrameError::TooBig(len))) => {
                daemon.audit.event(Severity::Notice, &format!("uid {uid}: oversized frame ({len} bytes) refused"));
                let reply = Response::error(ErrorKind::BadRequest, format!("frame of {len} bytes is too big"));
                let _ = send(&mut stream, reply).await;
                return;
            }
            Ok(Err(_)) => return,
        };
        let reply = match decode::<RequestFrame>(&body) {
            Err(err) => {
                daemon.audit.event(Severity::Notice, &format!("uid {uid}: malformed request refused"));
                Response::error(ErrorKind::BadRequest, format!("malformed request: {}", describe(&err)))
            }
            Ok(frame) if frame.version != PROTOCOL_VERSION => Response::error(
                ErrorKind::Version,
                format!("protocol version {} is not supported (mfad speaks {PROTOCOL_VERSION})", frame.version),
            ),
            Ok(frame) => {
                let daemon = daemon.clone();
                let peer = peer.clone();
                tokio::task::spawn_blocking(move || daemon.handle(&peer, frame.request))
                    .await
                    .unwrap_or_else(|_| Response::error(ErrorKind::Internal, "internal error in mfad"))
            }
        };
        if send(&mut stream, reply).await.is_err() {
            return;
        }
    }
}

/// A parse error without the offending input (which may hold a code).
fn describe(err: &FrameError) -> String {
    match err {
        FrameError::Malformed(e) => format!("{:?} error at line {} column {}", e.classify(), e.line(), e.column()),
        other => other.to_string(),
    }
}

async fn send(stream: &mut UnixStream, response: Response) -> Result<(), FrameError> {
    let frame = ResponseFrame::new(response);
    let write = nonblocking::write_frame(stream, &frame);
    tokio::time::timeout(Duration::from_secs(10), write).await.map_err(|_| FrameError::TimedOut)?
}

/// Tell systemd (Type=notify) that the socket is ready.
pub fn notify_ready() {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(socket) = std::os::unix::net::UnixDatagram::unbound() else {
        return;
    };
    let bytes = path.as_encoded_bytes();
    let _ = if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name)
            .and_then(|addr| socket.send_to_addr(b"READY=1\n", &addr))
    } else {
        socket.send_to(b"READY=1\n", Path::new(&path))
    };
}
