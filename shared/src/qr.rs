//! QR codes for enrollment, drawn in a terminal with Unicode half blocks.
//!
//! A terminal draws a block glyph ('█', '▀', '▄') in its foreground colour
//! and a blank (' ') in its background colour, and scanners (zbar, many
//! ZXing-based apps) read only dark modules on a light ground, not the
//! inverse. So the drawing depends on the terminal's background:
//!
//! - [`Background::Dark`] (light text on a dark background, the common
//!   case): the LIGHT modules and the quiet zone are drawn, dark modules are
//!   blank, as `qrencode -t UTF8` does.
//! - [`Background::Light`] (dark text on a light background): the DARK
//!   modules are drawn; light modules and the quiet zone are blank.
//!
//! [`render_black_on_white`] does not depend on the theme: it sets the
//! colours with ANSI escape sequences, for a program writing to a terminal
//! (not inside a PAM conversation: OpenSSH's client prints escape sequences
//! of keyboard-interactive messages literally).

use qrcode::{Color, QrCode};

/// Light modules around the code on every side (the bottom gets one more
/// when needed to fill the last half-block line).
pub const QUIET_ZONE: usize = 2;

/// ANSI: black foreground on a white background, then back to the defaults.
pub const BLACK_ON_WHITE: &str = "\x1b[30;47m";
pub const RESET: &str = "\x1b[0m";

/// The background of the terminal a QR code is drawn for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Background {
    /// Light text on a dark background: light modules are drawn.
    #[default]
    Dark,
    /// Dark text on a light background: dark modules are drawn.
    Light,
}

#[cfg(feature = "config")]
impl From<crate::config::QrBackground> for Background {
    fn from(setting: crate::config::QrBackground) -> Self {
        match setting {
            crate::config::QrBackground::Dark => Background::Dark,
            crate::config::QrBackground::Light => Background::Light,
        }
    }
}

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

/// The QR code of `data` as text for a terminal with `background`: two
/// module rows per line, with a quiet zone of at least `QUIET_ZONE`. Every
/// line has the same width (with a light background, trailing blanks are the
/// right quiet zone).
pub fn render_terminal(data: &str, background: Background) -> Result<String, QrError> {
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
    // A module is drawn (in the foreground colour) when its shade is the
    // opposite of the background's.
    let drawn = |row: usize, col: usize| dark(row, col) == (background == Background::Light);
    let mut out = String::with_capacity((width * 3 + 1) * height / 2);
    for row in (0..height).step_by(2) {
        for col in 0..width {
            out.push(match (drawn(row, col), drawn(row + 1, col)) {
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

/// The QR code of `data` in black on white whatever the terminal's colours:
/// the drawing for a light background, each line set to a black foreground
/// on a white background and reset at its end.
pub fn render_black_on_white(data: &str) -> Result<String, QrError> {
    let text = render_terminal(data, Background::Light)?;
    Ok(text.lines().map(|line| format!("{BLACK_ON_WHITE}{line}{RESET}\n")).collect())
}

/// Exact inverse of `render_terminal` for the same `background`, quiet zone
/// included: two rows of modules per line, true = dark. Lines shorter than
/// the longest (for instance with trailing blanks trimmed) are padded with
/// blanks.
pub fn parse_terminal(text: &str, background: Background) -> Vec<Vec<bool>> {
    let width = text.lines().map(|l| l.chars().count()).max().unwrap_or(0);
    // A drawn half is a dark module on a light background, a light one on a dark.
    let dark = |drawn: bool| drawn == (background == Background::Light);
    let mut rows = Vec::new();
    for line in text.lines() {
        let mut top = vec![dark(false); width];
        let mut bottom = vec![dark(false); width];
        for (col, ch) in line.chars().enumerate() {
            let (t, b) = match ch {
                '█' => (true, true),
                '▀' => (true, false),
                '▄' => (false, true),
                _ => (false, false),
            };
            top[col] = dark(t);
            bottom[col] = dark(b);
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
        for background in [Background::Dark, Background::Light] {
            let text = render_terminal(&uri, background).unwrap();
            let path = std::env::temp_dir().join(format!("mfa-shared-qr-{}-{background:?}.png", std::process::id()));
            write_png(&path, &parse_terminal(&text, background));
            // Fails (never skips) when zbarimg is missing.
            let out = Command::new("zbarimg")
                .args(["--nodbus", "-q", "--raw"])
                .arg(&path)
                .output()
                .expect("zbarimg must be installed (apt package zbar-tools)");
            let _ = std::fs::remove_file(&path);
            assert!(out.status.success(), "{background:?}: zbarimg: {}", String::from_utf8_lossy(&out.stderr));
            assert_eq!(String::from_utf8(out.stdout).unwrap().trim_end_matches('\n'), uri);
        }
    }

    #[test]
    fn parse_is_inverse_of_render() {
        let uri = uri();
        let m = matrix(&uri).unwrap();
        let n = m.len();
        assert!(n >= 21 && n % 2 == 1);
        assert!(m.iter().all(|r| r.len() == n));
        for background in [Background::Dark, Background::Light] {
            let text = render_terminal(&uri, background).unwrap();
            let lines: Vec<&str> = text.lines().collect();
            assert!(lines.iter().all(|l| l.chars().count() == n + 2 * QUIET_ZONE));
            // The quiet zone is drawn on a dark background, blank on a light one.
            let quiet = if background == Background::Dark { '█' } else { ' ' };
            assert!(lines[0].chars().all(|c| c == quiet), "{background:?}: {}", lines[0]);
            let parsed = parse_terminal(&text, background);
            // Quiet zone QUIET_ZONE on top/left/right, QUIET_ZONE + 1 at the bottom (odd size).
            assert_eq!(parsed.len(), n + 2 * QUIET_ZONE + 1);
            assert_eq!(parsed.len(), 2 * lines.len());
            for (r, row) in parsed.iter().enumerate() {
                assert_eq!(row.len(), n + 2 * QUIET_ZONE);
                for (c, &dark) in row.iter().enumerate() {
                    let inside = (QUIET_ZONE..QUIET_ZONE + n).contains(&r) && (QUIET_ZONE..QUIET_ZONE + n).contains(&c);
                    let want = inside && m[r - QUIET_ZONE][c - QUIET_ZONE];
                    assert_eq!(dark, want, "{background:?}: module ({r},{c})");
                }
            }
        }
    }

    #[test]
    fn the_two_backgrounds_draw_each_others_blanks() {
        let uri = uri();
        let dark = render_terminal(&uri, Background::Dark).unwrap();
        let light = render_terminal(&uri, Background::Light).unwrap();
        let swap = |c: char| match c {
            '█' => ' ',
            ' ' => '█',
            '▀' => '▄',
            '▄' => '▀',
            other => other,
        };
        assert_eq!(dark.chars().map(swap).collect::<String>(), light);
    }

    #[test]
    fn black_on_white_sets_and_resets_the_colours_on_every_line() {
        let uri = uri();
        let coloured = render_black_on_white(&uri).unwrap();
        let plain = render_terminal(&uri, Background::Light).unwrap();
        assert_eq!(coloured.lines().count(), plain.lines().count());
        for (c, p) in coloured.lines().zip(plain.lines()) {
            assert_eq!(c, format!("\x1b[30;47m{p}\x1b[0m"));
        }
        assert!(coloured.ends_with("\x1b[0m\n"));
    }

    #[test]
    fn too_long() {
        assert!(matches!(matrix(&"x".repeat(5000)), Err(QrError::DataTooLong)));
        assert!(render_terminal(&"x".repeat(5000), Background::Dark).is_err());
        assert!(render_black_on_white(&"x".repeat(5000)).is_err());
    }
}
