//! A blocking client for mfad, used by mfactl and the PAM module.
//!
//! Every socket call has a timeout, so a hung daemon can never hang a login.
//!
//! It runs inside every login, so it makes as few system calls as it can:
//! one socket, one setsockopt (the send timeout, which also bounds the
//! connect), one connect, one getsockopt for the peer's uid when asked,
//! then per request one send, one poll for the reply (bounded by the
//! timeout) and, as mfad writes each response whole, usually one read for
//! its header and body together.

use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use zeroize::Zeroizing;

use crate::frame::{self, FrameError};
use crate::protocol::{ErrorKind, PROTOCOL_VERSION, Request, RequestFrame, Response, ResponseFrame};

/// Where mfad listens unless configured otherwise.
pub const DEFAULT_SOCKET: &str = "/run/mfad/mfad.sock";

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to mfad at {path}: {source}")]
    Connect { path: PathBuf, source: std::io::Error },
    #[error("mfad did not answer in time")]
    TimedOut,
    #[error("connection to mfad failed: {0}")]
    Frame(FrameError),
    #[error("mfad speaks protocol version {0}, this client speaks {PROTOCOL_VERSION}")]
    Version(u32),
    #[error("{message}")]
    Daemon { kind: ErrorKind, message: String },
    /// mfad answered `unavailable`: it cannot reach its store.
    #[error("store unavailable: {0}")]
    StoreUnavailable(String),
}

impl From<FrameError> for ClientError {
    fn from(err: FrameError) -> Self {
        match err {
            FrameError::TimedOut => ClientError::TimedOut,
            other => ClientError::Frame(other),
        }
    }
}

/// One connection to mfad; several requests may be sent over it in turn.
pub struct Client {
    stream: UnixStream,
    /// How long each read may wait.
    timeout: Duration,
    /// Bytes received and not yet decoded: the rest of a frame, or (never
    /// from mfad, which answers each request with one frame) the start of
    /// the next. Responses may hold a code, a key or recovery codes: the
    /// buffer is wiped when it grows and when the client is dropped.
    received: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("stream", &self.stream).field("buffered", &self.received.len()).finish()
    }
}

impl Client {
    /// Connect with `timeout` applied to the connect itself and to every
    /// later read and write.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Self, ClientError> {
        let stream = connect_with_timeout(path, timeout)
            .map_err(|source| ClientError::Connect { path: path.to_path_buf(), source })?;
        Ok(Client::from_stream(stream, timeout))
    }

    fn from_stream(stream: UnixStream, timeout: Duration) -> Self {
        Client { stream, timeout, received: Zeroizing::new(Vec::new()) }
    }

    /// The uid of the process serving the socket (SO_PEERCRED), so a
    /// caller can insist on a daemon run by root.
    pub fn server_uid(&self) -> Result<u32, ClientError> {
        use std::os::fd::AsRawFd;
        let mut cred = libc::ucred { pid: 0, uid: u32::MAX, gid: u32::MAX };
        let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
        // SAFETY: cred and len are valid for writes of the sizes given.
        let rc = unsafe {
            libc::getsockopt(
                self.stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERCRED,
                (&mut cred as *mut libc::ucred).cast(),
                &mut len,
            )
        };
        if rc != 0 {
            let source = std::io::Error::last_os_error();
            return Err(ClientError::Connect { path: PathBuf::from("<peer credentials>"), source });
        }
        Ok(cred.uid)
    }

    /// Send a request and wait for its response. An error response is
    /// returned as `Ok(Response::Error{..})`; use [`Client::call`] to turn it
    /// into an `Err`.
    pub fn request(&mut self, request: Request) -> Result<Response, ClientError> {
        // One write: the frame is encoded whole.
        frame::write_frame(&mut self.stream, &RequestFrame::new(request))?;
        let mut replies = Polled { stream: &self.stream, timeout: self.timeout };
        let reply: ResponseFrame = read_buffered_frame(&mut replies, &mut self.received)?;
        if reply.version != PROTOCOL_VERSION {
            return Err(ClientError::Version(reply.version));
        }
        Ok(reply.response)
    }

    /// Like [`Client::request`], with daemon errors as `Err`.
    pub fn call(&mut self, request: Request) -> Result<Response, ClientError> {
        match self.request(request)? {
            Response::Error { kind, message } => Err(ClientError::Daemon { kind, message }),
            Response::Unavailable { message } => Err(ClientError::StoreUnavailable(message)),
            other => Ok(other),
        }
    }
}

/// Reads that first wait in poll(2) (see [`frame::wait_readable`]), each
/// for at most `timeout`.
struct Polled<'a> {
    stream: &'a UnixStream,
    timeout: Duration,
}

impl Read for Polled<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if !frame::wait_readable(self.stream.as_fd(), self.timeout)? {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        (&mut &*self.stream).read(buf)
    }
}

/// Read one frame from `stream` as [`frame::buffer_frame`] reads,
/// `received` holding what earlier reads brought past the previous frame.
/// Public for the fuzz target that reads replies as a client does.
pub fn read_buffered_frame<R: Read, T: DeserializeOwned>(
    stream: &mut R,
    received: &mut Zeroizing<Vec<u8>>,
) -> Result<T, FrameError> {
    let end = frame::buffer_frame(stream, received)?.ok_or(FrameError::Closed)?;
    let message = frame::decode(&received[4..end]);
    received.drain(..end);
    message
}

/// `UnixStream::connect` has no timeout, and a connect to a listener whose
/// backlog is full blocks. Linux bounds that wait by the socket's send
/// timeout, so it (kept for every later write) is set before connecting.
/// Reads are bounded by their poll.
fn connect_with_timeout(path: &Path, timeout: Duration) -> std::io::Result<UnixStream> {
    use socket2::{Domain, SockAddr, Socket, Type};
    let socket = Socket::new(Domain::UNIX, Type::STREAM.cloexec(), None)?;
    socket.set_write_timeout(Some(timeout))?;
    socket.connect(&SockAddr::unix(path)?)?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn frame_bytes(message: &str) -> Vec<u8> {
        frame::encode(&ResponseFrame::new(Response::Ok { message: Some(message.to_string()) })).unwrap()
    }

    fn message(frame: Result<ResponseFrame, FrameError>) -> String {
        match frame.unwrap().response {
            Response::Ok { message: Some(message) } => message,
            other => panic!("unexpected {other:?}"),
        }
    }

    /// A stream that hands out at most `piece` bytes a read, and counts reads.
    struct Pieces<'a> {
        bytes: &'a [u8],
        piece: usize,
        reads: usize,
    }

    impl<'a> Pieces<'a> {
        fn new(bytes: &'a [u8], piece: usize) -> Self {
            Pieces { bytes, piece, reads: 0 }
        }

        fn frame(&mut self, received: &mut Zeroizing<Vec<u8>>) -> Result<ResponseFrame, FrameError> {
            read_buffered_frame(self, received)
        }
    }

    impl Read for Pieces<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.reads += 1;
            let n = buf.len().min(self.piece).min(self.bytes.len());
            buf[..n].copy_from_slice(&self.bytes[..n]);
            self.bytes = &self.bytes[n..];
            Ok(n)
        }
    }

    /// A client on one end of a socket pair, reads bounded by `timeout`.
    fn pair(timeout: Duration) -> (Client, UnixStream) {
        let (ours, theirs) = UnixStream::pair().unwrap();
        (Client::from_stream(ours, timeout), theirs)
    }

    #[test]
    fn a_request_gets_its_response() {
        let (mut client, mut daemon) = pair(Duration::from_secs(10));
        let server = std::thread::spawn(move || {
            let request: RequestFrame = frame::read_frame(&mut daemon).unwrap();
            assert_eq!(request.request, Request::ListUsers { after: None });
            daemon.write_all(&frame_bytes("hello")).unwrap();
        });
        let response = client.request(Request::ListUsers { after: None }).unwrap();
        server.join().unwrap();
        assert_eq!(response, Response::Ok { message: Some("hello".to_string()) });
        assert!(client.received.is_empty());
    }

    #[test]
    fn a_frame_sent_whole_takes_one_read() {
        let bytes = frame_bytes("one read");
        let mut stream = Pieces::new(&bytes, usize::MAX);
        let mut received = Zeroizing::new(Vec::new());
        assert_eq!(message(stream.frame(&mut received)), "one read");
        assert_eq!(stream.reads, 1);
        assert!(received.is_empty());
    }

    #[test]
    fn a_frame_in_pieces_is_put_together() {
        let bytes = frame_bytes("split into pieces");
        for piece in [1, 2, 3, 5, 7] {
            let mut stream = Pieces::new(&bytes, piece);
            let mut received = Zeroizing::new(Vec::new());
            assert_eq!(message(stream.frame(&mut received)), "split into pieces", "pieces of {piece}");
            assert_eq!(stream.reads, bytes.len().div_ceil(piece), "pieces of {piece}");
        }
    }

    #[test]
    fn bytes_past_a_frame_are_kept_for_the_next() {
        let mut bytes = frame_bytes("first");
        bytes.extend_from_slice(&frame_bytes("second"));
        let mut stream = Pieces::new(&bytes, usize::MAX);
        let mut received = Zeroizing::new(Vec::new());
        assert_eq!(message(stream.frame(&mut received)), "first");
        assert_eq!(message(stream.frame(&mut received)), "second");
        assert_eq!(stream.reads, 1);
        assert!(received.is_empty());
    }

    #[test]
    fn a_frame_larger_than_one_read() {
        let text = "x".repeat(5 * frame::READ_SIZE);
        let bytes = frame_bytes(&text);
        let mut stream = Pieces::new(&bytes, usize::MAX);
        let mut received = Zeroizing::new(Vec::new());
        assert_eq!(message(stream.frame(&mut received)), text);
        // The first read brings the header and READ_SIZE bytes, the second the rest.
        assert_eq!(stream.reads, 2);
    }

    #[test]
    fn an_end_of_stream_inside_a_frame_is_closed() {
        let bytes = frame_bytes("cut");
        for cut in [0, 2, 4, 10, bytes.len() - 1] {
            let mut stream = Pieces::new(&bytes[..cut], 3);
            let err = stream.frame(&mut Zeroizing::new(Vec::new())).unwrap_err();
            assert!(matches!(err, FrameError::Closed), "cut at {cut}: {err:?}");
        }
    }

    #[test]
    fn an_oversized_header_is_refused_before_the_body() {
        // No body follows: the length alone is refused, nothing more is read.
        let bytes = (frame::MAX_FRAME + 1).to_be_bytes();
        let mut stream = Pieces::new(&bytes, usize::MAX);
        let err = stream.frame(&mut Zeroizing::new(Vec::new())).unwrap_err();
        assert!(matches!(err, FrameError::TooBig(len) if len == frame::MAX_FRAME + 1), "{err:?}");
        assert_eq!(stream.reads, 1);
    }

    #[test]
    fn malformed_json_is_reported() {
        let mut bytes = 5u32.to_be_bytes().to_vec();
        bytes.extend_from_slice(b"{nope");
        let err = Pieces::new(&bytes, usize::MAX).frame(&mut Zeroizing::new(Vec::new())).unwrap_err();
        assert!(matches!(err, FrameError::Malformed(_)), "{err:?}");
    }

    #[test]
    fn a_daemon_that_stops_mid_frame_times_out() {
        let (mut client, mut daemon) = pair(Duration::from_millis(200));
        daemon.write_all(&frame_bytes("never finished")[..8]).unwrap();
        let err = client.request(Request::ListUsers { after: None }).unwrap_err();
        assert!(matches!(err, ClientError::TimedOut), "{err:?}");
        drop(daemon);
    }

    #[test]
    fn debug_output_shows_no_received_bytes() {
        let (mut client, mut daemon) = pair(Duration::from_secs(10));
        let mut bytes = frame_bytes("first");
        bytes.extend_from_slice(&frame_bytes("secret"));
        daemon.write_all(&bytes).unwrap();
        let _ = message(read_buffered_frame(&mut client.stream, &mut client.received));
        assert!(!client.received.is_empty());
        let shown = format!("{client:?}");
        assert!(!shown.contains("secret") && !shown.contains("115, 101, 99"), "{shown}");
    }
}
