//! Framing: a 4-byte big-endian length, then that many bytes of JSON.
//!
//! The length is checked against [`MAX_FRAME`] before anything is allocated,
//! and an end of stream inside a frame is an error, so a hostile or broken
//! peer can neither make us allocate gigabytes nor spin on a half-closed
//! socket.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use zeroize::Zeroizing;

/// Largest frame either side accepts. Requests are tiny; the largest
/// responses (user lists) are bounded by the daemon.
pub const MAX_FRAME: u32 = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("connection closed")]
    Closed,
    #[error("frame of {0} bytes exceeds the limit of {MAX_FRAME} bytes")]
    TooBig(u32),
    #[error("timed out")]
    TimedOut,
    #[error("i/o error: {0}")]
    Io(io::Error),
    #[error("malformed message: {0}")]
    Malformed(serde_json::Error),
}

impl From<io::Error> for FrameError {
    fn from(err: io::Error) -> Self {
        match err.kind() {
            io::ErrorKind::UnexpectedEof => FrameError::Closed,
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => FrameError::TimedOut,
            _ => FrameError::Io(err),
        }
    }
}

/// Wait until `fd` has something to read (bytes, or the end of the
/// stream) or `timeout` passes: false when it passed.
///
/// A wait in poll(2) for POLLIN wakes only for that. A read blocked on a
/// Unix stream socket also wakes each time the peer takes in what this end
/// sent (the kernel then signals room to write to every waiter), only to
/// sleep again: two needless context switches a frame, each way.
pub fn wait_readable(fd: BorrowedFd<'_>, timeout: Duration) -> io::Result<bool> {
    let mut poll = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    let millis = libc::c_int::try_from(timeout.as_micros().div_ceil(1000)).unwrap_or(libc::c_int::MAX);
    // SAFETY: one valid pollfd, and the count says one.
    match unsafe { libc::poll(&mut poll, 1, millis) } {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(false),
        _ => Ok(true),
    }
}

/// Encode a message as one frame (header + body).
pub fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>, FrameError> {
    // The JSON may hold a code or a secret: wiped once copied.
    let body = zeroize::Zeroizing::new(serde_json::to_vec(message).map_err(FrameError::Malformed)?);
    let len = u32::try_from(body.len()).map_err(|_| FrameError::TooBig(u32::MAX))?;
    if len > MAX_FRAME {
        return Err(FrameError::TooBig(len));
    }
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Decode a frame body.
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    serde_json::from_slice(body).map_err(FrameError::Malformed)
}

/// Check a header and return the body length it announces.
pub fn body_len(header: [u8; 4]) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(header);
    if len > MAX_FRAME {
        return Err(FrameError::TooBig(len));
    }
    Ok(len as usize)
}

pub fn write_frame<W: Write, T: Serialize>(writer: &mut W, message: &T) -> Result<(), FrameError> {
    writer.write_all(&encode(message)?)?;
    writer.flush()?;
    Ok(())
}

pub fn read_frame<R: Read, T: DeserializeOwned>(reader: &mut R) -> Result<T, FrameError> {
    let mut header = [0u8; 4];
    reader.read_exact(&mut header)?;
    let mut body = vec![0u8; body_len(header)?];
    reader.read_exact(&mut body)?;
    decode(&body)
}

/// Room asked of each buffered read: a request, or a login step's reply (a
/// prompt and its messages), fits, header and body, in one read; a larger
/// frame (an inline set-up's QR code, a page of mfactl's user list) takes
/// more. Under glibc's large request (1,008 bytes), whose every
/// allocation first consolidates malloc's fast bins: a connection's
/// buffer is allocated once per connection, so once per login.
pub const READ_SIZE: usize = 1000;

/// Read from `stream` until `received` (which holds what earlier reads
/// brought past the previous frame) holds a whole frame, and return where
/// it ends; `Ok(None)` at a clean end of stream before a frame begins.
/// Unlike [`read_frame`], which reads the header and then the body, each
/// read asks for all the room there is, so a frame written whole usually
/// takes one read. The same checks apply: the length is checked before the
/// body is waited for or allocated, and an end of stream inside a frame is
/// [`FrameError::Closed`]. What is received may hold a code or a secret:
/// the buffer is wiped when it grows and when it is dropped.
pub fn buffer_frame<R: Read>(stream: &mut R, received: &mut Zeroizing<Vec<u8>>) -> Result<Option<usize>, FrameError> {
    match fill(stream, received, 4) {
        Err(FrameError::Closed) if received.is_empty() => return Ok(None),
        other => other?,
    }
    let header = [received[0], received[1], received[2], received[3]];
    let end = 4 + body_len(header)?;
    fill(stream, received, end)?;
    Ok(Some(end))
}

/// The next frame's body, read as [`buffer_frame`] reads, as the daemon
/// does (it decodes in steps: the version first). `Ok(None)` is a clean end
/// of stream between frames.
pub fn read_buffered_body<R: Read>(
    stream: &mut R,
    received: &mut Zeroizing<Vec<u8>>,
) -> Result<Option<Zeroizing<Vec<u8>>>, FrameError> {
    let Some(end) = buffer_frame(stream, received)? else { return Ok(None) };
    let body = Zeroizing::new(received[4..end].to_vec());
    received.drain(..end);
    Ok(Some(body))
}

/// Read until at least `want` bytes are buffered.
fn fill<R: Read>(stream: &mut R, received: &mut Zeroizing<Vec<u8>>, want: usize) -> Result<(), FrameError> {
    while received.len() < want {
        let have = received.len();
        let room = (want - have).max(READ_SIZE);
        if received.capacity() < have + room {
            // Grown by hand: a reallocation would free the old buffer unwiped.
            let mut bigger = Zeroizing::new(Vec::with_capacity(have + room));
            bigger.extend_from_slice(received);
            *received = bigger;
        }
        received.resize(have + room, 0);
        let read = stream.read(&mut received[have..]);
        received.truncate(have + read.as_ref().map_or(0, |n| *n));
        match read {
            Ok(0) => return Err(FrameError::Closed),
            Ok(_) => {}
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Request, RequestFrame};

    #[test]
    fn round_trip() {
        let frame = RequestFrame::new(Request::ListUsers { after: None });
        let bytes = encode(&frame).unwrap();
        assert_eq!(&bytes[..4], &((bytes.len() - 4) as u32).to_be_bytes());
        let back: RequestFrame = read_frame(&mut &bytes[..]).unwrap();
        assert_eq!(back, frame);
    }

    #[test]
    fn oversized_header_is_refused_before_allocating() {
        let bytes = u32::MAX.to_be_bytes();
        let err = read_frame::<_, RequestFrame>(&mut &bytes[..]).unwrap_err();
        assert!(matches!(err, FrameError::TooBig(u32::MAX)));
    }

    #[test]
    fn truncated_frame_is_closed() {
        let mut bytes = encode(&RequestFrame::new(Request::ListUsers { after: None })).unwrap();
        bytes.truncate(bytes.len() - 2);
        let err = read_frame::<_, RequestFrame>(&mut &bytes[..]).unwrap_err();
        assert!(matches!(err, FrameError::Closed));
    }

    #[test]
    fn malformed_json_is_reported() {
        let mut bytes = 5u32.to_be_bytes().to_vec();
        bytes.extend_from_slice(b"{nope");
        let err = read_frame::<_, RequestFrame>(&mut &bytes[..]).unwrap_err();
        assert!(matches!(err, FrameError::Malformed(_)));
    }

    #[test]
    fn buffered_bodies_end_cleanly_only_between_frames() {
        let frame = encode(&RequestFrame::new(Request::ListUsers { after: None })).unwrap();
        let two = [frame.clone(), frame.clone()].concat();
        let mut stream = &two[..];
        let mut received = Zeroizing::new(Vec::new());
        for _ in 0..2 {
            let body = read_buffered_body(&mut stream, &mut received).unwrap().unwrap();
            assert_eq!(&body[..], &frame[4..]);
        }
        assert!(read_buffered_body(&mut stream, &mut received).unwrap().is_none());
        let cut = &frame[..frame.len() - 1];
        let err = read_buffered_body(&mut &cut[..], &mut Zeroizing::new(Vec::new())).unwrap_err();
        assert!(matches!(err, FrameError::Closed), "{err:?}");
    }

    #[test]
    fn waiting_to_read_ends_with_data_an_end_of_stream_or_the_timeout() {
        use std::os::fd::AsFd;
        use std::os::unix::net::UnixStream;
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        assert!(!wait_readable(ours.as_fd(), Duration::from_millis(20)).unwrap());
        theirs.write_all(b"x").unwrap();
        assert!(wait_readable(ours.as_fd(), Duration::from_secs(10)).unwrap());
        let (ours, theirs) = UnixStream::pair().unwrap();
        drop(theirs);
        assert!(wait_readable(ours.as_fd(), Duration::from_secs(10)).unwrap());
    }
}
