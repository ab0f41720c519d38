//! A blocking client for mfad, used by mfactl and the PAM module.
//!
//! Every socket call has a timeout, so a hung daemon can never hang a login.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

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
#[derive(Debug)]
pub struct Client {
    stream: UnixStream,
}

impl Client {
    /// Connect with `timeout` applied to the connect itself and to every
    /// later read and write.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Self, ClientError> {
        let stream = connect_with_timeout(path, timeout)
            .map_err(|source| ClientError::Connect { path: path.to_path_buf(), source })?;
        Ok(Client { stream })
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
        frame::write_frame(&mut self.stream, &RequestFrame::new(request))?;
        let reply: ResponseFrame = frame::read_frame(&mut self.stream)?;
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

/// `UnixStream::connect` has no timeout, and a connect to a listener whose
/// backlog is full blocks. Linux bounds that wait by the socket's send
/// timeout, so the timeouts (kept for every later read and write) are set
/// before connecting.
fn connect_with_timeout(path: &Path, timeout: Duration) -> std::io::Result<UnixStream> {
    use socket2::{Domain, SockAddr, Socket, Type};
    let socket = Socket::new(Domain::UNIX, Type::STREAM.cloexec(), None)?;
    socket.set_write_timeout(Some(timeout))?;
    socket.set_read_timeout(Some(timeout))?;
    socket.connect(&SockAddr::unix(path)?)?;
    Ok(socket.into())
}
