//! QR codes for enrollment, drawn in a terminal with Unicode half blocks.
//!
//! Convention: DARK modules are drawn (as '█', '▀', '▄') and LIGHT modules
//! are blank (' '), so the code scans as printed on a dark-on-light terminal
//! (dark text on a light background), whose background then also forms the
//! quiet zone. On a light-on-dark terminal the code comes out inverted.

use qrcode::{Color, QrCode};

/// Light modules around the code on every side (the bottom gets one more
/// when needed to fill the last half-block line).
pub const QUIET_ZONE: usize = 2;

#[derive(Debug, thiserror::Error)]
pub enum QrError {
    #[error("too much data for a QR code")]
    DataTooLong,
    #[error("cannot encode as a QR code: {0}")]
    Encode(qrcode::types::QrError),
}

/// The modules of `data`'s QR code, row by row; true = dark. No quiet zone.
pub fn matrix(data: &str) -> Result<Vec<Vec<bool>>, QrError> {
    let code = QrCode::new(data.as_bytes()).map_err(|e| match e {
        qrcode::types::QrError::DataTooLong => QrError::DataTooLong,
        other => QrError::Encode(other),
    })?;
    let width = code.width();
    let colors = code.to_colors();
    Ok(colors.chunks(width).map(|row| row.iter().map(|c| *c == Color::Dark).collect()).collect())
}

/// The QR code of `data` as text: two module rows per line, dark modules
/// drawn, light ones blank, with a quiet zone of at least `QUIET_ZONE`.
/// Every line has the same width (trailing blanks are the right quiet zone).
pub fn render_terminal(data: &str) -> Result<String, QrError> {
    let m = matrix(data)?;
    let size = m.len();
    let width = size + 2 * QUIET_ZONE;
    // Pad the bottom so the row count is even; QR sizes are odd, so this adds one.
    let mut height = size + 2 * QUIET_ZONE;
    height += height % 2;
    let dark = |row: usize, col: usize| -> bool {
        row.checked_sub(QUIET_ZONE)
            .zip(col.checked_sub(QUIET_ZONE))
            .and_then(|(r, c)| m.get(r)?.get(c).copied())
            .unwrap_or(false)
    };
    let mut out = String::with_capacity((width * 3 + 1) * height / 2);
    for row in (0..height).step_by(2) {
        for col in 0..width {
            out.push(match (dark(row, col), dark(row + 1, col)) {
                (true, true) => '█',
                (true, false) => '▀',
                (false, true) => '▄',
                (false, false) => ' ',
            });
        }
        out.push('\n');
    }
    Ok(out)
}

/// Exact inverse of `render_terminal`, quiet zone included: two rows of
/// modules per line, true = dark. Lines shorter than the longest (for
/// instance with trailing blanks trimmed) are padded with light modules.
pub fn parse_terminal(text: &str) -> Vec<Vec<bool>> {
    let width = text.lines().map(|l| l.chars().count()).max().unwrap_or(0);
    let mut rows = Vec::new();
    for line in text.lines() {
        let mut top = vec![false; width];
        let mut bottom = vec![false; width];
        for (col, ch) in line.chars().enumerate() {
            let (t, b) = match ch {
                '█' => (true, true),
                '▀' => (true, false),
                '▄' => (false, true),
                _ => (false, false),
            };
            top[col] = t;
            bottom[col] = b;
        }
        rows.push(top);
        rows.push(bottom);
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otp::{OtpParams, otpauth_uri};
    use std::process::Command;

    /// Writes `modules` as a PNG, each module 4x4 pixels, black dark / white light.
    fn write_png(path: &std::path::Path, modules: &[Vec<bool>]) {
        const SCALE: usize = 4;
        let h = modules.len() * SCALE;
        let w = modules[0].len() * SCALE;
        let mut pixels = Vec::with_capacity(w * h);
        for row in modules {
            for _ in 0..SCALE {
                for &dark in row {
                    pixels.extend(std::iter::repeat_n(if dark { 0u8 } else { 255u8 }, SCALE));
                }
            }
        }
        let file = std::fs::File::create(path).unwrap();
        let mut enc = png::Encoder::new(std::io::BufWriter::new(file), w as u32, h as u32);
        enc.set_color(png::ColorType::Grayscale);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc.write_header().unwrap();
        writer.write_image_data(&pixels).unwrap();
        writer.finish().unwrap();
    }

    fn uri() -> String {
        otpauth_uri("ACME Corp", "alice@host", "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP", &OtpParams::default(), 0)
    }

    #[test]
    fn terminal_rendering_scans_with_zbarimg() {
        let uri = uri();
        let text = render_terminal(&uri).unwrap();
        let path = std::env::temp_dir().join(format!("mfa-shared-qr-{}.png", std::process::id()));
        write_png(&path, &parse_terminal(&text));
        // Fails (never skips) when zbarimg is missing.
        let out = Command::new("zbarimg")
            .args(["--nodbus", "-q", "--raw"])
            .arg(&path)
            .output()
            .expect("zbarimg must be installed (apt package zbar-tools)");
        let _ = std::fs::remove_file(&path);
        assert!(out.status.success(), "zbarimg: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8(out.stdout).unwrap().trim_end_matches('\n'), uri);
    }

    #[test]
    fn parse_is_inverse_of_render() {
        let uri = uri();
        let m = matrix(&uri).unwrap();
        let n = m.len();
        assert!(n >= 21 && n % 2 == 1);
        assert!(m.iter().all(|r| r.len() == n));
        let text = render_terminal(&uri).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines.iter().all(|l| l.chars().count() == n + 2 * QUIET_ZONE));
        let parsed = parse_terminal(&text);
        // Quiet zone QUIET_ZONE on top/left/right, QUIET_ZONE + 1 at the bottom (odd size).
        assert_eq!(parsed.len(), n + 2 * QUIET_ZONE + 1);
        assert_eq!(parsed.len(), 2 * lines.len());
        for (r, row) in parsed.iter().enumerate() {
            assert_eq!(row.len(), n + 2 * QUIET_ZONE);
            for (c, &dark) in row.iter().enumerate() {
                let inside = (QUIET_ZONE..QUIET_ZONE + n).contains(&r) && (QUIET_ZONE..QUIET_ZONE + n).contains(&c);
                let want = inside && m[r - QUIET_ZONE][c - QUIET_ZONE];
                assert_eq!(dark, want, "module ({r},{c})");
            }
        }
    }

    #[test]
    fn too_long() {
        assert!(matches!(matrix(&"x".repeat(5000)), Err(QrError::DataTooLong)));
        assert!(render_terminal(&"x".repeat(5000)).is_err());
    }
}
