//! Reading plaintext into memory that is wiped when dropped.
//!
//! A growing `Vec` reallocates and leaves the old copy behind in freed memory; these
//! helpers grow by moving into a fresh [`Zeroizing`] buffer, so every copy is wiped.

use std::io::{self, Read};
use std::path::Path;

use zeroize::Zeroizing;

/// Reads everything from `reader` into a wiped-on-drop buffer.
pub fn read_all(mut reader: impl Read, size_hint: usize) -> io::Result<Zeroizing<Vec<u8>>> {
    let mut buf = Zeroizing::new(vec![0u8; size_hint.max(4096)]);
    let mut len = 0;
    loop {
        if len == buf.len() {
            let mut bigger = Zeroizing::new(vec![0u8; buf.len() * 2]);
            bigger[..len].copy_from_slice(&buf[..len]);
            buf = bigger;
        }
        match reader.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    buf.truncate(len);
    Ok(buf)
}

/// Reads a whole file into a wiped-on-drop buffer.
pub fn read_file(path: &Path) -> io::Result<Zeroizing<Vec<u8>>> {
    let file = std::fs::File::open(path)?;
    let hint = file.metadata().map(|m| m.len() as usize + 1).unwrap_or(0);
    read_all(file, hint)
}

#[cfg(test)]
mod tests {
    #[test]
    fn grows_past_the_hint() {
        let data: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        let got = super::read_all(&data[..], 1).unwrap();
        assert_eq!(&got[..], &data[..]);
    }
}
