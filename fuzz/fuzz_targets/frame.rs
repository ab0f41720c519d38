//! Every byte a local user can send to mfad's socket. The input is a
//! connection's byte stream; it is read as mfad's `serve_connection` reads
//! it (`frame::read_buffered_body`, frame after frame, the size
//! cap checked before allocating) and each body goes through mfad's own
//! `server::request_of` (the `RequestFrame`, its version checked). The
//! same bytes also go to the blocking `frame::read_frame`, and to the
//! client's buffered reader (`client::read_buffered_frame`, as pam_mfa and
//! mfactl read replies, frame after frame). No panic, and:
//! - a body read is never longer than `MAX_FRAME`, and only a header
//!   announcing more than `MAX_FRAME` is refused as too big;
//! - an accepted request has the protocol's version, and encodes and
//!   decodes back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mfa_shared::client::read_buffered_frame;
use mfa_shared::frame::{self, FrameError, MAX_FRAME};
use mfa_shared::protocol::{RequestFrame, ResponseFrame};

fuzz_target!(|data: &[u8]| {
    // The client (pam_mfa, mfactl) reading one frame.
    let _ = frame::read_frame::<_, ResponseFrame>(&mut &data[..]);
    match frame::read_frame::<_, RequestFrame>(&mut &data[..]) {
        Err(FrameError::TooBig(len)) => assert!(len > MAX_FRAME),
        Err(FrameError::TimedOut | FrameError::Io(_)) => panic!("a byte slice cannot time out or fail"),
        Ok(_) | Err(FrameError::Closed | FrameError::Malformed(_)) => {}
    }

    // The client reading replies from one buffer: what a read brings past a
    // frame is kept for the next.
    let mut replies = data;
    let mut received = Default::default();
    loop {
        match read_buffered_frame::<_, ResponseFrame>(&mut replies, &mut received) {
            Ok(_) | Err(FrameError::Malformed(_)) => {}
            Err(FrameError::TooBig(len)) => {
                assert!(len > MAX_FRAME, "a frame of {len} bytes refused");
                break;
            }
            Err(FrameError::Closed) => break,
            Err(other) => panic!("reading a byte slice failed: {other}"),
        }
    }

    // mfad serving one connection: frames until the stream ends or fails.
    let mut stream = data;
    let mut received = Default::default();
    loop {
        let body = match frame::read_buffered_body(&mut stream, &mut received) {
            Ok(Some(body)) => body,
            Ok(None) | Err(FrameError::Closed) => break,
            Err(FrameError::TooBig(len)) => {
                assert!(len > MAX_FRAME, "a frame of {len} bytes refused");
                break;
            }
            Err(other) => panic!("reading a byte slice failed: {other}"),
        };
        assert!(body.len() <= MAX_FRAME as usize, "a body of {} bytes was read", body.len());
        if let Ok(request) = mfad::server::request_of(&body) {
            let _ = request.kind();
            // What mfad accepts, a client can send: it encodes and reads back unchanged.
            let frame = RequestFrame::new(request);
            let bytes = frame::encode(&frame).expect("an accepted request encodes");
            let back: RequestFrame = frame::read_frame(&mut &bytes[..]).expect("an encoded request decodes");
            assert_eq!(back, frame, "a request changed in a round trip");
        }
    }
});
