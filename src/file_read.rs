//! Reads the files an operator or an app names and the server reads whole: configurations,
//! certificates, app sources. Regular files only, of a bounded size: a FIFO put in a file's
//! place blocked an operator trial's reload for good (and `--check-config` for ever, and a
//! Lua instance's start until its timeout, its thread left behind), and a 512 MB file took
//! the server's memory to half a gigabyte before it failed at column 1.
//!
//! The file is opened without blocking and its type checked on the open descriptor (no
//! window for another file to take its place between the check and the read).

use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The most a configuration file or certificate may hold.
pub const CONFIG_MAX: u64 = 16 << 20;
/// The most an app's Lua source may hold (a state holds 64 MiB by default).
pub const SOURCE_MAX: u64 = 64 << 20;

/// The bytes of the regular file at `path`, at most `max` of them; a FIFO, a device, a
/// directory or a larger file is an error that says so.
pub fn read_regular(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    // O_NONBLOCK: opening a FIFO does not wait for a writer (for a regular file it changes
    // nothing).
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file (a FIFO or a device could block the server or never end)",
        ));
    }
    let too_large = |len: u64| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{len} bytes or more, past the {max} bytes such a file may hold"),
        )
    };
    if meta.len() > max {
        return Err(too_large(meta.len()));
    }
    let mut out = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    // It may grow while it is read: never past the bound.
    file.take(max.saturating_add(1)).read_to_end(&mut out)?;
    if out.len() as u64 > max {
        return Err(too_large(out.len() as u64));
    }
    Ok(out)
}

/// [`read_regular`] as UTF-8 text.
pub fn read_regular_text(path: &Path, max: u64) -> io::Result<String> {
    String::from_utf8(read_regular(path, max)?).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "stream did not contain valid UTF-8",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("lapps-file-read-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_regular_file_within_the_bound_is_read() {
        let d = dir("ok");
        let f = d.join("a.json");
        std::fs::write(&f, "{}").unwrap();
        assert_eq!(read_regular(&f, 2).unwrap(), b"{}");
        assert_eq!(read_regular_text(&f, 2).unwrap(), "{}");
        let e = read_regular(&f, 1).unwrap_err();
        assert!(
            e.to_string()
                .contains("2 bytes or more, past the 1 bytes such a file may hold"),
            "{e}"
        );
        std::fs::write(&f, b"\xff").unwrap();
        assert!(read_regular_text(&f, 2).is_err());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_fifo_or_a_directory_is_refused_at_once() {
        let d = dir("fifo");
        let fifo = d.join("lapps.json");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: mkfifo(3) with a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        // Without O_NONBLOCK the open would wait for a writer: this test would hang.
        let e = read_regular(&fifo, CONFIG_MAX).unwrap_err();
        assert!(e.to_string().starts_with("not a regular file"), "{e}");
        let e = read_regular(&d, CONFIG_MAX).unwrap_err();
        assert!(e.to_string().starts_with("not a regular file"), "{e}");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_file_past_the_bound_is_refused_before_it_is_read() {
        let d = dir("large");
        let f = d.join("big.json");
        // Sparse: a size, no data written.
        std::fs::File::create(&f)
            .unwrap()
            .set_len(CONFIG_MAX + 1)
            .unwrap();
        let e = read_regular(&f, CONFIG_MAX).unwrap_err();
        assert!(e.to_string().contains("past the 16777216 bytes"), "{e}");
        let _ = std::fs::remove_dir_all(&d);
    }
}
