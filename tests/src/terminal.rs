//! Text as a terminal shows it: each character cell painted in the
//! terminal's colours (a glyph's blocks in the foreground colour, the rest
//! in the background colour, ANSI colours where the text sets them), written
//! as a PNG and read with the real `zbarimg`, which does not try inverted
//! images, as many phone scanners do not.

use std::path::Path;
use std::process::Command;

use crate::{run, stderr, stdout};

/// A terminal's default colours, as grey levels (0 black, 255 white).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Theme {
    pub name: &'static str,
    pub fg: u8,
    pub bg: u8,
}

/// Light grey text on a near-black background (most terminal themes).
pub const DARK_TERMINAL: Theme = Theme { name: "dark terminal", fg: 0xd3, bg: 0x1e };
/// Dark grey text on a near-white background.
pub const LIGHT_TERMINAL: Theme = Theme { name: "light terminal", fg: 0x24, bg: 0xfa };

/// Pixels of one character cell: a half block is square, as in a terminal
/// font about twice as high as wide.
const CELL_WIDTH: usize = 4;
const HALF_HEIGHT: usize = 4;
/// Cells of the terminal's background around the text (the rest of the screen).
const MARGIN: usize = 4;

/// The lines of the QR code in a set-up text: those between "Scan this QR
/// code..." and "Or open this URI...", less the empty line on each side.
/// Carriage returns (a terminal's line ends) are dropped.
pub fn qr_drawing(shown: &str) -> String {
    let lines: Vec<&str> = shown.lines().map(|l| l.trim_end_matches('\r')).collect();
    let start = lines.iter().position(|l| l.contains("Scan this QR code")).expect("no 'Scan this QR code' line");
    let end = lines.iter().position(|l| l.contains("Or open this URI")).expect("no 'Or open this URI' line");
    let mut drawing = &lines[start + 1..end];
    if drawing.first() == Some(&"") {
        drawing = &drawing[1..];
    }
    if drawing.last() == Some(&"") {
        drawing = &drawing[..drawing.len() - 1];
    }
    assert!(drawing.len() > 10, "no QR code between the lines: {shown}");
    drawing.join("\n") + "\n"
}

/// What a cell's foreground and background are, as SGR sequences set them.
#[derive(Debug, Clone, Copy)]
struct Pen {
    fg: u8,
    bg: u8,
}

/// Grey level of an ANSI colour (xterm's palette: 30-37 / 40-47 and the
/// bright 90-97 / 100-107); the colours other than black and white are
/// never used by what is tested here.
fn ansi_grey(index: u32) -> u8 {
    match index {
        0 => 0x00,
        7 => 0xe5,
        8 => 0x7f,
        15 => 0xff,
        other => panic!("ANSI colour {other} is not expected in a QR code"),
    }
}

/// Apply the parameters of one SGR sequence (`ESC [ params m`).
fn apply_sgr(pen: &mut Pen, params: &str, theme: Theme) {
    for param in params.split(';') {
        let n: u32 = if param.is_empty() { 0 } else { param.parse().expect("an SGR parameter") };
        match n {
            0 => *pen = Pen { fg: theme.fg, bg: theme.bg },
            39 => pen.fg = theme.fg,
            49 => pen.bg = theme.bg,
            30..=37 => pen.fg = ansi_grey(n - 30),
            40..=47 => pen.bg = ansi_grey(n - 40),
            90..=97 => pen.fg = ansi_grey(n - 90 + 8),
            100..=107 => pen.bg = ansi_grey(n - 100 + 8),
            other => panic!("SGR {other} is not expected in a QR code"),
        }
    }
}

/// Each line's cells as (top half, bottom half) grey levels.
fn cells(text: &str, theme: Theme) -> Vec<Vec<(u8, u8)>> {
    let mut pen = Pen { fg: theme.fg, bg: theme.bg };
    let mut rows = Vec::new();
    for line in text.lines() {
        let mut row = Vec::new();
        let mut chars = line.chars();
        while let Some(ch) = chars.next() {
            let (top, bottom) = match ch {
                '\u{1b}' => {
                    assert_eq!(chars.next(), Some('['), "only CSI sequences are expected: {line:?}");
                    let params: String = chars.by_ref().take_while(|&c| c != 'm').collect();
                    apply_sgr(&mut pen, &params, theme);
                    continue;
                }
                '█' => (pen.fg, pen.fg),
                '▀' => (pen.fg, pen.bg),
                '▄' => (pen.bg, pen.fg),
                ' ' => (pen.bg, pen.bg),
                other => panic!("{other:?} is not part of a QR drawing: {line:?}"),
            };
            row.push((top, bottom));
        }
        rows.push(row);
    }
    rows
}

/// Paint `text` as a terminal with `theme` shows it and write it as a PNG.
pub fn paint_png(text: &str, theme: Theme, path: &Path) {
    let cells = cells(text, theme);
    let columns = cells.iter().map(Vec::len).max().unwrap_or(0) + 2 * MARGIN;
    let (width, height) = (columns * CELL_WIDTH, (cells.len() + 2 * MARGIN) * 2 * HALF_HEIGHT);
    let mut pixels = vec![theme.bg; width * height];
    for (line, row) in cells.iter().enumerate() {
        for (col, &(top, bottom)) in row.iter().enumerate() {
            for (half, grey) in [(0, top), (1, bottom)] {
                let y0 = ((line + MARGIN) * 2 + half) * HALF_HEIGHT;
                for y in y0..y0 + HALF_HEIGHT {
                    let x0 = (col + MARGIN) * CELL_WIDTH;
                    pixels[y * width + x0..y * width + x0 + CELL_WIDTH].fill(grey);
                }
            }
        }
    }
    let file = std::fs::File::create(path).unwrap();
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), width as u32, height as u32);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().unwrap();
    writer.write_image_data(&pixels).unwrap();
    writer.finish().unwrap();
}

/// What `zbarimg` reads in `text` as a terminal with `theme` shows it: the
/// decoded text, or None when it finds no code (its exit status 4; any
/// other failure, such as zbarimg missing, fails the test).
pub fn scan_as_shown(text: &str, theme: Theme, dir: &Path) -> Option<String> {
    let path = dir.join(format!("qr-{}.png", theme.name.replace(' ', "-")));
    paint_png(text, theme, &path);
    let out = run(Command::new("zbarimg").args(["--nodbus", "-q", "--raw"]).arg(&path));
    match out.status.code() {
        Some(0) => Some(stdout(&out).trim_end_matches('\n').to_string()),
        Some(4) => None,
        other => panic!("zbarimg failed ({other:?}; is zbar-tools installed?): {}", stderr(&out)),
    }
}
