//! The socket side: accept connections, read frames, authorize by peer
//! credentials, hand each request to [`Daemon::handle`] and write the reply.
//!
//! One thread serves a connection from start to end: it reads a request,
//! answers it (store, account lookups and commit included) and writes the
//! reply, so a login crosses no other thread than a commit shared with
//! others (see the store). When an account lookup for a login outlives its
//! deadline, the lookup watchdog denies the login in the thread's place
//! (see [`crate::nss`]). Idle threads wait in accept(2) on the listening
//! socket, and the kernel wakes one per connection; when the last idle one
//! takes a connection it starts another, so a slow client never holds up
//! the next.
//!
//! Limits: `max_connections` for root (the PAM stacks) and as many again for
//! everyone else, at most [`CONNECTIONS_PER_USER`] per non-root uid (beyond
//! that a client is told it is busy), and so at most one thread per
//! connection allowed, plus one to refuse; [`IDLE_LIMIT`] to send a request,
//! or `request_timeout` while a person answers a prompt; frames capped at
//! [`MAX_FRAME`](mfa_shared::frame::MAX_FRAME) before allocating.
//! On shutdown no new connection is accepted and no new request is read,
//! and the ones in flight are answered.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use mfa_shared::frame::{FrameError, decode, encode, read_buffered_body, wait_readable};
use mfa_shared::protocol::{AuthStep, ErrorKind, PROTOCOL_VERSION, Request, RequestFrame, Response, ResponseFrame};
use tokio::sync::watch;

use crate::audit::Severity;
use crate::nss;
use crate::service::{Daemon, Peer, lookup_denied};

/// How long shutdown waits for requests in flight.
const DRAIN_LIMIT: Duration = Duration::from_secs(30);

/// Bind the socket: refuse if another daemon answers on it, replace a stale
/// file, and make it connectable by every local user (authorization is by
/// peer credentials, never by file mode).
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
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

/// Time a reply may take to be taken by the client.
const SEND_LIMIT: Duration = Duration::from_secs(10);

/// Threads kept waiting in accept(2) between connections: a burst may
/// start more, and those beyond this end when their connection does.
/// Enough that up to 32 logins at once start no thread per connection (at
/// 8, 32 clients made mfad start a thread every 28 logins, 7 % of its CPU);
/// an idle thread keeps what its stack touched, 30-90 KiB here.
const MAX_IDLE_THREADS: usize = 32;

/// Connection slots: a pool for root (the PAM stacks), a pool for everyone
/// else, and a cap per non-root uid.
struct Slots {
    max: usize,
    held: Mutex<Held>,
}

#[derive(Default)]
struct Held {
    root: usize,
    users: usize,
    per_uid: HashMap<u32, usize>,
}

/// A held slot, given back on drop.
struct Slot<'a> {
    slots: &'a Slots,
    uid: u32,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut held = lock(&self.slots.held);
        if self.uid == 0 {
            held.root -= 1;
            return;
        }
        held.users -= 1;
        if let Some(n) = held.per_uid.get_mut(&self.uid) {
            *n -= 1;
            if *n == 0 {
                held.per_uid.remove(&self.uid);
            }
        }
    }
}

impl Slots {
    fn new(max_connections: usize) -> Slots {
        Slots { max: max_connections, held: Mutex::new(Held::default()) }
    }

    /// A slot for `uid`, or None when its pool or its own cap is full.
    fn take(&self, uid: u32) -> Option<Slot<'_>> {
        let mut held = lock(&self.held);
        if uid == 0 {
            if held.root >= self.max {
                return None;
            }
            held.root += 1;
            return Some(Slot { slots: self, uid });
        }
        let count = held.per_uid.get(&uid).copied().unwrap_or(0);
        if count >= CONNECTIONS_PER_USER || held.users >= self.max {
            return None;
        }
        held.users += 1;
        held.per_uid.insert(uid, count + 1);
        Some(Slot { slots: self, uid })
    }
}

/// A mutex whose holder panicked is taken over: every value behind one
/// here is a count or a table that each change leaves whole.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Connections served on `listener` by threads of their own (see the
/// module's doc), from now until [`serve`] has seen the shutdown.
pub struct Serving(Arc<Server>);

/// Start serving connections on `listener`.
pub fn start(daemon: Arc<Daemon>, listener: UnixListener) -> io::Result<Serving> {
    let server = Arc::new(Server::new(daemon, listener));
    server.start_thread()?;
    Ok(Serving(server))
}

/// Keep serving until `shutdown` turns true, then drain.
pub async fn serve(Serving(server): Serving, mut shutdown: watch::Receiver<bool>) {
    let daemon = server.daemon.clone();
    // What the per-uid ceilings dropped is summarised once a second.
    let mut summaries = tokio::time::interval(Duration::from_secs(1));
    while !*shutdown.borrow() {
        tokio::select! {
            _ = summaries.tick() => daemon.report_ceilings(),
            changed = shutdown.changed() => if changed.is_err() { break },
        }
    }
    let drained = tokio::task::spawn_blocking(move || server.stop(DRAIN_LIMIT)).await;
    if !matches!(drained, Ok(true)) {
        daemon.audit.event(Severity::Warning, "shutdown: gave up waiting for requests in flight");
    }
}

/// What the connection threads share.
struct Server {
    daemon: Arc<Daemon>,
    listener: UnixListener,
    slots: Slots,
    /// At most one thread per connection the slots allow, and one more to
    /// refuse the next.
    max_threads: usize,
    threads: Mutex<Threads>,
    /// Told when a thread ends.
    ended: Condvar,
    stopping: AtomicBool,
    /// Connections waiting for their next request, which shutdown ends.
    waiting: Mutex<HashMap<u64, Waiting>>,
    next_connection: AtomicU64,
}

#[derive(Default)]
struct Threads {
    running: usize,
    /// Of those, waiting in accept(2).
    idle: usize,
}

/// A connection waiting for a request, as shutdown sees it.
enum Waiting {
    Reading(RawFd),
    /// Shutdown closed its reading side.
    Stopped,
}

impl Server {
    fn new(daemon: Arc<Daemon>, listener: UnixListener) -> Server {
        let max = daemon.config().max_connections;
        Server {
            daemon,
            listener,
            slots: Slots::new(max),
            max_threads: max.saturating_mul(2).saturating_add(1),
            threads: Mutex::new(Threads::default()),
            ended: Condvar::new(),
            stopping: AtomicBool::new(false),
            waiting: Mutex::new(HashMap::new()),
            next_connection: AtomicU64::new(0),
        }
    }

    /// Start one more thread, counted idle from now.
    fn start_thread(self: &Arc<Self>) -> io::Result<()> {
        {
            let mut threads = lock(&self.threads);
            threads.running += 1;
            threads.idle += 1;
        }
        let server = self.clone();
        let started = std::thread::Builder::new().name("mfad-conn".into()).spawn(move || server.accept_loop());
        if started.is_err() {
            let mut threads = lock(&self.threads);
            threads.running -= 1;
            threads.idle -= 1;
        }
        started.map(drop)
    }

    /// A connection thread: accept, serve, and again, until shutdown or
    /// enough threads are idle.
    fn accept_loop(self: Arc<Self>) {
        let _counted = Ending(&self);
        loop {
            let accepted = self.listener.accept();
            if self.stopping.load(Ordering::SeqCst) {
                lock(&self.threads).idle -= 1;
                return;
            }
            let start_another = {
                let mut threads = lock(&self.threads);
                threads.idle -= 1;
                threads.idle == 0 && threads.running < self.max_threads
            };
            if start_another && let Err(err) = self.start_thread() {
                self.daemon.audit.event(Severity::Warning, &format!("cannot start a connection thread: {err}"));
            }
            match accepted {
                Ok((stream, _)) => {
                    // A bug in a request's handling ends its connection, never the thread.
                    let served = std::panic::catch_unwind(AssertUnwindSafe(|| self.serve_connection(stream)));
                    if served.is_err() {
                        self.daemon.audit.event(Severity::Warning, "internal error in mfad: a connection was dropped");
                    }
                }
                Err(err) => self.daemon.audit.event(Severity::Warning, &format!("accept failed: {err}")),
            }
            let mut threads = lock(&self.threads);
            if threads.idle >= MAX_IDLE_THREADS {
                return;
            }
            threads.idle += 1;
        }
    }

    /// Stop accepting, end the connections waiting for a request, and wait
    /// up to `limit` for the others to be answered; false when they were not.
    fn stop(&self, limit: Duration) -> bool {
        self.stopping.store(true, Ordering::SeqCst);
        // Wakes every thread in accept(2) (with EINVAL); a client
        // connecting from now on is refused.
        // SAFETY: shutdown(2) on a descriptor this server owns.
        unsafe { libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RDWR) };
        for waiting in lock(&self.waiting).values_mut() {
            if let Waiting::Reading(fd) = *waiting {
                // SAFETY: the descriptor is open: a connection leaves this
                // table (under its lock) before its stream is closed.
                unsafe { libc::shutdown(fd, libc::SHUT_RD) };
                *waiting = Waiting::Stopped;
            }
        }
        let threads = lock(&self.threads);
        let (threads, waited) =
            self.ended.wait_timeout_while(threads, limit, |t| t.running > 0).unwrap_or_else(|p| p.into_inner());
        drop(threads);
        !waited.timed_out()
    }

    fn serve_connection(&self, stream: UnixStream) {
        let Some(uid) = peer_uid(&stream) else { return };
        let daemon = &*self.daemon;
        let Some(_slot) = self.slots.take(uid) else {
            daemon.audit.event_from(uid, Severity::Notice, "too many connections, refused");
            let reply = Response::error(ErrorKind::Busy, "too many connections to mfad; try again shortly");
            let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
            let _ = send(&stream, reply);
            return;
        };
        let _connected = daemon.metrics.connected();
        if stream.set_write_timeout(Some(SEND_LIMIT)).is_err() {
            return;
        }
        let stream = Arc::new(stream);
        let overdue = Arc::new(OverdueLookup {
            stream: stream.clone(),
            daemon: self.daemon.clone(),
            uid,
            answered: AtomicBool::new(false),
        });
        // Root needs no lookup (and PAM stacks, the hot path, run as root).
        let peer = if uid == 0 {
            Peer { uid, name: Some("root".to_string()) }
        } else {
            let peer = nss::with_early_answer(overdue.clone(), || daemon.peer(uid));
            if overdue.claim() {
                return;
            }
            peer
        };
        let id = self.next_connection.fetch_add(1, Ordering::Relaxed);
        let mut reading = Reading { stream: &stream, received: Default::default() };
        // A person may be typing the answer to a prompt; otherwise a client
        // has no reason to sit idle.
        let mut awaiting_person = false;
        loop {
            if !self.wait_for_request(id, &stream) {
                break;
            }
            let limit = if awaiting_person { daemon.config().request_timeout.0 } else { IDLE_LIMIT };
            let body = reading.body_within(limit, daemon);
            // Shutdown may have closed the reading side since: then the
            // end of the stream is no sign the client has gone.
            let stopped = self.request_read(id);
            let body = match body {
                // A request may carry a code: wiped once read.
                Ok(Some(body)) => body,
                // Idle too long, closed, or broken: drop the connection.
                Ok(None) | Err(FrameError::Closed | FrameError::TimedOut) => break,
                Err(FrameError::TooBig(len)) => {
                    daemon.audit.event_from(uid, Severity::Notice, &format!("oversized frame ({len} bytes) refused"));
                    let _ = send(
                        &stream,
                        Response::error(ErrorKind::BadRequest, format!("frame of {len} bytes is too big")),
                    );
                    break;
                }
                Err(_) => break,
            };
            overdue.answered.store(false, Ordering::SeqCst);
            let reply = match request_of(&body) {
                Err(reply) => {
                    daemon.audit.event_from(uid, Severity::Notice, "malformed request refused");
                    reply
                }
                Ok(_) if !daemon.admit_request(uid) => {
                    Response::error(ErrorKind::Busy, "too many requests from your account; try again shortly")
                }
                // The client gave up (its timeout passed while mfad was
                // stopped or slow): its login was denied, so the request
                // must not act (use up a code, write a success line).
                Ok(_) if !stopped && peer_has_gone(&stream) => {
                    daemon.audit.event_from(uid, Severity::Notice, "request dropped: the client had already gone");
                    break;
                }
                Ok(request) => {
                    let login_step = request_is_a_login_step(&request);
                    let handle = || {
                        std::panic::catch_unwind(AssertUnwindSafe(|| daemon.handle(&peer, request)))
                            .unwrap_or_else(|_| Response::error(ErrorKind::Internal, "internal error in mfad"))
                    };
                    // A login must hear no before the module gives up on
                    // mfad, however long the directory takes.
                    if login_step { nss::with_early_answer(overdue.clone(), handle) } else { handle() }
                }
            };
            awaiting_person = matches!(reply, Response::Auth(AuthStep::Prompt { .. } | AuthStep::CodeInAnswer { .. }));
            // A login's decision ends its conversation, and its connection:
            // the thread goes back to accept(2) without waiting to be woken
            // by the client's close.
            let decided = matches!(reply, Response::Auth(AuthStep::Decision { .. }));
            if overdue.claim() || send(&stream, reply).is_err() || decided {
                break;
            }
        }
        // Out of the table before the stream (and its descriptor) closes.
        lock(&self.waiting).remove(&id);
    }

    /// Enter the table of connections waiting for a request; false when
    /// shutdown has begun.
    fn wait_for_request(&self, id: u64, stream: &UnixStream) -> bool {
        let mut waiting = lock(&self.waiting);
        if self.stopping.load(Ordering::SeqCst) {
            return false;
        }
        waiting.insert(id, Waiting::Reading(stream.as_raw_fd()));
        true
    }

    /// Leave the table once a request has been read (or not); whether
    /// shutdown closed the reading side meanwhile.
    fn request_read(&self, id: u64) -> bool {
        matches!(lock(&self.waiting).remove(&id), Some(Waiting::Stopped))
    }
}

/// Counts a connection thread out when it ends, however it ends.
struct Ending<'a>(&'a Server);

impl Drop for Ending<'_> {
    fn drop(&mut self) {
        lock(&self.0.threads).running -= 1;
        self.0.ended.notify_all();
    }
}

/// The early answer of a connection's requests (see
/// [`nss::EarlyAnswer`]): when an account lookup for a login step outlives
/// its deadline, the login is denied on the watchdog's thread and the
/// connection closed, while the lookup keeps the connection's thread.
struct OverdueLookup {
    stream: Arc<UnixStream>,
    daemon: Arc<Daemon>,
    uid: u32,
    /// Set by whichever answers the request first: the watchdog, or the
    /// connection's thread with its reply.
    answered: AtomicBool,
}

impl OverdueLookup {
    /// Take the answering of the request in flight: true when the watchdog
    /// has answered it already.
    fn claim(&self) -> bool {
        self.answered.swap(true, Ordering::SeqCst)
    }
}

impl nss::EarlyAnswer for OverdueLookup {
    fn answer(&self, reason: &str) {
        if self.claim() {
            return;
        }
        self.daemon.audit.event_from(self.uid, Severity::Warning, &format!("login denied: {reason}"));
        // Never blocks: a client that does not read its replies gets none.
        if let Ok(bytes) = encode(&ResponseFrame::new(lookup_denied())) {
            // SAFETY: send from a valid buffer of that length on the
            // descriptor of `self.stream`, which `self` holds open.
            let _ = unsafe {
                libc::send(
                    self.stream.as_raw_fd(),
                    bytes.as_ptr().cast(),
                    bytes.len(),
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            };
        }
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

/// Whether `request` is a step of a PAM login, which the module's failmode
/// would decide if mfad stayed silent.
fn request_is_a_login_step(request: &Request) -> bool {
    matches!(request, Request::AuthBegin { .. } | Request::AuthAnswer { .. } | Request::AuthNotACode { .. })
}

/// Reads frames from a connection, each within its own time limit: every
/// read first waits in poll(2) for what is left of it (see
/// [`mfa_shared::frame::wait_readable`]).
struct Reading<'a> {
    stream: &'a UnixStream,
    /// What a read brought past the last frame (a client that sends its
    /// next request early).
    received: zeroize::Zeroizing<Vec<u8>>,
}

impl Reading<'_> {
    /// The next frame's body, `Ok(None)` at a clean end of stream, within
    /// `limit` in all (a client sending a byte at a time gains nothing).
    fn body_within(
        &mut self,
        limit: Duration,
        daemon: &Daemon,
    ) -> Result<Option<zeroize::Zeroizing<Vec<u8>>>, FrameError> {
        let limit_us = u64::try_from(limit.as_micros()).unwrap_or(u64::MAX);
        let deadline = daemon.monotonic_micros().saturating_add(limit_us);
        read_buffered_body(&mut Timed { stream: self.stream, daemon, deadline }, &mut self.received)
    }
}

/// One frame's reads, against its deadline.
struct Timed<'a> {
    stream: &'a UnixStream,
    daemon: &'a Daemon,
    deadline: u64,
}

impl Read for Timed<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.deadline.saturating_sub(self.daemon.monotonic_micros());
        if left == 0 || !wait_readable(self.stream.as_fd(), Duration::from_micros(left))? {
            return Err(io::ErrorKind::TimedOut.into());
        }
        (&mut &*self.stream).read(buf)
    }
}

/// The uid of the process at the other end (SO_PEERCRED, as it connected).
fn peer_uid(stream: &UnixStream) -> Option<u32> {
    let mut cred = libc::ucred { pid: 0, uid: 0, gid: 0 };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cred`, which is
    // that large, on a descriptor we own.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    (rc == 0 && len as usize == std::mem::size_of::<libc::ucred>()).then_some(cred.uid)
}

/// Whether the other end has closed the connection: a peek that finds the
/// end of the stream (a client waiting for its reply sends nothing more).
fn peer_has_gone(stream: &UnixStream) -> bool {
    let mut byte = [0u8; 1];
    // SAFETY: recv into a valid one-byte buffer on a descriptor we own;
    // MSG_PEEK leaves the data where it is, MSG_DONTWAIT never blocks.
    let n = unsafe { libc::recv(stream.as_raw_fd(), byte.as_mut_ptr().cast(), 1, libc::MSG_PEEK | libc::MSG_DONTWAIT) };
    n == 0
}

/// The request in a frame body, or the error reply. A body of this
/// protocol's version is parsed once; only one that does not parse is read
/// again for its version, so a newer client's unknown request is told
/// about the version.
// The error is the reply itself, made once per refused frame: boxing it
// would buy nothing.
#[allow(clippy::result_large_err)]
pub fn request_of(body: &[u8]) -> Result<Request, Response> {
    #[derive(serde::Deserialize)]
    struct VersionOnly {
        version: u32,
    }
    let version_error = |version: u32| {
        Response::error(
            ErrorKind::Version,
            format!("protocol version {version} is not supported (mfad speaks {PROTOCOL_VERSION})"),
        )
    };
    match decode::<RequestFrame>(body) {
        Ok(frame) if frame.version == PROTOCOL_VERSION => Ok(frame.request),
        Ok(frame) => Err(version_error(frame.version)),
        Err(err) => match decode::<VersionOnly>(body) {
            Ok(VersionOnly { version }) if version != PROTOCOL_VERSION => Err(version_error(version)),
            _ => Err(Response::error(ErrorKind::BadRequest, format!("malformed request: {}", describe(&err)))),
        },
    }
}

/// A parse error without the offending input (which may hold a code).
fn describe(err: &FrameError) -> String {
    match err {
        FrameError::Malformed(e) => format!("{:?} error at line {} column {}", e.classify(), e.line(), e.column()),
        other => other.to_string(),
    }
}

/// Write a reply (within the socket's send timeout).
fn send(stream: &UnixStream, response: Response) -> Result<(), FrameError> {
    // A reply may carry a secret, a URI or recovery codes: wiped once sent.
    let bytes = zeroize::Zeroizing::new(match encode(&ResponseFrame::new(response)) {
        Ok(bytes) => bytes,
        // Too big or unencodable: say so rather than close without a word.
        Err(err) => {
            encode(&ResponseFrame::new(Response::error(ErrorKind::Internal, format!("reply not sent: {err}"))))?
        }
    });
    (&mut &*stream).write_all(&bytes).map_err(FrameError::from)
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

    #[test]
    fn a_request_of_another_version_is_told_the_version_even_when_unknown() {
        let kind = |body: &[u8]| match request_of(body) {
            Ok(request) => format!("ok {request:?}"),
            Err(Response::Error { kind, .. }) => format!("{kind:?}"),
            Err(other) => format!("{other:?}"),
        };
        assert_eq!(kind(br#"{"version":1,"request":{"type":"list_users"}}"#), "ok ListUsers { after: None }");
        assert_eq!(kind(br#"{"version":2,"request":{"type":"list_users"}}"#), "Version");
        assert_eq!(kind(br#"{"version":2,"request":{"type":"from_the_future"}}"#), "Version");
        assert_eq!(kind(br#"{"version":1,"request":{"type":"from_the_future"}}"#), "BadRequest");
        assert_eq!(kind(br#"{"request":{"type":"list_users"}}"#), "BadRequest");
        assert_eq!(kind(b"\x00not json"), "BadRequest");
    }

    /// Knows every name, until asked for one: then never answers until
    /// released (a hung LDAP server).
    struct HungAccounts(Mutex<std::sync::mpsc::Receiver<()>>);

    impl nss::Directory for HungAccounts {
        fn groups_of(&self, _: &str) -> Result<Vec<String>, String> {
            Ok(Vec::new())
        }
        fn account(&self, _: &str) -> Result<Option<nss::Account>, String> {
            let _ = self.0.lock().unwrap_or_else(|p| p.into_inner()).recv();
            Ok(None)
        }
        fn name_of_uid(&self, _: u32) -> Result<Option<String>, String> {
            Ok(None)
        }
    }

    #[test]
    fn a_login_whose_account_lookup_hangs_is_denied_within_the_deadline() {
        use mfa_shared::client::Client;
        use mfa_shared::protocol::Outcome;
        let dir = tempfile::tempdir().unwrap();
        let (release, hung) = std::sync::mpsc::channel();
        let clock = Arc::new(crate::clock::SystemClock);
        let directory = nss::DeadlineDirectory::new(
            Arc::new(HungAccounts(Mutex::new(hung))),
            Duration::from_millis(200),
            clock.clone(),
        );
        let config = mfa_shared::config::Config { enabled: true, ..Default::default() };
        let daemon = Arc::new(Daemon::new(
            config,
            None,
            Arc::new(crate::store::SqliteStore::open_in_memory().unwrap()),
            Arc::new(crate::crypto::Vault::from_key(&[7u8; 32])),
            clock,
            Arc::new(directory),
            crate::audit::Audit::new(dir.path().join("log")),
        ));
        let socket = dir.path().join("mfad.sock");
        let audit = std::os::unix::net::UnixDatagram::bind(dir.path().join("log")).unwrap();
        audit.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _serving = start(daemon, bind(&socket).unwrap()).unwrap();
        let mut client = Client::connect(&socket, Duration::from_secs(10)).unwrap();
        let begin = Request::AuthBegin {
            service: "sshd".into(),
            user: "alice".into(),
            ruser: None,
            rhost: Some("10.0.0.1".into()),
            tty: None,
            forward_pass: false,
        };
        // Denied, not left to the module's timeout and its failmode.
        match client.request(begin).unwrap() {
            Response::Auth(AuthStep::Decision { outcome: Outcome::Denied, messages }) => {
                assert!(messages[0].text.contains("cannot look up your account"), "{messages:?}")
            }
            other => panic!("not a denial: {other:?}"),
        }
        assert!(client.request(Request::ListUsers { after: None }).is_err(), "the decision ends the connection");
        let mut line = [0u8; 4096];
        let n = audit.recv(&mut line).unwrap();
        let line = String::from_utf8_lossy(&line[..n]);
        assert!(line.contains("login denied: the user directory did not answer in time"), "{line}");
        drop(release);
    }
}
