//! The connection's buffers: bytes read and not used yet, grown to a cap.

use std::io;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Request bodies up to this size are read whole before the request goes out (so a connect failure can send them
/// again elsewhere, and a backend that answers early can never stall the upload); larger ones stream through hyper.
pub const MAX_BUFFERED_BODY: u64 = 64 * 1024;
pub(super) const MAX_HEADERS: usize = 100;
/// Backend reads: a response head and what of the body comes with it, then the body in pieces of this size.
pub(super) const BACKEND_BUF: usize = 16 * 1024;
pub(super) const CLIENT_BUF: usize = 4 * 1024;
/// The client's buffer grows to this for a body (heads stay within the header limit).
pub(super) const BODY_BUF: usize = 64 * 1024;

pub(super) async fn write<S: AsyncWrite + Unpin>(io: &mut S, bytes: &[u8]) -> io::Result<()> {
    io.write_all(bytes).await?;
    io.flush().await
}

/// Bytes read and not used yet.
pub(super) struct Buf {
    data: Vec<u8>,
    start: usize,
    end: usize,
}

impl Buf {
    pub(super) fn new() -> Buf {
        Buf {
            data: Vec::new(),
            start: 0,
            end: 0,
        }
    }

    pub(super) fn bytes(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    pub(super) fn len(&self) -> usize {
        self.end - self.start
    }

    pub(super) fn is_empty(&self) -> bool {
        self.start == self.end
    }

    pub(super) fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start >= self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    pub(super) fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
    }

    /// Reads once more (0 at the end of the stream), making room first: unread bytes move to the front, and the
    /// buffer grows up to `max` (from `initial` the first time).
    pub(super) async fn fill<R: AsyncRead + Unpin>(
        &mut self,
        r: &mut R,
        initial: usize,
        max: usize,
    ) -> io::Result<usize> {
        if self.end == self.data.len() {
            if self.start > 0 {
                self.data.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else if self.data.len() < max {
                // Not `clamp`: a `--max-header-size` below `initial` must cap the buffer, not panic.
                let grown = (self.data.len() * 2).max(initial).min(max);
                self.data.resize(grown, 0);
            } else {
                return Err(io::Error::other("buffer full"));
            }
        }
        let n = r.read(&mut self.data[self.end..]).await?;
        self.end += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A limit below the first allocation caps the buffer there: reads stop at `max`, then "buffer full".
    #[tokio::test]
    async fn a_buffer_limit_below_the_initial_size_caps_it() {
        let mut buf = Buf::new();
        let mut input = &[b'x'; 3000][..];
        let mut read = 0;
        loop {
            match buf.fill(&mut input, 4096, 2048).await {
                Ok(n) => read += n,
                Err(e) => {
                    assert_eq!(e.to_string(), "buffer full");
                    break;
                }
            }
        }
        assert_eq!((read, buf.bytes().len()), (2048, 2048));
    }
}
