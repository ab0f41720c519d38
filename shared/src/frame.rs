//! Framing: a 4-byte big-endian length, then that many bytes of JSON.
//!
//! The length is checked against [`MAX_FRAME`] before anything is allocated,
//! and bodies are read with `read_exact`, so a hostile or broken peer can
//! neither make us allocate gigabytes nor spin on a half-closed socket.

use std::io::{self, Read, Write};

use serde::Serialize;
use serde::de::DeserializeOwned;

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

/// Read one frame's body, as the daemon does (it decodes in steps: the
/// version first). `Ok(None)` is a clean end of stream between frames.
pub fn read_body<R: Read>(reader: &mut R) -> Result<Option<Vec<u8>>, FrameError> {
    let mut header = [0u8; 4];
    match reader.read_exact(&mut header) {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(err) => return Err(err.into()),
    }
    let mut body = vec![0u8; body_len(header)?];
    reader.read_exact(&mut body)?;
    Ok(Some(body))
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
}
