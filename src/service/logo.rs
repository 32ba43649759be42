//! The local logo check: IO wants the service and organization logos as 300×300 PNG images
//! (guide §4.1, §4.4.7). [`read_logo`] reads a file and decodes it whole with the `png` crate
//! before anything is uploaded, so a wrong file is refused here with its name and actual size.

use std::path::{Path, PathBuf};

/// Width and height IO wants, in pixels.
pub const LOGO_SIDE: u32 = 300;

/// Largest logo file read (a 300×300 PNG is far smaller; this only bounds memory).
pub const LOGO_MAX_BYTES: u64 = 5 * 1024 * 1024;

const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

/// Why a logo is refused before upload.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogoError {
    /// The file cannot be read.
    #[error("cannot read logo {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Not a PNG image (or a damaged one).
    #[error("logo {} is not a PNG image ({reason}); IO wants a {LOGO_SIDE}×{LOGO_SIDE} PNG", path.display())]
    NotPng {
        /// The file.
        path: PathBuf,
        /// What it looks like, or what failed.
        reason: String,
    },
    /// A PNG of the wrong size.
    #[error("logo {} is {width}×{height} pixels; IO wants exactly {LOGO_SIDE}×{LOGO_SIDE}", path.display())]
    WrongSize {
        /// The file.
        path: PathBuf,
        /// Actual width.
        width: u32,
        /// Actual height.
        height: u32,
    },
}

/// What the bytes are when they are not a PNG.
fn sniff(bytes: &[u8]) -> &'static str {
    if bytes.is_empty() {
        "the file is empty"
    } else if bytes.starts_with(b"\xFF\xD8\xFF") {
        "it looks like a JPEG"
    } else if bytes.starts_with(b"GIF8") {
        "it looks like a GIF"
    } else if bytes.starts_with(b"RIFF") && bytes.get(8..12) == Some(b"WEBP") {
        "it looks like a WebP"
    } else if bytes.starts_with(b"<svg") || bytes.starts_with(b"<?xml") {
        "it looks like SVG/XML"
    } else {
        "no PNG signature"
    }
}

/// Checks PNG bytes: signature, a full decode, and the size. `path` names the file in errors.
pub fn check_png(path: &Path, bytes: &[u8]) -> Result<(), LogoError> {
    let not_png = |reason: String| LogoError::NotPng {
        path: path.to_owned(),
        reason,
    };
    if !bytes.starts_with(PNG_SIGNATURE) {
        return Err(not_png(sniff(bytes).to_owned()));
    }
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let mut reader = decoder
        .read_info()
        .map_err(|e| not_png(format!("unreadable header: {e}")))?;
    let (width, height) = {
        let info = reader.info();
        (info.width, info.height)
    };
    if (width, height) != (LOGO_SIDE, LOGO_SIDE) {
        return Err(LogoError::WrongSize {
            path: path.to_owned(),
            width,
            height,
        });
    }
    // Decode the image data too: a truncated or damaged file would be refused by IO later.
    let mut buf = vec![0; reader.output_buffer_size()];
    reader
        .next_frame(&mut buf)
        .map_err(|e| not_png(format!("damaged image data: {e}")))?;
    Ok(())
}

/// Reads a logo file and checks it; returns its bytes for the upload.
pub fn read_logo(path: &Path) -> Result<Vec<u8>, LogoError> {
    let read_err = |source| LogoError::Read {
        path: path.to_owned(),
        source,
    };
    let len = std::fs::metadata(path).map_err(read_err)?.len();
    if len > LOGO_MAX_BYTES {
        return Err(LogoError::NotPng {
            path: path.to_owned(),
            reason: format!("{len} bytes, more than a logo needs ({LOGO_MAX_BYTES} at most)"),
        });
    }
    let bytes = std::fs::read(path).map_err(read_err)?;
    check_png(path, &bytes)?;
    Ok(bytes)
}

/// A PNG of `width`×`height` white RGBA pixels (tests, and the README's demo).
pub fn blank_png(width: u32, height: u32) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, width, height);
        encoder.set_color(png::ColorType::Rgba);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder
            .write_header()
            .expect("writing to a Vec cannot fail");
        let data = vec![0xFF; (width as usize) * (height as usize) * 4];
        writer
            .write_image_data(&data)
            .expect("the buffer has the declared size");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_300_square_png_passes() {
        check_png(Path::new("logo.png"), &blank_png(300, 300)).unwrap();
    }

    #[test]
    fn the_wrong_size_is_refused_with_the_actual_size() {
        let e = check_png(Path::new("small.png"), &blank_png(120, 80)).unwrap_err();
        let text = e.to_string();
        assert!(matches!(
            e,
            LogoError::WrongSize {
                width: 120,
                height: 80,
                ..
            }
        ));
        assert!(
            text.contains("small.png") && text.contains("120×80"),
            "{text}"
        );
    }

    #[test]
    fn not_a_png_is_refused_and_named() {
        let e = check_png(Path::new("logo.jpg"), b"\xFF\xD8\xFF\xE0rest").unwrap_err();
        assert!(e.to_string().contains("logo.jpg"));
        assert!(e.to_string().contains("JPEG"));
        let e = check_png(Path::new("empty.png"), b"").unwrap_err();
        assert!(e.to_string().contains("empty"));
    }

    #[test]
    fn a_truncated_png_is_refused() {
        let png = blank_png(300, 300);
        let e = check_png(Path::new("cut.png"), &png[..png.len() / 2]).unwrap_err();
        assert!(matches!(e, LogoError::NotPng { .. }), "{e}");
    }

    #[test]
    fn read_logo_names_a_missing_file() {
        let e = read_logo(Path::new("/nonexistent/logo.png")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/logo.png"));
    }
}
