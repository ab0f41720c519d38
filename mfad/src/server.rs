//! The socket side: accept connections, read frames, authorize by peer
//! credentials, hand each request to [`Daemon::handle`] and write the reply.
//!
//! Limits: `max_connections` for root (the PAM stacks) and as many again for
//! everyone else, at most [`CONNECTIONS_PER_USER`] per non-root uid (beyond
//! that a client is told it is busy); [`IDLE_LIMIT`] to send a request, or
//! `request_timeout` while a person answers a prompt; frames capped at
//! [`MAX_FRAME`](mfa_shared::frame::MAX_FRAME) before allocating.
//! On shutdown no new request is read, and the ones in flight are answered.

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use mfa_shared::frame::{FrameError, decode, encode, nonblocking};
use mfa_shared::protocol::{AuthStep, ErrorKind, PROTOCOL_VERSION, Request, RequestFrame, Response, ResponseFrame};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
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

/// Connections one non-root user may hold at once, so that no local user
/// can take every slot and starve the PAM stacks (root has its own pool).
const CONNECTIONS_PER_USER: usize = 8;

/// Time a client has to send a request when no prompt is waiting for a
/// person to answer (then `request_timeout` applies).
const IDLE_LIMIT: Duration = Duration::from_secs(10);

/// Connection slots: a pool for root (the PAM stacks), a pool for everyone
/// else, and a cap per non-root uid.
struct Slots {
    root: Arc<Semaphore>,
    users: Arc<Semaphore>,
    per_uid: std::sync::Mutex<HashMap<u32, usize>>,
}

/// A held slot, given back on drop.
struct Slot {
    _permit: OwnedSemaphorePermit,
    uid_count: Option<(Arc<Slots>, u32)>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some((slots, uid)) = &self.uid_count {
            let mut counts = slots.per_uid.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(n) = counts.get_mut(uid) {
                *n -= 1;
                if *n == 0 {
                    counts.remove(uid);
                }
            }
        }
    }
}

impl Slots {
    fn new(max_connections: usize) -> Arc<Slots> {
        Arc::new(Slots {
            root: Arc::new(Semaphore::new(max_connections)),
            users: Arc::new(Semaphore::new(max_connections)),
            per_uid: std::sync::Mutex::new(HashMap::new()),
        })
    }

    /// A slot for `uid`, or None when its pool or its own cap is full.
    fn take(self: &Arc<Self>, uid: u32) -> Option<Slot> {
        if uid == 0 {
            let permit = self.root.clone().try_acquire_owned().ok()?;
            return Some(Slot { _permit: permit, uid_count: None });
        }
        let mut counts = self.per_uid.lock().unwrap_or_else(|p| p.into_inner());
        let count = counts.entry(uid).or_insert(0);
        if *count >= CONNECTIONS_PER_USER {
            return None;
        }
        let permit = self.users.clone().try_acquire_owned().ok()?;
        *count += 1;
        Some(Slot { _permit: permit, uid_count: Some((self.clone(), uid)) })
    }
}

/// Serve until `shutdown` turns true, then drain.
pub async fn serve(daemon: Arc<Daemon>, listener: UnixListener, mut shutdown: watch::Receiver<bool>) {
    let slots = Slots::new(daemon.config().max_connections);
    let mut connections = JoinSet::new();
    // What the per-uid ceilings dropped is summarised once a second.
    let mut summaries = tokio::time::interval(Duration::from_secs(1));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = summaries.tick() => {
                daemon.report_ceilings();
                continue;
            }
            _ = shutdown.changed() => break,
        };
        match accepted {
            Ok((mut stream, _)) => {
                let Ok(uid) = stream.peer_cred().map(|c| c.uid()) else { continue };
                let Some(slot) = slots.take(uid) else {
                    daemon.audit.event_from(uid, Severity::Notice, "too many connections, refused");
                    let reply = Response::error(ErrorKind::Busy, "too many connections to mfad; try again shortly");
                    let _ = tokio::time::timeout(Duration::from_secs(1), send(&mut stream, reply)).await;
                    continue;
                };
                let daemon = daemon.clone();
                let shutdown = shutdown.clone();
                connections.spawn(async move {
                    serve_connection(daemon, stream, uid, shutdown).await;
                    drop(slot);
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

async fn serve_connection(daemon: Arc<Daemon>, mut stream: UnixStream, uid: u32, mut shutdown: watch::Receiver<bool>) {
    let _connected = daemon.metrics.connected();
    // Root needs no lookup (and PAM stacks, the hot path, run as root).
    let peer = if uid == 0 {
        Peer { uid, name: Some("root".to_string()) }
    } else {
        let daemon = daemon.clone();
        tokio::task::spawn_blocking(move || daemon.peer(uid)).await.unwrap_or(Peer { uid, name: None })
    };
    // A person may be typing the answer to a prompt; otherwise a client has
    // no reason to sit idle.
    let mut awaiting_person = false;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let timeout = if awaiting_person { daemon.config().request_timeout.0 } else { IDLE_LIMIT };
        let body = tokio::select! {
            body = tokio::time::timeout(timeout, nonblocking::read_body(&mut stream)) => body,
            _ = shutdown.changed() => return,
        };
        let body = match body {
            // A request may carry a code: wiped once read.
            Ok(Ok(Some(body))) => zeroize::Zeroizing::new(body),
            // Idle too long, closed, or broken: drop the connection.
            Err(_) | Ok(Ok(None)) | Ok(Err(FrameError::Closed)) => return,
            Ok(Err(FrameError::TooBig(len))) => {
                daemon.audit.event_from(uid, Severity::Notice, &format!("oversized frame ({len} bytes) refused"));
                let reply = Response::error(ErrorKind::BadRequest, format!("frame of {len} bytes is too big"));
                let _ = send(&mut stream, reply).await;
                return;
            }
            Ok(Err(_)) => return,
        };
        let reply = match request_of(&body) {
            Err(reply) => {
                daemon.audit.event_from(uid, Severity::Notice, "malformed request refused");
                reply
            }
            Ok(_) if !daemon.admit_request(uid) => {
                Response::error(ErrorKind::Busy, "too many requests from your account; try again shortly")
            }
            // The client gave up (its timeout passed while mfad was stopped
            // or slow): its login was denied, so the request must not act
            // (use up a code, write a success line).
            Ok(_) if peer_has_gone(&stream) => {
                daemon.audit.event_from(uid, Severity::Notice, "request dropped: the client had already gone");
                return;
            }
            Ok(request) if answer_inline(&daemon, &peer, &request) => daemon.handle(&peer, request),
            Ok(request) if may_block_here(&daemon, &peer) => {
                tokio::task::block_in_place(|| daemon.handle(&peer, request))
            }
            Ok(request) => {
                let daemon = daemon.clone();
                let peer = peer.clone();
                tokio::task::spawn_blocking(move || daemon.handle(&peer, request))
                    .await
                    .unwrap_or_else(|_| Response::error(ErrorKind::Internal, "internal error in mfad"))
            }
        };
        awaiting_person = matches!(reply, Response::Auth(AuthStep::Prompt { .. } | AuthStep::CodeInAnswer { .. }));
        if send(&mut stream, reply).await.is_err() {
            return;
        }
    }
}

/// Whether to answer on this thread rather than the blocking pool: the
/// start of a login while MFA is switched off looks nothing up and takes
/// microseconds, less than handing it to another thread. Everything else
/// may wait on NSS (every login resolves its account names) or on an fsync
/// (shared by group commit), so it runs on the blocking pool unless
/// [`may_block_here`].
fn answer_inline(daemon: &Daemon, peer: &Peer, request: &Request) -> bool {
    peer.uid == 0 && matches!(request, Request::AuthBegin { .. }) && !daemon.config().enabled
}

/// Whether to answer a PAM stack's request on this worker thread, which
/// then blocks (tokio moves its other tasks to another thread): when no
/// write is waiting for a commit, a login (the hot path, from root) would
/// otherwise pay two thread hand-offs (to the blocking pool and back) on
/// top of the writer's. Under load the writer is busy and requests go to
/// the blocking pool, where they queue without holding a worker.
fn may_block_here(daemon: &Daemon, peer: &Peer) -> bool {
    peer.uid == 0
        && !daemon.store_may_be_writing()
        && tokio::runtime::Handle::current().runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread
}

/// Whether the other end has closed the connection: a peek that finds the
/// end of the stream (a client waiting for its reply sends nothing more).
fn peer_has_gone(stream: &UnixStream) -> bool {
    use std::os::fd::AsRawFd;
    let mut byte = [0u8; 1];
    // SAFETY: recv into a valid one-byte buffer on a descriptor we own;
    // MSG_PEEK leaves the data where it is, MSG_DONTWAIT never blocks.
    let n = unsafe { libc::recv(stream.as_raw_fd(), byte.as_mut_ptr().cast(), 1, libc::MSG_PEEK | libc::MSG_DONTWAIT) };
    n == 0
}

/// The request in a frame body, or the error reply. The version is read
/// first, so a newer client's unknown request is told about the version.
// The error is the reply itself, made once per refused frame: boxing it
// would buy nothing.
#[allow(clippy::result_large_err)]
pub fn request_of(body: &[u8]) -> Result<Request, Response> {
    #[derive(serde::Deserialize)]
    struct VersionOnly {
        version: u32,
    }
    if let Ok(VersionOnly { version }) = decode::<VersionOnly>(body)
        && version != PROTOCOL_VERSION
    {
        return Err(Response::error(
            ErrorKind::Version,
            format!("protocol version {version} is not supported (mfad speaks {PROTOCOL_VERSION})"),
        ));
    }
    decode::<RequestFrame>(body)
        .map(|frame| frame.request)
        .map_err(|err| Response::error(ErrorKind::BadRequest, format!("malformed request: {}", describe(&err))))
}

/// A parse error without the offending input (which may hold a code).
fn describe(err: &FrameError) -> String {
    match err {
        FrameError::Malformed(e) => format!("{:?} error at line {} column {}", e.classify(), e.line(), e.column()),
        other => other.to_string(),
    }
}

async fn send(stream: &mut UnixStream, response: Response) -> Result<(), FrameError> {
    use tokio::io::AsyncWriteExt;
    // A reply may carry a secret, a URI or recovery codes: wiped once sent.
    let bytes = zeroize::Zeroizing::new(match encode(&ResponseFrame::new(response)) {
        Ok(bytes) => bytes,
        // Too big or unencodable: say so rather than close without a word.
        Err(err) => {
            encode(&ResponseFrame::new(Response::error(ErrorKind::Internal, format!("reply not sent: {err}"))))?
        }
    });
    let write = async {
        stream.write_all(&bytes).await?;
        stream.flush().await
    };
    tokio::time::timeout(Duration::from_secs(10), write)
        .await
        .map_err(|_| FrameError::TimedOut)?
        .map_err(FrameError::from)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_cannot_take_every_slot() {
        let slots = Slots::new(10);
        let held: Vec<Slot> = (0..CONNECTIONS_PER_USER).map(|_| slots.take(1000).unwrap()).collect();
        assert!(slots.take(1000).is_none(), "over the per-user cap");
        assert!(slots.take(1001).is_some(), "another user still gets in");
        let root: Vec<Slot> = (0..10).map(|_| slots.take(0).unwrap()).collect();
        assert!(slots.take(0).is_none(), "root's pool is bounded too");
        drop(held);
        assert!(slots.take(1000).is_some(), "slots come back when connections end");
        drop(root);
        assert!(slots.take(0).is_some());
    }
}
